"""Evaluation of a classifier on labelled rows: the figures `textfit eval` prints and training records.

    metrics, scores = evaluate(clf, split)    # loss and the task's metrics; scores one row per text

Training's evaluations call this same function with a `Classifier` over the model being trained,
so a run's metrics.json holds exactly what `textfit eval RUN --data FILE` prints for the same rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .data.splits import Split
from .metrics import loss_function, scores_from_logits, task_report
from .predict import Classifier
from .run import RunManifest

UNSET: Any = object()


def evaluate(
    clf: Classifier, split: Split, batch_size: int = 64, threshold: Any = UNSET
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of a split (loss included) and its scores; `threshold` defaults to the run's."""
    logits = clf.predict_logits(split.texts, split.pairs, batch_size)
    chosen = clf.threshold if threshold is UNSET else threshold
    return metrics_from_logits(logits, split.labels, clf.manifest, chosen)


def metrics_from_logits(
    logits: np.ndarray, labels: list[Any], manifest: RunManifest, threshold: Any
) -> tuple[dict[str, Any], np.ndarray]:
    """The task's metrics and loss from one row of logits per text, and the scores."""
    gold = np.asarray(labels)
    loss = loss_function(manifest.task, manifest.class_weights)(torch.from_numpy(logits), torch.from_numpy(gold))
    scores = scores_from_logits(logits, manifest.task)
    return {**task_report(manifest.task, gold, scores, manifest.label_names, threshold), "loss": float(loss)}, scores
