"""Attention for CPU training: transformers' eager attention with a cheaper dropout mask.

Registered with transformers' AttentionInterface as "textfit_cpu" by `register`. Measured against
PyTorch's SDPA, which trained slower on CPUs than these matmuls, and against the library's own
dropout on the (batch x heads x length x length) probabilities (benchmarks/RESULTS.md). In
evaluation mode the fused kernel of `attention` runs where it applies.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from textfit.accel import attention
from textfit.accel.dropout import drop_mask
from textfit.accel.masks import key_padding_mask
from textfit.accel.steady import softmax

NAME = "textfit_cpu"


def cpu_training_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if not module.training and attention.supports(query, key, value, attention_mask):
        return attention.fused_attention(query, key, value, attention_mask, scaling), None
    # Scaled before the product: the query is length / head size times smaller than the scores.
    weights = torch.matmul(query * scaling, key.transpose(2, 3))
    if attention_mask is not None:
        # in the scores' dtype: an fp32 mask would make the softmax, and what it saves for backward, fp32
        weights = weights + attention_mask.to(weights.dtype)
    # The probabilities go to the matmul's precision first (bf16 under autocast), so the dropout
    # pass moves half the bytes; its 1/(1-p) scale is applied to the smaller output instead.
    weights = softmax(weights, dim=-1).to(value.dtype)  # its backward at a fixed thread count (steady.py)
    if module.training and dropout > 0:
        weights = weights.masked_fill(drop_mask(weights.shape, dropout, weights.device), 0)
        out = torch.matmul(weights, value) * (1.0 / (1.0 - dropout))
    else:
        out = torch.matmul(weights, value)
    return out.transpose(1, 2).contiguous(), weights


def register() -> str:
    """Register "textfit_cpu" (the attention and its mask) with transformers; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, cpu_training_attention)
    AttentionMaskInterface.register(NAME, key_padding_mask)
    return NAME
