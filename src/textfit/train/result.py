"""What `textfit.train` returns: one typed result, for a run and for a --seeds family of runs alike.

    result = train(TrainConfig(data="reviews.csv"))
    result.folder, result.metrics["validation"]["accuracy"], result.logits["validation"]
    family = train(TrainConfig(data="reviews.csv", seeds="1,2,3"))
    family.metrics["validation"]["accuracy"]["mean"], [r.folder for r in family.runs]

`result["folder"]` (textfit 0.1's dict access) still reads the field of that name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class TrainResult:
    folder: str  # the run folder (with --seeds: the folder that holds OUTPUT/seed-N and seeds.json)
    # every split's metrics as metrics.json has them; with --seeds, each metric's mean, std and values
    metrics: dict[str, Any]
    logits: dict[str, np.ndarray] = field(default_factory=dict)  # every measured split's raw logits (one run)
    temperature: float | list[float] | None = None  # the fitted calibration temperature (one run)
    history: list[dict[str, Any]] = field(default_factory=list)  # every validation evaluation during training
    steps: int = 0  # optimizer steps taken
    train_stats: dict[str, Any] = field(default_factory=dict)  # samples, seconds, tokens/s, padding share
    seeds: list[int] = field(default_factory=list)  # --seeds: the seeds, in order
    runs: list[TrainResult] = field(default_factory=list)  # --seeds: each seed's result

    def __getitem__(self, key: str) -> Any:
        """textfit 0.1 returned a dict: result["folder"] reads the field."""
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)
