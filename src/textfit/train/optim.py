"""The optimizer: fused AdamW over parameter groups by depth (layer-wise learning-rate decay) and decay.

optimizer, resolved = adamw(cfg, model, device, say)   # resolved: the rate and decay this run chose
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .. import static
from ..config import (
    FROZEN_LR,
    LARGE_MODEL_LR,
    LORA_LR,
    SMALL_MODEL_LAYER_DECAY,
    SMALL_MODEL_LR,
    SMALL_MODEL_PARAMS,
    TrainConfig,
)
from ..model import layer_depths

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def adamw(cfg: TrainConfig, model: Any, device: torch.device, say: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """Fused AdamW over parameter groups, and the rate and layer-wise decay it resolved (TrainState.resolved)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in model.parameters())
    lora = f" (LoRA rank {cfg.lora} adapters and the head)" if cfg.lora else ""
    say(f"textfit: trainable parameters: {sum(p.numel() for _, p in params) / 1e6:.2f}M of {n_params / 1e6:.1f}M{lora}")
    small = n_params < SMALL_MODEL_PARAMS
    vectors = static.is_static(model)  # --student static: no layers, a rate of its own
    lr = cfg.learning_rate or (
        static.LEARNING_RATE
        if vectors
        else FROZEN_LR
        if cfg.freeze_backbone
        else LORA_LR
        if cfg.lora
        else SMALL_MODEL_LR
        if small
        else LARGE_MODEL_LR
    )
    # One group per (depth below the top, decayed or not); the schedule scales every group's own rate.
    decay = cfg.layer_lr_decay
    if decay is None:
        decay = SMALL_MODEL_LAYER_DECAY if small and not (cfg.lora or cfg.freeze_backbone or vectors) else 1.0
    depth = layer_depths(model) if decay < 1 else {}
    by_key: dict[tuple[int, bool], list[torch.nn.Parameter]] = {}
    for n, p in params:
        by_key.setdefault((depth.get(n, 0), n.endswith(NO_DECAY)), []).append(p)
    groups = [
        {"params": ps, "weight_decay": 0.0 if no_decay else cfg.weight_decay, "lr": lr * decay**below}
        for (below, no_decay), ps in sorted(by_key.items())
    ]
    if depth:
        bottom = lr * decay ** max(below for below, _ in by_key)
        say(f"textfit: layer-wise learning-rate decay {decay:g}: {lr:g} at the top, {bottom:.3g} lowest")
    # The fused kernel updates every parameter in one pass instead of one pass per tensor.
    optimizer = torch.optim.AdamW(groups, lr=lr, fused=device.type in ("cpu", "cuda"))
    return optimizer, {"learning_rate": lr, "layer_lr_decay": decay}
