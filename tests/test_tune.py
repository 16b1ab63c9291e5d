"""`textfit tune`: Optuna trials as run folders, a resumable SQLite study, the best config as YAML."""

from __future__ import annotations

import sqlite3

import pytest
import yaml

from conftest import make_rows, run_cli, write_csv


def test_tune_runs_trials_continues_the_study_and_writes_a_config_train_takes(tiny_model, tmp_path):
    data = write_csv(tmp_path / "r.csv", make_rows(80))
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {low: 0.001, high: 0.05, log: true}\nepochs: [1, 2]\n")
    args = [
        "tune",
        "--data",
        str(data),
        "--model",
        tiny_model,
        "--precision",
        "fp32",
        "--batch-size",
        "8",
        "--eval-steps",
        "2",
        "--tune-space",
        str(space),
        "--output",
        str(tmp_path / "search"),
    ]
    r = run_cli(*args, "--trials", "4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    search = tmp_path / "search"
    with sqlite3.connect(search / "study.db") as db:
        states = [s for (s,) in db.execute("select state from trials")]
    assert len(states) == 4 and set(states) <= {"COMPLETE", "PRUNED"}
    assert (search / "trials.csv").is_file() and (search / "optimization_history.png").is_file()
    assert all((search / f"trial-{i}" / "textfit.json").is_file() for i, s in enumerate(states) if s == "COMPLETE")
    best = yaml.safe_load((search / "best_config.yaml").read_text())
    assert {"learning_rate", "epochs"} <= set(best) and best["model"] == tiny_model
    r = run_cli("train", "--config", str(search / "best_config.yaml"), "--output", str(tmp_path / "best"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli(*args, "--trials", "5", cwd=tmp_path)  # the same folder: the study goes on
    assert r.returncode == 0, r.stderr[-2000:]
    with sqlite3.connect(search / "study.db") as db:
        assert db.execute("select count(*) from trials").fetchone()[0] == 5


@pytest.mark.parametrize(
    "text, match",
    [
        ("epochs: many\n", "needs a list of choices"),
        ("output: x\n", "not a train option that can be searched"),
        ("learning_rate: {low: 1, high: 0.1}\n", "low < high"),
    ],
)
def test_bad_search_spaces_are_one_line(tmp_path, text, match):
    space = tmp_path / "s.yaml"
    space.write_text(text)
    write_csv(tmp_path / "x.csv", make_rows(20))  # the data is there: the space is what is wrong
    r = run_cli("tune", "--data", "x.csv", "--tune-space", str(space), cwd=tmp_path)
    assert r.returncode == 2 and match in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("task, metric, direction", [("regression", "mse", "minimize"), ("multi-label", "f1_micro", "maximize")])
def test_the_search_optimises_the_metric_of_the_task_the_data_has(tiny_model, tmp_path, task, metric, direction):
    """--task auto: the task is detected from the data before the study is made (a regression search used to take
    accuracy and end in a KeyError)."""
    import json

    rows = make_rows(40)
    if task == "regression":
        rows = [(t, f"{0.25 + 0.5 * (y == 'positive') + 0.01 * i:.2f}") for i, (t, y) in enumerate(rows)]
    else:
        rows = [(t, json.dumps([y, "film"] if i % 3 else [y])) for i, (t, y) in enumerate(rows)]
    data = write_csv(tmp_path / "r.csv", rows)
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: [0.01]\n")
    args = ["tune", "--data", str(data), "--model", tiny_model, "--precision", "fp32", "--epochs", "1"]
    r = run_cli(*args, "--tune-space", str(space), "--trials", "1", "--output", str(tmp_path / "s"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    marker = json.loads((tmp_path / "s" / "tune.json").read_text())
    assert (marker["metric"], marker["direction"]) == (metric, direction)


def test_a_storage_that_is_not_there_is_one_line_and_leaves_no_folder(tmp_path):
    data = write_csv(tmp_path / "r.csv", make_rows(40))
    url = f"sqlite:///{tmp_path}/no/such/folder/study.db"
    r = run_cli("tune", "--data", str(data), "--storage", url, "--output", str(tmp_path / "s"), cwd=tmp_path)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "cannot open the study" in lines[0], r.stderr
    assert not (tmp_path / "s").exists()
