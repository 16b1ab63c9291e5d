"""Calibrated probabilities: temperature scaling fitted on the validation split, and how calibrated scores are.

    t = fit_temperature(logits, gold, "classification")      # one scalar (one per label for multi-label)
    probs = scores_from_logits(logits, task, t)               # what predict, eval, serve and ONNX return
    calibration_report(logits, gold, task, t)                 # ECE, Brier and NLL before and after
    report.plot_reliability(logits, gold, task, t, path, title)   # the reliability diagram PNG

Temperature scaling (Guo et al., 2017) divides the logits by one positive number T fitted to minimise
the negative log-likelihood of held-out rows: the ranking of the classes never changes, so neither does
the predicted label (except where a tuned threshold on a probability says so); only how sure the model
says it is. Multi-label runs get one temperature per label (sigmoid outputs).

Library check: scikit-learn 1.9 fits a temperature only inside `CalibratedClassifierCV(method="temperature")`,
which wraps a fitted estimator and calls it again; its fitter (`_TemperatureScaling`) is private and has no
per-label form. The fit here is one bounded scalar minimisation per temperature with SciPy (`minimize_scalar`
on log T); Brier scores come from scikit-learn's `brier_score_loss`. Expected calibration error has no function
in scikit-learn: it is the usual 15 equal-width bins of the top probability.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit, log_softmax, softmax

ECE_BINS = 15
LOG_T_BOUNDS = (-4.0, 4.0)  # T from 0.018 to 55
MIN_ROWS = 50  # fewer validation rows than this fit a temperature too noisy to trust


def _nll(logits: np.ndarray, gold: np.ndarray, task: str) -> float:
    """Mean negative log-likelihood of the gold labels (multi-label: binary, per cell)."""
    z = logits.astype(np.float64)
    if task == "multi-label":
        y = gold.astype(np.float64)
        return float(np.mean(np.logaddexp(0.0, z) - y * z))  # log(1 + e^z) - y z, stable
    return float(-np.mean(log_softmax(z, axis=1)[np.arange(len(gold)), gold.astype(int)]))


def _one_temperature(logits: np.ndarray, gold: np.ndarray, task: str) -> float:
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda log_t: _nll(logits / np.exp(log_t), gold, task), bounds=LOG_T_BOUNDS, method="bounded")
    return float(np.exp(res.x))


def fit_temperature(logits: np.ndarray, gold: Any, task: str) -> float | list[float]:
    """The temperature that minimises the NLL of `gold` under softmax(logits / T) (classification),
    or one per label under sigmoid(logits[:, j] / T_j) (multi-label)."""
    gold = np.asarray(gold)
    if task == "multi-label":
        return [_one_temperature(logits[:, [j]], gold[:, [j]], task) for j in range(logits.shape[1])]
    return _one_temperature(logits, gold, task)


def unusable(logits: np.ndarray, gold: Any, task: str, temperature: Any) -> str | None:
    """Why a fitted temperature should not be used (None: it can be). With too few rows, or rows the
    model already separates perfectly, the likelihood keeps improving as T goes to a bound: the fit
    then says nothing about how often the model is right on new texts."""
    if len(gold) < MIN_ROWS:
        return f"the validation split has {len(gold)} rows, fewer than the {MIN_ROWS} a temperature needs"
    gold = np.asarray(gold)
    right = (logits > 0) == (gold > 0) if task == "multi-label" else logits.argmax(axis=1) == gold
    ts = np.atleast_1d(np.asarray(temperature, dtype=float))
    lo, hi = np.exp(LOG_T_BOUNDS[0]), np.exp(LOG_T_BOUNDS[1])
    if bool(np.all(right)) or np.any(ts <= lo * 1.05) or np.any(ts >= hi / 1.05):
        return (
            "the fit ran to its bound (the model separates the validation rows perfectly, or not at all), "
            "so it says nothing about new texts"
        )
    return None


def apply_temperature(logits: np.ndarray, temperature: float | list[float] | None) -> np.ndarray:
    if temperature is None:
        return logits
    return (logits / np.asarray(temperature, dtype=np.float32)).astype(np.float32)


def probabilities(logits: np.ndarray, task: str) -> np.ndarray:
    z = logits.astype(np.float64)
    return expit(z) if task == "multi-label" else softmax(z, axis=1)


def _confidence(probs: np.ndarray, gold: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """What a reliability diagram bins: the top class's probability and whether it was right
    (multi-label: every label's probability and whether the label is on)."""
    if task == "multi-label":
        return probs.ravel(), gold.astype(float).ravel()
    return probs.max(axis=1), (probs.argmax(axis=1) == gold).astype(float)


def reliability_bins(probs: np.ndarray, gold: np.ndarray, task: str, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Per equal-width bin of confidence: mean confidence, accuracy (share right), and row count."""
    conf, right = _confidence(probs, gold, task)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, conf, minlength=bins) / counts
        accuracy = np.bincount(which, right, minlength=bins) / counts
    return {"confidence": mean_conf, "accuracy": accuracy, "count": counts}


def calibration_metrics(logits: np.ndarray, gold: Any, task: str) -> dict[str, float]:
    """Expected calibration error (15 bins), Brier score (scikit-learn's) and NLL of these logits."""
    from sklearn.metrics import brier_score_loss

    gold = np.asarray(gold)
    probs = probabilities(logits, task)
    b = reliability_bins(probs, gold, task)
    seen = b["count"] > 0
    ece = float(np.sum(b["count"][seen] * np.abs(b["accuracy"][seen] - b["confidence"][seen])) / b["count"].sum())
    if task == "multi-label":
        brier = float(np.mean((probs - gold.astype(float)) ** 2))
    else:
        brier = float(brier_score_loss(gold, probs, labels=list(range(probs.shape[1]))))
    return {"ece": ece, "brier": brier, "nll": _nll(logits, gold, task)}


def calibration_report(logits: np.ndarray, gold: Any, task: str, temperature: Any) -> dict[str, Any]:
    """metrics.json's `calibration` entry of a split: the temperature, and the figures before and after."""
    return {
        "method": "temperature",
        "temperature": temperature,
        "before": calibration_metrics(logits, gold, task),
        "after": calibration_metrics(apply_temperature(logits, temperature), gold, task),
    }
