"""textfit: fine-tune pretrained transformer encoders into text classifiers.

    from textfit import TrainConfig, train, Classifier
    run = train(TrainConfig(data="reviews.csv", epochs=1))
    Classifier.load(run["folder"]).predict(["a gripping film"])
"""

__version__ = "0.1.0"

from .config import TrainConfig, load_config  # noqa: E402
from .errors import UsageError  # noqa: E402
from .predict import Classifier, Prediction  # noqa: E402
from .train import train  # noqa: E402  (bound after the submodule, so textfit.train stays the function)


__all__ = ["Classifier", "Prediction", "TrainConfig", "UsageError", "load_config", "train", "__version__"]
