"""A model made ready for bf16 prediction on a CPU with bf16 matrix units (`for_cpu_inference`).

Measured against autocast (which casts every weight on every call) and plain fp32: bf16 weights
and oneDNN's fused linear kernels predicted faster at the same labels (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from textfit.accel import attention
from textfit.accel.first_token import same_code


class OneDNNLinear(nn.Module):
    """A linear layer (and the GELU after it, when fused) through oneDNN's linear kernel: the bias
    and the activation are applied inside the matrix product instead of in passes of their own."""

    def __init__(self, linear: nn.Linear, activation: str = "none"):
        super().__init__()
        self.weight, self.bias, self.activation = linear.weight, linear.bias, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the algorithm "none" is the exact (erf) GELU, as in BERT; "" for no activation
        algorithm = "none" if self.activation == "gelu" else ""
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.activation, [], algorithm)


class OneDNNResidualOutput(nn.Module):
    """BERT's `SelfOutput` / `Output` block for inference, `LayerNorm(dense(x) + residual)`, with the
    residual added inside oneDNN's linear kernel (dropout is the identity in evaluation)."""

    def __init__(self, block: Any):
        super().__init__()
        self.weight, self.bias, self.LayerNorm = block.dense.weight, block.dense.bias, block.LayerNorm

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        fused = torch.ops.mkldnn._linear_pointwise.binary(hidden_states, input_tensor, self.weight, self.bias, "add")
        return self.LayerNorm(fused)


def _is_bert_output_block(module: nn.Module) -> bool:
    """A block whose forward is BERT's `LayerNorm(dropout(dense(x)) + residual)`: BertSelfOutput,
    BertOutput and their copies in RoBERTa, ELECTRA and the other BERT-family models (same code)."""
    from transformers.models.bert.modeling_bert import BertSelfOutput

    return (
        same_code(module, BertSelfOutput)
        and type(getattr(module, "dense", None)) is nn.Linear
        and isinstance(getattr(module, "LayerNorm", None), nn.LayerNorm)
    )


def _exact_gelu(module: Any) -> bool:
    """transformers' "gelu" activation (or nn.GELU()), the erf form that oneDNN fuses."""
    if isinstance(module, nn.GELU):
        return module.approximate == "none"
    return type(module).__name__ == "GELUActivation" and getattr(module, "act", None) is nn.functional.gelu


def _floating_inputs_to_fp32(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def _fuse_linears(model: Any) -> None:
    for m in list(model.modules()):
        for name, child in list(m.named_children()):
            if _is_bert_output_block(child) and child.dense.weight.dtype == torch.bfloat16:
                setattr(m, name, OneDNNResidualOutput(child))
        for linear, act in (("dense", "intermediate_act_fn"), ("lin1", "activation")):
            if isinstance(getattr(m, linear, None), nn.Linear) and _exact_gelu(getattr(m, act, None)):
                setattr(m, linear, OneDNNLinear(getattr(m, linear), "gelu"))
                setattr(m, act, nn.Identity())
    for m in list(model.modules()):
        for name, child in list(m.named_children()):
            if type(child) is nn.Linear and child.weight.dtype == torch.bfloat16:
                setattr(m, name, OneDNNLinear(child))


def for_cpu_inference(model: Any) -> Any:
    """The model in bf16 for prediction, changed in place.

    bf16 weights instead of autocast; where PyTorch has oneDNN's fused linear kernel, every linear
    layer through it, with the feed-forward GELU fused into the layer before it (BERT, RoBERTa,
    ELECTRA: `dense` + `intermediate_act_fn`; DistilBERT: `lin1` + `activation`) and, in BERT-family
    output blocks, the residual added inside the kernel; on CPUs with AMX, attention through the fused
    kernel (`attention`). The classification head stays fp32 (its input is cast up), so that logits and
    regression values are not rounded to bf16. PEFT models are only cast: their layers wrap the linears."""
    model.to(torch.bfloat16)
    peft = hasattr(model, "peft_config")
    inner = model.get_base_model() if peft else model  # type: ignore[operator]
    base = getattr(inner, getattr(inner, "base_model_prefix", ""), None)
    if base is not None:
        for child in inner.children():
            if child is not base:
                child.float()
                child.register_forward_pre_hook(_floating_inputs_to_fp32)
    if peft:
        return model
    attention.use_fused_attention(model)
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        _fuse_linears(model)
    return model
