"""The same bits whatever the thread count: the two operators whose results follow it, written so they do not.

    with steady(model):   # CPU training, while the thread governor may change torch's thread count
        loss.backward()

The thread governor (threads.py) lowers PyTorch's thread count while other work shares the CPU, so two
runs with the same seed, one alone and one beside other work, train on different counts. Measured operator
by operator (`benchmarks/thread_numerics.py`: each ATen call of a MiniLM training step run again on 1 thread,
same inputs and RNG state, fp32 and bf16 autocast; benchmarks/RESULTS.md), only two give other bits:
`native_layer_norm_backward` (its weight and bias gradients are sums of per-thread partial sums) and
`_softmax_backward_data` (the attention's). Matrix products (MKL, oneDNN), `sum`, GELU, dropout, the
embedding's gradient and the fused optimizer step gave the same bits. Inside `steady`, layer norm's input
gradient still comes from PyTorch's kernel (row by row: the same bits on any count), its weight and bias
gradients from `sum` over the rows, and the training attention's softmax gradient from `sum` over each row,
all measured thread-independent. Running the two kernels at a fixed thread count instead gave the same bits
too but stalled beside other work (a 2-thread operator waits for a descheduled thread: two jobs trained at
58 samples/s each instead of 100), and at 1 thread it slowed long texts. PyTorch has no switch for this
(`torch.use_deterministic_algorithms` is about run-to-run nondeterminism, not the thread count), so this stays.
"""

from __future__ import annotations

import contextlib
import contextvars
import types
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

_ON: contextvars.ContextVar[bool] = contextvars.ContextVar("textfit_steady", default=False)


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, shape: list[int], weight: Any, bias: Any, eps: float) -> Any:
        out, mean, rstd = torch.ops.aten.native_layer_norm(x, shape, weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.shape = shape
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        x, weight, bias, mean, rstd = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:  # each row on its own: the same bits on any thread count (measured)
            gx = torch.ops.aten.native_layer_norm_backward(
                grad, x, ctx.shape, mean, rstd, weight, bias, [True, False, False]
            )[0]
        rows = tuple(range(x.dim() - len(ctx.shape)))  # the parameters' gradients: sums over the rows
        if weight is not None and ctx.needs_input_grad[2]:
            gw = (grad * ((x - mean) * rstd)).sum(rows).to(weight.dtype)
        if bias is not None and ctx.needs_input_grad[3]:
            gb = grad.sum(rows).to(bias.dtype)
        return gx, None, gw, gb, None


class _Softmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dim: int) -> torch.Tensor:
        y = torch.softmax(x, dim)
        ctx.save_for_backward(y)
        ctx.dim, ctx.dtype = dim, x.dtype
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        (y,) = ctx.saved_tensors
        y32, g32 = y.float(), grad.float()  # in fp32 whatever the dtype, as PyTorch's kernel
        return (y32 * (g32 - (g32 * y32).sum(ctx.dim, keepdim=True))).to(ctx.dtype), None


def softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """torch.softmax; inside `steady`, with a gradient that does not follow the thread count."""
    if not _ON.get() or not x.requires_grad:
        return torch.softmax(x, dim)
    return _Softmax.apply(x, dim)


def _steady_layer_norm(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    if not _ON.get() or not torch.is_grad_enabled():
        return nn.LayerNorm.forward(self, x)
    return _LayerNorm.apply(x, list(self.normalized_shape), self.weight, self.bias, self.eps)


def release(model: nn.Module) -> None:
    """Take `steady`'s layer norms out of `model`: a copy made inside `steady` (training's inference copy)
    must run its own weights through PyTorch's own layer norm, as the saved run will."""
    for m in model.modules():
        f = m.__dict__.get("forward")
        if getattr(f, "__func__", None) is _steady_layer_norm:
            del m.forward


@contextlib.contextmanager
def steady(model: nn.Module) -> Iterator[None]:
    """Within: `model`'s LayerNorms and the training attention's softmax take gradients that do not follow
    the thread count."""
    norms = [m for m in model.modules() if type(m) is nn.LayerNorm]
    for m in norms:
        m.forward = types.MethodType(_steady_layer_norm, m)  # type: ignore[method-assign]
    token = _ON.set(True)
    try:
        yield
    finally:
        _ON.reset(token)
        release(model)
