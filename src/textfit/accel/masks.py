"""The attention mask for textfit's attention functions (training and the fused inference kernel)."""

from __future__ import annotations

from typing import Any

import torch


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
