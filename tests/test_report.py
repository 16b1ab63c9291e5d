"""The evaluation report stays useful, and small, with many classes."""

from __future__ import annotations

import csv

import numpy as np

from textfit.evaluate.report import MATRIX_CLASSES, most_confused, write_report
from textfit.metrics import compute_metrics


def test_many_classes_give_a_bounded_matrix_and_pair_list(tmp_path):
    n = 3000  # one row per class, as a data set of thousands of one-row classes
    rng = np.random.default_rng(0)
    gold = np.arange(n)
    pred = np.where(rng.random(n) < 0.3, rng.integers(0, n, n), gold)
    pred[:50] = 7  # class 7 is predicted for many rows: the most confused
    probs = np.full((n, n), 0.1 / n, dtype=np.float32)
    probs[np.arange(n), pred] = 0.9
    names = [f"class {i}" for i in range(n)]
    metrics = compute_metrics(gold, pred, names)
    write_report(tmp_path, [f"text {i}" for i in range(n)], None, gold, probs, names, metrics, None, "test")
    rows = list(csv.reader(open(tmp_path / "confusion_matrix.csv", encoding="utf-8")))
    assert rows[0] == ["true", "predicted", "rows"] and len(rows) - 1 == len(set(zip(gold.tolist(), pred.tolist())))
    assert sum(int(r[2]) for r in rows[1:]) == n
    assert (tmp_path / "confusion_matrix.png").stat().st_size < 2_000_000
    assert "classes with the most errors" in (tmp_path / "report.html").read_text(encoding="utf-8")
    cm, keep = most_confused(gold, pred, n)
    assert cm.shape == (MATRIX_CLASSES, MATRIX_CLASSES) and cm.sum() == n and 7 in keep


def test_few_classes_keep_the_full_matrix(tmp_path):
    gold, pred = np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1])
    probs = np.eye(3, dtype=np.float32)[pred]
    write_report(
        tmp_path,
        ["a", "b", "c", "d"],
        None,
        gold,
        probs,
        ["x", "y", "z"],
        compute_metrics(gold, pred, ["x", "y", "z"]),
        None,
        "t",
    )
    rows = list(csv.reader(open(tmp_path / "confusion_matrix.csv", encoding="utf-8")))
    assert rows[0] == ["true \\ predicted", "x", "y", "z"] and rows[3] == ["z", "0", "1", "1"]


def test_a_collapsed_model_is_reported():
    from textfit.metrics import collapse

    gold = np.array([0, 1] * 20)
    one_class = np.tile([0.3, 0.7], (40, 1))
    assert "predicts 'pos' for 100% of the rows" in collapse("classification", gold, one_class, ["neg", "pos"])
    learned = np.eye(2)[gold] * 0.8 + 0.1
    assert collapse("classification", gold, learned, ["neg", "pos"]) is None
    skewed = np.array([0] * 39 + [1])  # labels that skewed: predicting the majority is no collapse
    assert collapse("classification", skewed, np.tile([0.9, 0.1], (40, 1)), ["neg", "pos"]) is None
    values = np.linspace(0, 10, 40)
    assert "hardly vary" in collapse("regression", values, np.full((40, 1), 5.0), ["score"])
    assert collapse("regression", values, values[:, None], ["score"]) is None


def test_collapse_reaches_the_metrics_and_the_report(tmp_path):
    from textfit.evaluate.evaluate import metrics_from_logits
    from textfit.metrics import scores_from_logits
    from textfit.run import LongText, RunManifest, Schema

    manifest = RunManifest(
        Schema("classification", "text", None, "label", ["neg", "pos"], ["neg", "pos"]), 64, LongText()
    )
    gold = [0, 1] * 20
    m, logits = metrics_from_logits(np.tile(np.array([[0.0, 2.0]], dtype=np.float32), (40, 1)), gold, manifest, None)
    scores = scores_from_logits(logits, "classification")
    assert "collapsed to one class" in m["collapsed"] and m["accuracy"] == 0.5
    write_report(tmp_path, ["t"] * 40, None, np.array(gold), scores, ["neg", "pos"], m, None, "validation")
    assert "collapsed to one class" in (tmp_path / "report.html").read_text(encoding="utf-8")
    m, _ = metrics_from_logits(np.eye(2, dtype=np.float32)[gold] * 3, gold, manifest, None)
    assert "collapsed" not in m
