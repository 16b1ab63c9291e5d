"""Evaluation of a classifier on labelled rows: the figures `textfit eval` prints and training records.

    metrics, logits = evaluate(clf, split)    # loss and the task's metrics; the raw logits, one row per text
    split, metrics, logits = evaluate_file(clf, "holdout.csv", chunk_rows=10_000)   # eval --data: in chunks
    scores = clf.scores(logits)                 # calibrated probabilities (or values)

Training's evaluations call this same function with a `Classifier` over the model being trained,
so a run's metrics.json holds exactly what `textfit eval RUN --data FILE` prints for the same rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from textfit.calibration import apply_temperature, calibration_report
from textfit.data.load import ReadOptions
from textfit.data.splits import Split
from textfit.metrics import loss_function, scores_from_logits, task_report
from textfit.predict.classifier import Classifier
from textfit.run import RunManifest

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


def evaluate_file(
    clf: Classifier,
    path: str,
    chunk_rows: int = 10_000,
    batch_size: int = 64,
    options: ReadOptions | None = None,
) -> tuple[Split, dict[str, Any], np.ndarray]:
    """`textfit eval --data`: the file read and predicted a chunk at a time (`read_for_run_in_chunks`); only
    the texts, labels and logits are kept, for the metrics and the report. Returns the rows as one Split,
    the metrics and the logits."""
    from textfit.data.load import read_for_run_in_chunks

    texts: list[str] = []
    pairs: list[str] | None = None
    labels: list[Any] = []
    logits = []
    chunks = read_for_run_in_chunks(path, clf.manifest, chunk_rows, options)
    for part in chunks:
        logits.append(clf.predict_logits(part.texts, part.pairs, batch_size))
        texts += part.texts
        labels += part.labels
        if part.pairs is not None:
            pairs = (pairs or []) + part.pairs
    joined = np.concatenate(logits) if logits else np.zeros((0, len(clf.labels)), dtype=np.float32)
    m, joined = metrics_from_logits(joined, labels, clf.manifest, clf.threshold)
    return Split(path, texts, pairs, labels, list(range(len(texts)))), m, joined
