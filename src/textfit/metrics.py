"""Metrics with scikit-learn and SciPy, the task's loss, decisions from scores, and the table that shows them.

    m = compute_metrics(y_true, y_pred, ["negative", "positive"])
    m = task_metrics("multi-label", y_true, scores, names, thresholds)
    print(format_metrics(m))

Binary tasks report precision, recall and F1 of the second label (the positive class);
every classification also reports macro and weighted averages and per-class figures.
Multi-label tasks report micro and macro F1 and exact-match accuracy; regression reports
Pearson and Spearman correlation, MSE and MAE.

Scores are what the model's outputs become: class probabilities (softmax) for
classification, one probability per label (sigmoid) for multi-label, the value itself for
regression. `decide` turns them into labels with the run's thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from textfit.errors import UsageError

TASKS = ("classification", "multi-label", "regression")
LOWER_IS_BETTER = {"loss", "mse", "mae"}
MULTI_LABEL_METRICS = ["accuracy", "f1_micro", "f1_macro", "precision_micro", "recall_micro"]
REGRESSION_METRICS = ["pearson", "spearman", "mse", "mae"]


def default_metric(task: str) -> str:
    return {"classification": "accuracy", "multi-label": "f1_micro", "regression": "mse"}[task]


def metric_names(num_labels: int, task: str = "classification") -> list[str]:
    """Every metric that `task_metrics` produces for this task, plus loss."""
    if task == "multi-label":
        return ["loss", *MULTI_LABEL_METRICS]
    if task == "regression":
        return ["loss", *REGRESSION_METRICS]
    names = ["loss", "accuracy"]
    if num_labels == 2:
        names += ["precision", "recall", "f1"]
    for avg in ("macro", "weighted"):
        names += [f"precision_{avg}", f"recall_{avg}", f"f1_{avg}"]
    return names


def compute_metrics(y_true: Any, y_pred: Any, label_names: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support  # here: a second off every predict

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(len(label_names)))
    out: dict[str, Any] = {"accuracy": float(accuracy_score(y_true, y_pred)), "n": int(len(y_true))}
    if len(label_names) == 2:
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, pos_label=1, average="binary", zero_division=0
        )
        out.update(precision=float(p), recall=float(r), f1=float(f))
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg, zero_division=0)
        out.update({f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)})
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None, zero_division=0)
    out["per_class"] = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(label_names)
    }
    return out


def loss_function(task: str, class_weights: Any = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss of a task on logits (computed in fp32): (weighted) cross-entropy, binary
    cross-entropy per label, or mean squared error. Training and evaluation use the same one."""
    weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
    if task == "multi-label":
        return lambda logits, y: F.binary_cross_entropy_with_logits(logits.float(), y.float())
    if task == "regression":
        return lambda logits, y: F.mse_loss(logits.float()[:, 0], y.float())
    if weights is None:
        return lambda logits, y: F.cross_entropy(logits.float(), y)
    return lambda logits, y: F.cross_entropy(logits.float(), y, weight=weights.to(logits.device))


def scores_from_logits(logits: np.ndarray, task: str, temperature: Any = None) -> np.ndarray:
    """Probabilities (softmax, or sigmoid per label) or, for regression, the value itself:
    always one row per text, one column per label (regression: one column). `temperature`:
    the run's calibration (see calibration.py), applied to the logits first."""
    from textfit.calibration import apply_temperature

    if task != "regression":
        logits = apply_temperature(np.asarray(logits, dtype=np.float32), temperature)
    t = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    if task == "regression":
        return t.numpy()
    return (torch.sigmoid(t) if task == "multi-label" else torch.softmax(t, dim=-1)).numpy()


def decide(scores: np.ndarray, task: str, threshold: float | list[float] | None = None) -> np.ndarray:
    """Predicted class ids (classification), 0/1 per label (multi-label) or values (regression).

    A binary classifier's threshold applies to the positive class's probability; a
    multi-label model has one threshold per label (0.5 where none was tuned)."""
    if task == "regression":
        return scores[:, 0]
    if task == "multi-label":
        t = np.full(scores.shape[1], 0.5) if threshold is None else np.asarray(threshold)
        return (scores >= t).astype(int)
    if threshold is not None and scores.shape[1] == 2:
        return (scores[:, 1] >= threshold).astype(int)
    return scores.argmax(-1)


def task_metrics(
    task: str, y_true: Any, scores: np.ndarray, label_names: list[str], threshold: Any = None
) -> dict[str, Any]:
    """The metrics of a task from gold labels and scores (see `scores_from_logits`)."""
    y_true = np.asarray(y_true)
    if task == "classification":
        return compute_metrics(y_true, decide(scores, task, threshold), label_names)
    if task == "regression":
        from scipy.stats import pearsonr, spearmanr

        y, v = y_true.astype(float), decide(scores, task).astype(float)
        constant = len(y) < 2 or np.std(y) == 0 or np.std(v) == 0  # correlation undefined: report 0
        return {
            "n": int(len(y)),
            "mse": float(np.mean((y - v) ** 2)),
            "mae": float(np.mean(np.abs(y - v))),
            "pearson": 0.0 if constant else float(pearsonr(y, v)[0]),
            "spearman": 0.0 if constant else float(spearmanr(y, v)[0]),
        }
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    y_pred = decide(scores, task, threshold)
    y = y_true.astype(int)
    out: dict[str, Any] = {"n": int(len(y)), "accuracy": float(accuracy_score(y, y_pred))}  # every label right
    for avg in ("micro", "macro"):
        p, r, f, _ = precision_recall_fscore_support(y, y_pred, average=avg, zero_division=0)
        out.update({f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)})
    p, r, f, s = precision_recall_fscore_support(y, y_pred, average=None, zero_division=0)
    out["per_class"] = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(label_names)
    }
    return out


def tune_threshold(y_true: np.ndarray, scores: np.ndarray, metric: str, label_names: list[str]) -> tuple[float, float]:
    """The threshold on the positive class's probability that maximises `metric` on these rows
    (the midpoint between neighbouring scores), and the metric there."""
    p = np.unique(np.round(scores[:, 1].astype(float), 6))
    candidates = np.unique(np.concatenate([[0.5], (p[:-1] + p[1:]) / 2]))
    if len(candidates) > 400:  # enough resolution, bounded cost
        candidates = np.unique(np.concatenate([[0.5], np.quantile(candidates, np.linspace(0, 1, 400))]))
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    best_t, best_v = 0.5, -np.inf
    for t in candidates:
        v = sign * compute_metrics(y_true, (scores[:, 1] >= t).astype(int), label_names)[metric]
        if v > best_v + 1e-12 or (abs(v - best_v) <= 1e-12 and abs(t - 0.5) < abs(best_t - 0.5)):
            best_t, best_v = float(t), v
    return best_t, sign * best_v


def tune_label_thresholds(y_true: np.ndarray, scores: np.ndarray) -> list[float]:
    """One threshold per label of a multi-label task: the one with the best F1 for that label
    on these rows (0.5 for a label that never occurs)."""
    from sklearn.metrics import precision_recall_curve

    out = []
    for j in range(scores.shape[1]):
        y = y_true[:, j].astype(int)
        if y.sum() == 0 or y.sum() == len(y):
            out.append(0.5)
            continue
        prec, rec, thr = precision_recall_curve(y, scores[:, j])
        f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
        out.append(float(thr[int(np.argmax(f1))]))
    return out


def format_metrics(m: dict[str, Any], title: str = "") -> str:
    """A plain-text table: the headline figures, then one row per class."""
    lines = [title] if title else []
    heads = [
        k
        for k in (
            "loss",
            "accuracy",
            "precision",
            "recall",
            "f1",
            "f1_micro",
            "f1_macro",
            "f1_weighted",
            *REGRESSION_METRICS,
        )
        if k in m
    ]
    lines.append("  ".join(f"{k:>11}" for k in heads))
    lines.append("  ".join(f"{m[k]:>11.4f}" for k in heads))
    if "per_class" not in m:
        return "\n".join(lines)
    width = max([5] + [len(n) for n in m.get("per_class", {})])
    lines.append(f"{'class':<{width}}  {'precision':>9}  {'recall':>9}  {'f1':>9}  {'support':>7}")
    for name, c in m.get("per_class", {}).items():
        lines.append(
            f"{name:<{width}}  {c['precision']:>9.4f}  {c['recall']:>9.4f}  {c['f1']:>9.4f}  {c['support']:>7d}"
        )
    return "\n".join(lines)


def class_weight_vector(spec: str, labels: list[int], names: list[str], task: str) -> torch.Tensor | None:
    """--class-weights: none, auto (scikit-learn's 'balanced': n / (k * count)) or one number per class."""
    if spec == "none":
        return None
    if task != "classification":
        raise UsageError(
            f"--class-weights {spec}: weights apply to single-label classification, and this is a {task} task"
        )
    if spec == "auto":
        from sklearn.utils.class_weight import compute_class_weight

        w = compute_class_weight("balanced", classes=np.arange(len(names)), y=np.asarray(labels))
        return torch.tensor(w, dtype=torch.float32)
    try:
        values = [float(x) for x in spec.split(",")]
    except ValueError:
        values = []
    if len(values) != len(names) or any(not math.isfinite(x) or x <= 0 for x in values):
        raise UsageError(
            f"--class-weights {spec}: expected none, auto, or {len(names)} positive numbers in label order "
            f"({', '.join(names)})"
        )
    return torch.tensor(values, dtype=torch.float32)


def task_report(task: str, gold: Any, scores: np.ndarray, labels: list[str], threshold: Any = None) -> dict[str, Any]:
    """`task_metrics`, with a `collapsed` warning when the model has collapsed (see `collapse`)."""
    out = task_metrics(task, gold, scores, labels, threshold)
    warning = collapse(task, np.asarray(gold), scores, labels, threshold)
    return {**out, "collapsed": warning} if warning else out


def collapse(task: str, gold: np.ndarray, scores: np.ndarray, labels: list[str], threshold: Any = None) -> str | None:
    """A one-line warning when the model has collapsed: one class takes nearly every prediction while the
    labels are not that skewed, or regression predictions hardly vary; None when it has not."""
    if task == "regression":
        spread, wanted = float(np.std(scores[:, 0])), float(np.std(gold))
        if wanted > 0 and spread < 0.05 * wanted:
            return (
                f"the predictions hardly vary (standard deviation {spread:.3g} against the labels' {wanted:.3g}): "
                "the model has collapsed to the mean; train longer or lower --learning-rate"
            )
        return None
    if task != "classification" or len(gold) < 10:
        return None
    pred = decide(scores, task, threshold)
    counts = np.bincount(pred, minlength=len(labels))
    top = int(counts.argmax())
    share, gold_share = counts[top] / len(pred), float(np.bincount(gold, minlength=len(labels)).max() / len(gold))
    if share >= 0.95 and gold_share < 0.8:
        return (
            f"the model predicts '{labels[top]}' for {share:.0%} of the rows, whose most common label covers only "
            f"{gold_share:.0%}: it has collapsed to one class; train longer (--epochs), lower --learning-rate, "
            "or pass --class-weights auto"
        )
    return None
