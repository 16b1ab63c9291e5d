"""The optimizer: fused AdamW over parameter groups by depth (layer-wise learning-rate decay) and decay.

optimizer, resolved = adamw(cfg, model, device, say)   # resolved: the rate and decay this run chose
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from textfit.config import (
    FROZEN_LR,
    LARGE_MODEL_LR,
    LORA_LR,
    SMALL_MODEL_LAYER_DECAY,
    SMALL_MODEL_LR,
    SMALL_MODEL_PARAMS,
    TrainConfig,
)
from textfit.errors import UsageError
from textfit.models.transformer import layer_depths

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def freeze_layers(cfg: TrainConfig, model: Any, method: Any, say: Callable[[str], None]) -> int:
    """--freeze-layers: the embeddings and the lowest encoder layers kept fixed while fine-tuning; returns how
    many layers were. With nothing below it to learn, autograd records neither their backward nor the lowest
    trained layer's gradient with respect to its input: each frozen layer takes a layer's backward (two thirds
    of its arithmetic) off every step. The default is a third of the layers of a model under SMALL_MODEL_PARAMS,
    whose lowest layers the layer-wise decay already moves at a fifth of the top rate; none for larger models,
    for LoRA, --freeze-backbone, and methods without layers or without the loop (`method`: its module)."""
    loop, layers = getattr(method, "LOOP", True), getattr(method, "LAYERS", True)
    if not loop or not layers or cfg.lora or cfg.freeze_backbone:
        if cfg.freeze_layers and not loop:
            say(f"textfit: --freeze-layers applies to fine-tuning; the {method.NAME} method leaves it aside")
        return 0
    depth = layer_depths(model)
    n_layers = max(depth.values(), default=0)  # the embeddings' depth: one below the lowest layer
    small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS
    n = cfg.freeze_layers if cfg.freeze_layers is not None else n_layers // 3 if small else 0
    if not n:
        return 0
    if n >= n_layers:
        raise UsageError(
            f"--freeze-layers {n}: the model has {n_layers} encoder layers and at least the top one must train; "
            f"pass at most {n_layers - 1}, or --freeze-backbone to train only the head"
        )
    for name, p in model.named_parameters():
        if depth[name] >= n_layers - n:  # the embeddings and the n lowest layers
            p.requires_grad = False
    say(f"textfit: the embeddings and the lowest {n} of {n_layers} encoder layers kept fixed (--freeze-layers)")
    return n


def default_learning_rate(cfg: TrainConfig, method: Any, small: bool) -> float:
    """--learning-rate's default: the method's own, else by what trains: the head alone, LoRA's adapters, or
    every weight (by the model's size)."""
    if own := getattr(method, "LEARNING_RATE", None):
        return float(own)
    if cfg.freeze_backbone:
        return FROZEN_LR
    if cfg.lora:
        return LORA_LR
    return SMALL_MODEL_LR if small else LARGE_MODEL_LR


def adamw(
    cfg: TrainConfig, model: Any, device: torch.device, method: Any, say: Callable[[str], None]
) -> tuple[Any, dict[str, Any]]:
    """Fused AdamW over parameter groups, and the rate and layer-wise decay it resolved (TrainState.resolved);
    `method` (its module) may set its own LEARNING_RATE and have no LAYERS to decay."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in model.parameters())
    lora = f" (LoRA rank {cfg.lora} adapters and the head)" if cfg.lora else ""
    say(f"textfit: trainable parameters: {sum(p.numel() for _, p in params) / 1e6:.2f}M of {n_params / 1e6:.1f}M{lora}")
    small = n_params < SMALL_MODEL_PARAMS
    vectors = not getattr(method, "LAYERS", True)  # a model of vectors: no layers to decay
    lr = cfg.learning_rate or default_learning_rate(cfg, method, small)
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
