"""`textfit inspect` on broken copies of a data set: each problem is reported."""

from __future__ import annotations

import json

import pytest

from conftest import SHARED, make_rows, run_cli, write_csv
from textfit.config import TrainConfig
from textfit.errors import UsageError
from textfit.evaluate.inspect import format_report, inspect


def kinds(report: dict) -> dict[str, str]:
    return {p["kind"]: p["level"] for p in report["problems"]}


def test_clean_data_has_no_problems(tmp_path):
    f = write_csv(tmp_path / "r.csv", list(dict(make_rows(300, chinese=False)).items()))  # unique texts
    report = inspect(TrainConfig(data=str(f)))
    assert report["problems"] == []
    assert set(report["splits"]) == {"train", "validation", "test"}
    t = report["splits"]["train"]["tokens"]
    assert 0 < t["p50"] <= t["p95"] <= t["max"] and t["unk_rate"] < 0.05
    assert "no problems found" in format_report(report)


def test_mixed_case_labels_are_an_error_and_spaces_a_warning(tmp_path):
    rows = list(dict(make_rows(60)).items())
    rows = [(t, {"positive": "Pos", "negative": "neg"}[y]) for t, y in rows] + [
        ("lovely staff", "pos"),
        ("great room", "neg "),
    ]
    f = write_csv(tmp_path / "r.csv", rows)
    report = inspect(TrainConfig(data=str(f)))
    assert kinds(report)["labels"] == "error"
    assert any("'Pos' and 'pos' differ only by case" in p["message"] for p in report["problems"])
    assert kinds(report)["label_spaces"] == "warning"
    with pytest.raises(UsageError, match="differ only by case"):  # and train stops on it
        from textfit.data import load_data

        load_data(TrainConfig(data=str(f)))


def test_label_only_in_test_duplicates_conflicts_and_leakage(tmp_path):
    rows = list(dict(make_rows(80)).items())
    train = rows[:60] + [rows[0], (rows[1][0], "negative" if rows[1][1] == "positive" else "positive")]
    test = rows[60:] + [rows[2], ("a so-so hotel", "neutral")]
    tr, te = write_csv(tmp_path / "train.csv", train), write_csv(tmp_path / "test.csv", test)
    report = inspect(TrainConfig(train=str(tr), test=str(te)))
    k = kinds(report)
    assert (
        k["labels"] == "error"
        and k["duplicates"] == "warning"
        and k["conflicting_labels"] == "warning"
        and k["leakage"] == "warning"
    )
    msgs = " ".join(p["message"] for p in report["problems"])
    assert "label 'neutral' (line 23, 1 rows) never appears in the training data" in msgs
    assert report["splits"]["test"]["shared_with_train"] == 1
    assert report["splits"]["train"]["duplicate_rows"] == 2 and report["splits"]["train"]["conflicting_duplicates"] == 1


def test_empty_rows(tmp_path):
    rows = list(dict(make_rows(60)).items())
    f = write_csv(tmp_path / "r.csv", rows + [("", "positive"), (" ", "negative")])
    report = inspect(TrainConfig(data=str(f)))  # reported with everything else, not a stop
    assert kinds(report)["empty_text"] == "error"
    assert any("2 rows have an empty text in column 'text' (lines 62, 63)" in p["message"] for p in report["problems"])
    with pytest.raises(UsageError, match=r"2 rows have an empty text in column 'text' \(lines 62, 63\)"):
        from textfit.data import load_data

        load_data(TrainConfig(data=str(f)))  # train stops at it
    big = write_csv(tmp_path / "big.csv", list(dict(make_rows(3000)).items())[:1500] + [("", "positive")])
    report = inspect(TrainConfig(data=str(big)))
    assert kinds(report)["empty_text"] == "warning"


def test_imbalance_and_truncation(tmp_path):
    rows = list(dict(make_rows(400)).items())
    pos = [r for r in rows if r[1] == "positive"][:120]
    neg = [(r[0] + " " + " ".join(["the film was very bad"] * 80), "negative") for r in rows if r[1] == "negative"][:20]
    f = write_csv(tmp_path / "r.csv", pos + neg)
    report = inspect(TrainConfig(data=str(f), max_length=64))
    assert kinds(report)["imbalance"] == "warning" and kinds(report)["truncation"] == "warning"
    assert 0.1 < report["splits"]["train"]["tokens"]["truncated_share"] < 0.2


@pytest.mark.skipif(not (SHARED / "chnsenticorp").exists(), reason="../shared/data not present")
def test_chinese_text_with_the_english_model_warns_and_cli_writes_report(tmp_path):
    import pandas as pd

    df = pd.read_csv(SHARED / "chnsenticorp/ChnSentiCorp_htl_all.csv", header=None).dropna().sample(300, random_state=0)
    df.to_csv(tmp_path / "chn.csv", header=False, index=False)
    r = run_cli("inspect", "--data", str(tmp_path / "chn.csv"), "--report", str(tmp_path / "dr.json"))
    assert r.returncode == 0, r.stderr
    assert "[UNK]" in r.stdout and "vocabulary does not cover this text" in r.stdout
    report = json.loads((tmp_path / "dr.json").read_text())
    assert report["splits"]["train"]["tokens"]["unk_rate"] > 0.5


def test_cli_inspect_exit_1_on_errors(tmp_path):
    tr = write_csv(tmp_path / "train.csv", list(dict(make_rows(40)).items()))
    te = write_csv(tmp_path / "test.csv", [("meh", "neutral")])
    r = run_cli("inspect", "--train", str(tr), "--test", str(te), "--report", str(tmp_path / "dr.json"))
    assert r.returncode == 1 and "error: " in r.stdout and "neutral" in r.stdout


def test_every_problem_is_listed_at_once(tmp_path):
    """Empty texts, conflicting duplicates, a label that differs only by case, a label only in the test
    file and rows shared between train and test: all in one report (train stops at the first)."""
    rows = list(dict(make_rows(80, chinese=False)).items())
    train_rows = [("" if i % 10 == 0 else t, y) for i, (t, y) in enumerate(rows[:60])]
    train_rows += [("the plot was good", "positive"), ("the plot was good", "negative"), ("lovely plot", "Positive")]
    test_rows = rows[60:] + [rows[1], ("a neutral film", "neutral")]
    tr, te = write_csv(tmp_path / "tr.csv", train_rows), write_csv(tmp_path / "te.csv", test_rows)
    report = inspect(TrainConfig(train=str(tr), test=str(te)))
    found = kinds(report)
    assert found["empty_text"] == "error" and found["conflicting_labels"] == "warning" and found["leakage"] == "warning"
    messages = " | ".join(p["message"] for p in report["problems"])
    assert "differ only by case" in messages and "'neutral'" in messages and "6 rows have an empty text" in messages
    r = run_cli("inspect", "--train", str(tr), "--test", str(te), "--report", str(tmp_path / "rep.json"), cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr  # errors found: exit 1, the report written
    assert len(json.loads((tmp_path / "rep.json").read_text())["problems"]) == len(report["problems"])
