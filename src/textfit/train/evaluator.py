"""Evaluation during training: the best weights so far, early stopping, and the decision thresholds.

    ev = Evaluator(measure, metric="accuracy", sign=1.0, patience=2, keep_best=True)
    ev.run(step, epoch, model, log, say)     # one evaluation on the validation split
    ev.stop                                  # early stopping says so

`measure(split_name)` returns a split's metrics and raw logits. For a model being trained it predicts
with `Classifier` over an inference copy of the model (`model.inference_copy`): the same tokens,
batches, kernels and metrics as `textfit eval` on the saved run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from textfit.data import pool_windows
from textfit.errors import UsageError
from textfit.evaluate.evaluate import evaluate, metrics_from_logits
from textfit.metrics import task_report, tune_label_thresholds, tune_threshold
from textfit.models.transformer import inference_copy
from textfit.predict.classifier import Classifier, TorchBackend
from textfit.train.setup import TrainState

Measure = Callable[..., tuple[dict[str, Any], np.ndarray]]
HEADLINE = ("accuracy", "f1", "f1_micro", "pearson", "spearman")


def current_classifier(s: TrainState) -> Classifier:
    """The model being trained as `textfit eval` would load it once saved, ready to predict."""
    backend = TorchBackend(inference_copy(s.model), "auto", str(s.accelerator.device))
    return Classifier(backend, s.tokenizer, s.manifest)


def measure_for(s: TrainState) -> Measure:
    """How `s` evaluates a split: on cached features (--freeze-backbone), else through `Classifier`."""

    def predicted(name: str, threshold: Any = None) -> tuple[dict[str, Any], np.ndarray]:
        return evaluate(current_classifier(s), s.data.splits[name], s.cfg.eval_batch_size, threshold)

    def cached(name: str, threshold: Any = None) -> tuple[dict[str, Any], np.ndarray]:
        feats, doc = s.features[name]
        s.trainable.eval()
        with torch.inference_mode():
            chunks = [
                s.trainable(features=f.to(s.accelerator.device)).logits.float().cpu()
                for f in feats.split(s.cfg.eval_batch_size)
            ]
        s.trainable.train()
        split = s.data.splits[name]
        logits = pool_windows(torch.cat(chunks).numpy(), doc, len(split.texts), s.manifest.long_text.pool)
        return metrics_from_logits(logits, split.labels, s.manifest, threshold)

    return cached if s.features else predicted


class Evaluator:
    def __init__(
        self,
        measure: Measure,
        metric: str,
        sign: float,
        patience: int | None,
        keep_best: bool,
        on_evaluate: Callable[[int, dict[str, Any]], None] | None = None,
    ):
        self.measure, self.metric, self.sign, self.patience, self.keep_best = measure, metric, sign, patience, keep_best
        self.on_evaluate = on_evaluate  # told every evaluation (textfit tune prunes trials there)
        self.best_score: float = -math.inf
        self.best_step: int | None = None
        self.best_metrics: dict[str, Any] | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.best_logits: np.ndarray | None = None
        self.last: dict[str, Any] = {}
        self.last_logits: np.ndarray | None = None
        self.history: list[dict[str, Any]] = []
        self.bad_evals, self.stop, self.seconds = 0, False, 0.0

    def run(
        self, step: int, epoch: float, model: Any, log: Callable[[dict[str, Any]], None], say: Callable[[str], None]
    ) -> None:
        """Evaluate `model` at `step` on the validation split; keep its weights when it is the best."""
        t = time.time()
        m, self.last_logits = self.measure("validation")
        if not math.isfinite(m["loss"]):
            raise UsageError(
                f"the validation loss became {m['loss']} at step {step}; nothing was saved as the final model; "
                "train again with a lower --learning-rate"
            )
        self.last = m
        record = {"step": step, "epoch": epoch, "eval": {k: v for k, v in m.items() if k != "per_class"}}
        self.history.append(record)
        log(record)
        say(
            f"step {step}: validation loss {m['loss']:.4f}, " + ", ".join(f"{k} {m[k]:.4f}" for k in HEADLINE if k in m)
        )
        if "collapsed" in m:
            say(f"textfit: warning: step {step}: {m['collapsed']}")
        if self.sign * m[self.metric] > self.best_score:
            self.best_score, self.best_step, self.best_metrics = self.sign * m[self.metric], step, m
            self.best_logits = self.last_logits
            self.best_weights = None
            if self.keep_best:
                self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            self.bad_evals = 0
        else:
            self.bad_evals += 1
            if self.patience and self.bad_evals >= self.patience:
                self.stop = True
                say(f"textfit: early stopping at step {step}: no better {self.metric} for {self.bad_evals} evaluations")
        self.seconds += time.time() - t
        if self.on_evaluate is not None:
            self.on_evaluate(step, m)

    def state_dict(self) -> dict[str, Any]:
        return {
            "bad_evals": self.bad_evals,
            "history": self.history,
            "last": self.last,
            "best_score": self.best_score,
            "best_step": self.best_step,
            "best_metrics": self.best_metrics,
        }

    def load_state_dict(self, state: dict[str, Any], best_weights: dict[str, torch.Tensor] | None, model: Any) -> None:
        self.bad_evals, self.history, self.last = state["bad_evals"], list(state["history"]), dict(state["last"])
        self.best_score, self.best_step, self.best_metrics = (
            state["best_score"],
            state["best_step"],
            state["best_metrics"],
        )
        if self.keep_best and self.best_step is not None:
            current = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            self.best_weights = best_weights if best_weights is not None else current

    def final(self, restored: bool) -> tuple[dict[str, Any], np.ndarray]:
        """The validation metrics and logits of the final weights: the best evaluation's when they
        were restored, else the last one's; measured again when a resume lost them."""
        metrics, scores = (self.best_metrics, self.best_logits) if restored else (self.last, self.last_logits)
        if scores is None or metrics is None:
            return self.measure("validation")
        return metrics, scores


def tune_thresholds(s: TrainState, metrics: dict[str, Any], scores: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """--tune-threshold (binary) or one threshold per label (multi-label), tuned on the validation
    scores (calibrated when the run is); returns the threshold and the validation metrics with it.
    None: nothing to tune."""
    schema = s.manifest.schema
    if not (s.cfg.tune_threshold or schema.task == "multi-label"):
        return None, metrics
    gold = np.asarray(s.data.splits["validation"].labels)
    if schema.task == "multi-label":
        threshold: Any = tune_label_thresholds(gold, scores)
        shown = ", ".join(f"{n} {t:.3f}" for n, t in zip(schema.label_names, threshold))
        s.say(f"textfit: thresholds per label, tuned on validation: {shown}")
    else:
        tuned = s.metric if s.metric != "loss" else "f1"
        threshold, value = tune_threshold(gold, scores, tuned, schema.label_names)
        s.say(
            f"textfit: decision threshold {threshold:.4f} on P({schema.label_names[1]}) maximises validation {tuned} "
            f"({metrics[tuned]:.4f} at 0.5, {value:.4f} at {threshold:.4f})"
        )
    kept: dict[str, Any] = {k: metrics[k] for k in ("loss", "calibration") if k in metrics}
    return threshold, {**task_report(schema.task, gold, scores, schema.label_names, threshold), **kept}
