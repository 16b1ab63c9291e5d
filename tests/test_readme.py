"""The README's commands: its first lines are the two set-up commands, and the demo runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import ROOT


def test_readme_opens_with_the_two_setup_commands():
    head = (ROOT / "README.md").read_text().split("```")[1]
    commands = [line.split("#")[0].strip() for line in head.splitlines()[1:] if line.strip()]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci/run").read_text()
    assert "make test" in ci


def test_make_demo_runs(tmp_path):
    """`make demo` is install + demo-run; run the demo-run part with this environment."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        ["make", "-s", "demo-run", f"VENV={sys.prefix}"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "saved the run to runs/demo" in r.stdout
    holdout = re.search(r"holdout.csv \(20 rows\)\n(.*)\n(.*)\n", r.stdout)
    assert holdout, r.stdout
    table = dict(zip(holdout.group(1).split(), map(float, holdout.group(2).split())))
    assert table["accuracy"] >= 0.8, r.stdout  # the demo model really learned the reviews
    preds = [line.split("\t")[0] for line in r.stdout.splitlines() if line.startswith(("positive\t", "negative\t"))]
    assert preds == ["positive", "negative"]


def test_readme_cli_flags_exist():
    """Every --flag the README mentions is one the CLI knows."""
    from textfit.cli.parser import build_parser

    parser = build_parser()
    known = set()
    for action in parser._subparsers._group_actions[0].choices.values():
        for a in action._actions:
            known.update(a.option_strings)
    # accelerate's and torchrun's own flags use underscores (--config_file, --nproc_per_node): not ours
    mentioned = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)(?![\w])", (ROOT / "README.md").read_text()))
    others = {"--head", "--address"}  # `ray start`'s, in the commands for a Ray cluster
    assert mentioned - others <= known, mentioned - others - known
