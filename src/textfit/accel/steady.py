"""The same bits whatever the thread count: the operators whose results follow it, run at one fixed count.

    with steady(model, threads=2):   # while the thread governor may change torch's thread count
        loss.backward()

The thread governor (threads.py) lowers PyTorch's thread count while other work shares the CPU. Two
runs with the same seed, one alone and one beside other work, then trained on different counts, and a
few operators give different bits on 1 thread than on 2 for the same inputs. Measured operator by
operator (each call of a MiniLM training step on SST-2 run again on 1 thread, same inputs and RNG state,
fp32 and bf16 autocast; benchmarks/RESULTS.md): only two differ, `native_layer_norm_backward` (its
weight and bias gradients are summed over per-thread partial sums) and `_softmax_backward_data` (the
attention's). Matrix products (MKL and oneDNN), the other reductions, GELU, dropout, the embedding's
gradient and the fused optimizer step gave the same bits. Inside `steady`, those two run at `threads`
(the count the run started with) whatever the governor set; everything else still follows it. PyTorch
has no switch for this (`torch.use_deterministic_algorithms` covers run-to-run nondeterminism on GPUs,
not the thread count), so this stays. The forward passes are PyTorch's own operators: the results
equal the unpatched ones at the starting count, bit for bit (tested).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

_THREADS: contextvars.ContextVar[int | None] = contextvars.ContextVar("textfit_steady_threads", default=None)


@contextlib.contextmanager
def _at_fixed_count(threads: int | None) -> Iterator[None]:
    now = torch.get_num_threads()
    if threads is None or threads == now:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(now)


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, shape: list[int], weight: Any, bias: Any, eps: float, threads: int) -> Any:
        out, mean, rstd = torch.ops.aten.native_layer_norm(x, shape, weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.shape, ctx.threads = shape, threads
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        x, weight, bias, mean, rstd = ctx.saved_tensors
        wanted = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[2]]
        wanted.append(bias is not None and ctx.needs_input_grad[3])
        with _at_fixed_count(ctx.threads):
            gx, gw, gb = torch.ops.aten.native_layer_norm_backward(grad, x, ctx.shape, mean, rstd, weight, bias, wanted)
        return gx, None, gw, gb, None, None


class _Softmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dim: int, threads: int) -> torch.Tensor:
        y = torch.softmax(x, dim)
        ctx.save_for_backward(y)
        ctx.dim, ctx.dtype, ctx.threads = dim, x.dtype, threads
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        (y,) = ctx.saved_tensors
        with _at_fixed_count(ctx.threads):
            return torch._softmax_backward_data(grad, y, ctx.dim, ctx.dtype), None, None


def softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """torch.softmax, its backward at the fixed count inside `steady` (the training attention calls this)."""
    threads = _THREADS.get()
    if threads is None or not x.requires_grad:
        return torch.softmax(x, dim)
    return _Softmax.apply(x, dim, threads)


def _layer_norm_forward(module: nn.LayerNorm, threads: int):  # noqa: ANN202
    def forward(x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return nn.LayerNorm.forward(module, x)
        return _LayerNorm.apply(x, list(module.normalized_shape), module.weight, module.bias, module.eps, threads)

    return forward


@contextlib.contextmanager
def steady(model: nn.Module, threads: int) -> Iterator[None]:
    """Within: `model`'s LayerNorms and the training attention's softmax take their gradients at `threads`."""
    norms = [m for m in model.modules() if type(m) is nn.LayerNorm]
    for m in norms:
        m.forward = _layer_norm_forward(m, threads)  # type: ignore[method-assign]
    token = _THREADS.set(threads)
    try:
        yield
    finally:
        _THREADS.reset(token)
        for m in norms:
            del m.forward
