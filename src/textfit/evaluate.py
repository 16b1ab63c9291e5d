"""Evaluation of a classifier on labelled rows: the figures `textfit eval` prints and training records.

    metrics, logits = evaluate(clf, split)    # loss and the task's metrics; the raw logits, one row per text
    scores = clf.scores(logits)                 # calibrated probabilities (or values)

Training's evaluations call this same function with a `Classifier` over the model being trained,
so a run's metrics.json holds exactly what `textfit eval RUN --data FILE` prints for the same rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .calibration import apply_temperature, calibration_report
from .data.splits import Split
from .metrics import loss_function, scores_from_logits, task_report
from .predict import Classifier
from .run import RunManifest

UNSET: Any = object()


def evaluate(
    clf: Classifier, split: Split, batch_size: int = 64, threshold: Any = UNSET
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of a split (loss included, calibrated as the run is) and its raw logits; `threshold`
    defaults to the run's."""
    logits = clf.predict_logits(split.texts, split.pairs, batch_size)
    chosen = clf.threshold if threshold is UNSET else threshold
    return metrics_from_logits(logits, split.labels, clf.manifest, chosen)


def metrics_from_logits(
    logits: np.ndarray, labels: list[Any], manifest: RunManifest, threshold: Any
) -> tuple[dict[str, Any], np.ndarray]:
    """The task's metrics and loss from one row of raw logits per text, with the run's calibration
    (the loss is the calibrated one; `calibration` holds the figures before and after); returns the
    metrics and the logits."""
    gold = np.asarray(labels)
    t = manifest.temperature
    calibrated = apply_temperature(logits, t) if manifest.task != "regression" else logits  # divided once
    loss = loss_function(manifest.task, manifest.class_weights)(torch.from_numpy(calibrated), torch.from_numpy(gold))
    scores = scores_from_logits(calibrated, manifest.task)
    m = {**task_report(manifest.task, gold, scores, manifest.label_names, threshold), "loss": float(loss)}
    if t is not None and manifest.task != "regression" and len(gold):
        m["calibration"] = calibration_report(logits, gold, manifest.task, t)
    return m, logits
