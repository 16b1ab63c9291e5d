"""The checks of a run's flags against its data, before any model is loaded or file written."""

from __future__ import annotations

from textfit.config import TrainConfig
from textfit.data import TrainingData
from textfit.errors import UsageError
from textfit.metrics import default_metric, metric_names


def best_metric(cfg: TrainConfig, data: TrainingData) -> str:
    """--metric-for-best-model, else the default of the data's task; one that evaluation does not produce for the
    task is one line."""
    task = data.schema.task
    metric = cfg.metric_for_best_model or default_metric(task)
    names = metric_names(len(data.schema.label_names), task)
    if metric not in names:
        raise UsageError(
            f"--metric-for-best-model {metric}: evaluation does not produce it for a {task} task; "
            f"choose one of {', '.join(names)}"
        )
    return metric


def check_options(cfg: TrainConfig, data: TrainingData) -> str:
    """The checks of flags against the data; returns the metric for the best model."""
    task, splits = data.schema.task, data.splits
    metric = best_metric(cfg, data)
    if cfg.tune_threshold and (task != "classification" or len(data.schema.label_names) != 2):
        raise UsageError(
            "--tune-threshold: applies to binary classification (multi-label runs tune one threshold per label anyway)"
        )
    if cfg.tune_threshold and "validation" not in splits:
        raise UsageError(
            "--tune-threshold needs a validation split; pass --validation FILE or a --split with a validation share"
        )
    if (cfg.early_stopping_patience or cfg.eval_steps) and "validation" not in splits:
        raise UsageError(
            "--early-stopping-patience/--eval-steps need a validation split; "
            "pass --validation FILE or a --split with a validation share"
        )
    if cfg.calibration == "temperature" and task == "regression":
        raise UsageError("--calibration temperature: calibrates probabilities; a regression run has none (use none)")
    if cfg.calibration == "temperature" and "validation" not in splits:
        raise UsageError(
            "--calibration temperature needs a validation split to fit on; pass --validation FILE or a --split with "
            "a validation share, or --calibration none"
        )
    if cfg.freeze_layers is not None and (
        cfg.freeze_layers < 0 or (cfg.freeze_layers and (cfg.lora or cfg.freeze_backbone))
    ):
        raise UsageError(
            f"--freeze-layers {cfg.freeze_layers}: expected 0 or more layers, and none with --lora or "
            "--freeze-backbone (they keep every encoder weight fixed already)"
        )
    return metric
