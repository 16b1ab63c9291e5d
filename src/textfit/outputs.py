"""Every location a command will write, checked once before it does any work (issue 32).

`locations(args)` names them for each command, the defaults included (eval's RUN/eval-NAME, export's RUN/onnx,
train's runs/NAME, tune's runs/tune-NAME, inspect's report and its label-issue folds); `check(args)` runs the one
rule, `run.check_output`, on each. `cli.main` calls it before the command, so a location that cannot be written
ends the command in one line before a model loads or a row is read. The Python API (`textfit.train`, `tune`,
`cross_validate`) reaches the same rule through `train.output.output_folder`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NamedTuple

from .run import check_output


class Location(NamedTuple):
    path: Path
    flag: str  # the flag that sets it, as the message names it
    folder: bool
    fix: str = "choose another location"


def _config_output(args: argparse.Namespace, prefix: str = "") -> Location:
    from .config import FIELDS, load_config

    cfg = load_config(getattr(args, "config", None), {k: v for k, v in vars(args).items() if k in FIELDS})
    if cfg.output:
        return Location(Path(cfg.output), "--output", True)
    name = Path((cfg.data or cfg.train or "run").rstrip("/")).stem.replace(" ", "_").replace("/", "_") or "run"
    return Location(Path("runs") / f"{prefix}{name}", "the default --output", True, "pass --output FOLDER")


def _in_run(args: argparse.Namespace, default: str) -> list[Location]:
    if args.output:
        return [Location(Path(args.output), "--output", True)]
    if not Path(args.run).is_dir():
        return []  # not a run: the command's own check says so
    return [Location(Path(args.run) / default, "the default --output", True, "pass --output FOLDER")]


def locations(args: argparse.Namespace) -> list[Location]:
    command = getattr(args, "command", None)
    if command in ("train", "distill", "cv"):
        return [_config_output(args)]
    if command == "tune":
        return [_config_output(args, "tune-")]
    if command == "inspect":
        report = Location(Path(args.report), "--report", False)
        return [report, _config_output(args)] if args.label_issues else [report]
    if command == "eval":
        return _in_run(args, f"eval-{Path(args.data.rstrip('/')).stem.replace(' ', '_')}")
    if command == "export":
        return _in_run(args, "onnx")
    if command == "predict" and args.input and args.output:
        remote = args.engine == "ray" and ("://" in args.output or Path(args.output).suffix == "")
        return [] if remote else [Location(Path(args.output), "--output", False)]  # Ray's folder: its own check
    return []  # serve and push write nothing locally


def check(args: argparse.Namespace) -> None:
    """Every location `args`' command will write can be written, or a one-line UsageError naming it."""
    for loc in locations(args):
        check_output(loc.path, loc.flag, loc.folder, loc.fix)
