"""Training: `train(cfg)` runs the spine (spine.py: setup -> fit -> finish) with the method `cfg` asks for.

    from textfit.train import train
    result = train(TrainConfig(data="reviews.csv", epochs=1))   # a TrainResult (result.py)

The names are imported on first use (PEP 562): the command's checks of its output locations use
train/folder.py without loading PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textfit.train.result import TrainResult
    from textfit.train.spine import train

FACE = {"train": "textfit.train.spine", "TrainResult": "textfit.train.result"}
__all__ = ["TrainResult", "train"]


def __getattr__(name: str) -> Any:
    if name not in FACE:
        raise AttributeError(f"module 'textfit.train' has no attribute {name!r}")
    return getattr(importlib.import_module(FACE[name]), name)
