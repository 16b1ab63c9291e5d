"""textfit: fine-tune pretrained transformer encoders into text classifiers.

from textfit import TrainConfig, train, Classifier
run = train(TrainConfig(data="reviews.csv", epochs=1))
Classifier.load(run["folder"]).predict(["a gripping film"])
"""

from .config import TrainConfig, load_config
from .errors import UsageError
from .predict import Classifier, Prediction
from .train import train  # the function (bound after the subpackage textfit.train is imported)
from .version import __version__

__all__ = ["Classifier", "Prediction", "TrainConfig", "UsageError", "load_config", "train", "__version__"]
