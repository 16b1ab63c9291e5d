"""An exponential moving average of the trainable weights (`--ema-decay`).

    ema = WeightAverage(model, decay=0.999)
    ema.update()                      # after each optimizer step
    with ema.applied():               # evaluate the average; the training weights come back after
        ...
    ema.copy_to_model()               # the end of training: the model keeps the average

The average warms up as in timm's and diffusers' EMA: after n updates the decay is
min(decay, (1 + n) / (10 + n)), so a short run is not dominated by the starting weights.

Measured against `torch.optim.swa_utils.AveragedModel` with `get_ema_multi_avg_fn`: AveragedModel deep-copies
the whole module and averages every parameter, the frozen word embeddings included (half of MiniLM), at a fixed
decay; this class keeps float32 copies of the trainable tensors only and updates them with the same
`torch._foreach_lerp_` call, with the warm-up above. Evaluation copies the average in and the training weights
back (no storage swap, which DDP's gradient buckets would not survive).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from textfit.errors import UsageError


class WeightAverage:
    def __init__(self, model: Any, decay: float):
        self.decay = decay
        self.updates = 0
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.named]
        self.shadow = [p.detach().float().clone() for p in self.params]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.current_decay()
        self.updates += 1
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], weight)

    @torch.no_grad()
    def _load(self, tensors: list[torch.Tensor]) -> None:
        torch._foreach_copy_(self.params, [t.to(p.dtype) for t, p in zip(tensors, self.params)])

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the average inside the block, its training weights again after it."""
        backup = [p.detach().clone() for p in self.params]
        self._load(self.shadow)
        try:
            yield
        finally:
            self._load(backup)

    def copy_to_model(self) -> None:
        self._load(self.shadow)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: t.contiguous() for (n, _), t in zip(self.named, self.shadow)}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], updates: int, where: Any = "the checkpoint") -> None:
        missing = [n for n, _ in self.named if n not in tensors]
        if missing:
            raise UsageError(
                f"--resume {where}: its weight average lacks {missing[0]} (another model or other trained "
                "parameters); resume with the options it was trained with"
            )
        self.shadow = [tensors[n].float().clone() for n, _ in self.named]
        self.updates = updates
