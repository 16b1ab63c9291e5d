"""textfit: fine-tune pretrained transformer encoders into text classifiers.

from textfit import TrainConfig, train, Classifier
run = train(TrainConfig(data="reviews.csv", epochs=1))
Classifier.load(run["folder"]).predict(["a gripping film"])
"""

from textfit.config import TrainConfig, load_config
from textfit.errors import UsageError
from textfit.predict.classifier import Classifier, Prediction
from textfit.train import train  # the function (bound after the subpackage textfit.train is imported)
from textfit.version import __version__

__all__ = ["Classifier", "Prediction", "TrainConfig", "UsageError", "load_config", "train", "__version__"]
