"""Metrics with scikit-learn, and the table and files that show them.

    m = compute_metrics(y_true, y_pred, ["negative", "positive"])
    print(format_metrics(m))

Binary tasks report precision, recall and F1 of the second label (the positive class);
every task also reports macro and weighted averages and per-class figures.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, precision_recall_fscore_support


def metric_names(num_labels: int) -> list[str]:
    """Every metric that `compute_metrics` produces for a task with this many labels, plus loss."""
    names = ["loss", "accuracy"]
    if num_labels == 2:
        names += ["precision", "recall", "f1"]
    for avg in ("macro", "weighted"):
        names += [f"precision_{avg}", f"recall_{avg}", f"f1_{avg}"]
    return names


def compute_metrics(y_true: Any, y_pred: Any, label_names: list[str]) -> dict[str, Any]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(len(label_names)))
    out: dict[str, Any] = {"accuracy": float(accuracy_score(y_true, y_pred)), "n": int(len(y_true))}
    if len(label_names) == 2:
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, pos_label=1, average="binary", zero_division=0)
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


def format_metrics(m: dict[str, Any], title: str = "") -> str:
    """A plain-text table: the headline figures, then one row per class."""
    lines = [title] if title else []
    heads = [k for k in ("loss", "accuracy", "precision", "recall", "f1", "f1_macro", "f1_weighted") if k in m]
    lines.append("  ".join(f"{k:>11}" for k in heads))
    lines.append("  ".join(f"{m[k]:>11.4f}" for k in heads))
    width = max([5] + [len(n) for n in m.get("per_class", {})])
    lines.append(f"{'class':<{width}}  {'precision':>9}  {'recall':>9}  {'f1':>9}  {'support':>7}")
    for name, c in m.get("per_class", {}).items():
        lines.append(f"{name:<{width}}  {c['precision']:>9.4f}  {c['recall']:>9.4f}  {c['f1']:>9.4f}  {c['support']:>7d}")
    return "\n".join(lines)
