"""textfit: fine-tune pretrained transformer encoders into text classifiers.

from textfit import TrainConfig, train, Classifier
run = train(TrainConfig(data="reviews.csv", epochs=1))
Classifier.load(run.folder).predict(["a gripping film"])

The names below are imported on first use (PEP 562), so `import textfit` and the `textfit` command's
parser, help and usage errors load no PyTorch, pandas or datasets.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textfit.config import TrainConfig, load_config
    from textfit.errors import UsageError
    from textfit.predict.classifier import Classifier, Prediction
    from textfit.train import train
    from textfit.version import __version__

# name -> the module that defines it
FACE = {
    "Classifier": "textfit.predict.classifier",
    "Prediction": "textfit.predict.classifier",
    "TrainConfig": "textfit.config",
    "UsageError": "textfit.errors",
    "load_config": "textfit.config",
    "train": "textfit.train",
    "__version__": "textfit.version",
}

__all__ = ["Classifier", "Prediction", "TrainConfig", "UsageError", "load_config", "train", "__version__"]


def __getattr__(name: str) -> Any:
    if name not in FACE:
        raise AttributeError(f"module 'textfit' has no attribute {name!r}")
    value = getattr(importlib.import_module(FACE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Face(types.ModuleType):
    """`textfit.train` is the function: importing the subpackage textfit.train (which Python then binds on
    this package under the same name) keeps the function there, as the eager face did."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "train" and isinstance(value, types.ModuleType):
            return  # the subpackage is in sys.modules; textfit.train stays the function (`__getattr__` imports it)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Face
