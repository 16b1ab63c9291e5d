"""Parsers of the flags whose values are small languages (tracker lists, seed lists, split shares,
attention dropout): one function each, used by `config._check` and by the commands that take the same flags."""

from __future__ import annotations

import math

from .errors import UsageError

TRACKERS = ("tensorboard", "mlflow", "wandb", "trackio")


def report_to(text: str) -> list[str]:
    """--report-to as a list of trackers (empty for none)."""
    names = [x.strip() for x in str(text).split(",") if x.strip()]
    unknown = [x for x in names if x not in (*TRACKERS, "none")]
    if unknown or not names or ("none" in names and len(names) > 1):
        raise UsageError(
            f"--report-to {text}: expected none or trackers among {', '.join(TRACKERS)}, e.g. tensorboard,mlflow"
        )
    return [x for x in names if x != "none"]


def attention_dropout(text: str) -> float | None:
    """--attention-dropout as a probability, or None for the checkpoint's own value ('model')."""
    if str(text) == "model":
        return None
    try:
        p = float(text)
    except ValueError:
        p = -1.0
    if not 0 <= p < 1:
        raise UsageError(
            f"--attention-dropout {text}: expected a probability in [0, 1), e.g. 0.1, or 'model' for the "
            "checkpoint's own value"
        )
    return p


def parse_seeds(text: str | None) -> list[int]:
    if text is None:
        return []
    try:
        seeds = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text}: expected distinct integers separated by commas, e.g. 1,2,3")
    return seeds


def split_percentages(text: str) -> tuple[float, float, float]:
    try:
        parts = [float(x) for x in str(text).split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or any(not math.isfinite(p) or p < 0 for p in parts) or parts[0] <= 0:
        raise UsageError(f"--split {text}: expected three percentages train,validation,test such as 80,10,10")
    if abs(sum(parts) - 100) > 1e-6 and abs(sum(parts) - 1) > 1e-9:
        raise UsageError(f"--split {text}: the three parts add up to {sum(parts):g}, not 100; e.g. --split 80,10,10")
    total = sum(parts)
    return parts[0] / total, parts[1] / total, parts[2] / total
