"""Dropout for CPU training: `FastDropout`, the same inverted dropout as `nn.Dropout` with a cheaper mask.

Measured against `F.dropout`, whose mask drawn by PyTorch's CPU generator was the largest single
cost of a MiniLM forward pass on short texts (benchmarks/RESULTS.md). Two ways, the faster where it runs:
- on x86-64 CPUs with AVX-512 bf16, `dropout.c` (next to this file) draws and applies the mask in one
  pass: each element's keep/drop draw is 16 bits of splitmix64 applied to a counter (seed + element
  index / 4), and x * 1/(1-p) or 0 is written in the same pass. The seed is drawn from PyTorch's
  default generator, so seeded runs repeat and a resumed run replays the same masks; the backward pass
  recomputes the mask from the seed instead of storing it. Built and cached by `native.build`, and
  registered as the PyTorch operator `torch.ops.textfit.dropout` with its autograd formula.
- elsewhere, `drop_mask`: each draw is a 16-bit slice of a 64-bit word from PyTorch's generator,
  so the generator runs a third as often as once per element.
Both give a Bernoulli(1 - p) keep mask, up to p's rounding to 1/65536. Evaluation mode is the identity.
"""

from __future__ import annotations

import ctypes
import subprocess
import threading
from pathlib import Path
from typing import Any

import torch
from torch import nn

from textfit.accel import cpu
from textfit.accel.native import build, x86_64_linux
from textfit.accel.switches import settings

SOURCE = Path(__file__).with_name("dropout.c")
FLAGS = ["-O3", "-shared", "-fPIC", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512bf16", "-mfma"]

_lock = threading.Lock()
_state: dict[str, Any] = {}


def kernel() -> Any | None:
    """The kernel (fp32 and bf16), or None where it cannot run here."""
    if "fn" in _state:  # decided already (no lock: this runs for every dropout call)
        return _state["fn"]
    with _lock:
        if "fn" in _state:
            return _state["fn"]
        fn = None
        if settings().fused_dropout and x86_64_linux() and cpu.kind().bf16:
            try:
                fn = ctypes.CDLL(str(build(SOURCE, FLAGS))).textfit_dropout
                fn.argtypes = [
                    ctypes.c_void_p,
                    ctypes.c_void_p,
                    ctypes.c_int,
                    ctypes.c_int64,
                    ctypes.c_uint64,
                    ctypes.c_uint32,
                    ctypes.c_float,
                    ctypes.c_int64,
                    ctypes.c_int64,
                ]
                fn.restype = None
            except (OSError, RuntimeError, subprocess.SubprocessError):
                fn = None
        _state["fn"] = fn
        return fn


def supports(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and kernel() is not None


@torch.library.custom_op("textfit::dropout", mutates_args=())
def _dropout_op(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    x = x.contiguous()
    out = torch.empty_like(x)
    n = x.numel()
    fn = kernel()
    assert fn is not None, "textfit::dropout called where the kernel does not run"
    fn(
        x.data_ptr(),
        out.data_ptr(),
        int(x.dtype == torch.bfloat16),
        n,
        seed,
        round(p * 65536),
        1.0 / (1.0 - p),
        0,
        (n + 3) // 4,
    )
    return out


@_dropout_op.register_fake
def _(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    return torch.empty_like(x.contiguous())


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    ctx.p, ctx.seed = inputs[1], inputs[2]


def _backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
    return torch.ops.textfit.dropout(grad, ctx.p, ctx.seed), None, None  # the same mask and scale, from the seed


torch.library.register_autograd("textfit::dropout", _backward, setup_context=_setup_context)


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout in one pass by the kernel. Call only where `supports(x)`."""
    seed = int(torch.randint(0, 2**62, (1,)).item())  # from PyTorch's default generator
    return torch.ops.textfit.dropout(x, float(p), seed)


def drop_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """True where an element is dropped, with probability p (rounded to 1/65536)."""
    n = shape.numel()
    words = torch.empty((n + 2) // 3, dtype=torch.int64, device=device).random_()  # 63 random bits each
    draws = words.view(torch.int16).view(-1, 4)[:, :3].reshape(-1)[:n]  # the low 48 bits: 3 uniform int16
    return (draws < round(p * 65536) - 32768).view(shape)


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout: in one pass by the kernel where the CPU runs it, else with `drop_mask`."""
    if p == 0:
        return x
    if supports(x):
        return dropout(x, p)
    return x.masked_fill(drop_mask(x.shape, p, x.device), 0) * (1.0 / (1.0 - p))


class FastDropout(nn.Module):
    """`nn.Dropout` for CPU training with the cheaper mask above; the identity in evaluation."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p) if self.training else x


def use_fast_dropout(model: nn.Module) -> int:
    """Swap every `nn.Dropout` module for `FastDropout` with the same p; returns how many."""
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, FastDropout(child.p))
                swapped += 1
    return swapped
