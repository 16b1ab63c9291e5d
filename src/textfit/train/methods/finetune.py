"""Fine-tuning: every trainable weight learns from the labels in the shared loop (train/loop.py).

The spine's defaults are this method's (learning rate and layer-wise decay by model size, --freeze-layers,
the loop's schedule), so it answers only one question: with --freeze-backbone on one process, the encoder is
run once over every split and the head trains on the cached vectors (train/frozen.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textfit.train.frozen import head_function, use_cached_features

if TYPE_CHECKING:
    from textfit.train.setup import TrainState

NAME = "finetune"


def fit(s: TrainState) -> None:
    """Before the loop: --freeze-backbone's cached vectors, where the head reads them alone."""
    if s.cfg.freeze_backbone and s.accelerator.num_processes == 1 and head_function(s.model) is not None:
        use_cached_features(s)
