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

from . import attention
from .dropout import drop_mask

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
    weights = torch.softmax(weights, dim=-1).to(value.dtype)
    if module.training and dropout > 0:
        weights = weights.masked_fill(drop_mask(weights.shape, dropout, weights.device), 0)
        out = torch.matmul(weights, value) * (1.0 / (1.0 - dropout))
    else:
        out = torch.matmul(weights, value)
    return out.transpose(1, 2).contiguous(), weights


def key_padding_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    mask_function: Any = None,
    attention_mask: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    allow_is_bidirectional_skip: bool = False,
    **kwargs: Any,
) -> torch.Tensor | None:
    """The attention mask for textfit's attention functions: for an encoder's bidirectional
    attention with padding, an additive (batch x 1 x 1 x keys) mask, 0 for tokens and the dtype's
    minimum for padding; None when nothing is padded. Any other pattern (causal, sliding, packed)
    gets transformers' own eager mask. transformers v5 passes no mask at all to an attention
    function it has no mask function for, so without this one padding would be attended to."""
    from transformers.masking_utils import bidirectional_mask_function, eager_mask

    if (
        mask_function is not bidirectional_mask_function
        or q_offset
        or kv_offset
        or (attention_mask is not None and tuple(attention_mask.shape) != (batch_size, kv_length))
    ):
        return eager_mask(
            batch_size=batch_size,
            q_length=q_length,
            kv_length=kv_length,
            q_offset=q_offset,
            kv_offset=kv_offset,
            mask_function=mask_function,
            attention_mask=attention_mask,
            dtype=dtype,
            allow_is_bidirectional_skip=allow_is_bidirectional_skip,
            **kwargs,
        )
    if attention_mask is None or (allow_is_bidirectional_skip and bool(attention_mask.all())):
        return None
    keep = attention_mask.bool()[:, None, None, :]
    return torch.zeros((), dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


def register() -> str:
    """Register "textfit_cpu" (the attention and its mask) with transformers; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, cpu_training_attention)
    AttentionMaskInterface.register(NAME, key_padding_mask)
    return NAME
