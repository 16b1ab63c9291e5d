"""CPU speed work behind one entry point: `enable(model, mode)`.

    model = accel.enable(model, "train")   # CPU: the "textfit_cpu" attention and FastDropout
    model = accel.enable(model, "infer")   # CPU with bf16 units: bf16 weights, oneDNN fusions, fused attention
    model = accel.enable(model, "fp32")    # CPU prediction in fp32 (no bf16, --precision fp32, int8)

Every CPU mode also runs a BERT classifier's last layer for the first token only (`first_token`).

Nothing outside this package reaches into its modules: what the rest of textfit uses is named here.

    accel.cpu_kind(), accel.describe_cpu()      # what this CPU's kernels run (bf16, AMX), one line for logs
    accel.governor_for(device, processes)      # the thread governor (ThreadGovernor) for CPU training
    with accel.steady(model): ...              # the same bits whatever the thread count; accel.release(model)
    accel.settings()                           # the off switches (Settings), read once from the environment

Each fast path has a PyTorch fallback and an off switch (TEXTFIT_FUSED_ATTENTION=0, TEXTFIT_FUSED_DROPOUT=0,
TEXTFIT_MALLOC_TUNING=0, TEXTFIT_FIRST_TOKEN=0, and TEXTFIT_CPU_BF16=0 for bf16 and its kernels; see
`Settings`); the C kernels are PyTorch custom operators (`torch.ops.textfit.*`). On other devices `enable`
changes nothing.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

import torch

from textfit.accel import attention, cpu, dropout, first_token, inference, training
from textfit.accel.cpu import CpuKind
from textfit.accel.steady import release, steady
from textfit.accel.switches import Settings, settings
from textfit.accel.threads import ThreadGovernor, governor_for
from textfit.errors import UsageError


def cpu_kind() -> CpuKind:
    """What this CPU's kernels run (cpu.kind, looked up at each call so that a test's stand-in reaches it)."""
    return cpu.kind()


def describe_cpu() -> str:
    """One line for logs: the CPU kind, as cpu.describe says it."""
    return cpu.describe()


_ALLOCATOR_TUNED = False


def enable(model: Any, mode: str, device: torch.device | None = None) -> Any:
    """Make `model` fast for `mode` ("train", "infer" or "fp32") on `device` (default: the model's own)."""
    device = device or next(model.parameters()).device
    if device.type != "cpu":
        return model
    tune_allocator()
    first_token.install(model)
    if mode == "train":
        training.register()
        if hasattr(model, "set_attn_implementation"):
            try:
                model.set_attn_implementation(training.NAME)
            except (ValueError, NotImplementedError):
                pass  # an architecture that takes no attention functions keeps its own
        dropout.use_fast_dropout(model)
        return model
    if mode == "infer":
        return inference.for_cpu_inference(model) if bf16_supported(device) else model
    if mode == "fp32":
        return model
    raise ValueError(f"accel.enable: unknown mode {mode!r}")


DEVICES = ("auto", "cuda", "mps", "cpu")


def pick_device(name: str = "auto") -> str:
    """--device: auto is a CUDA GPU, else Apple's GPU (MPS, fp32 there; untested where no Mac is at hand),
    else the CPU; a device asked for that is not there is one line."""
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if name not in DEVICES:
        raise UsageError(f"--device {name}: choose one of {', '.join(DEVICES)}")
    if name == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise UsageError(
            f"--device {name}: no {name.upper()} device is visible to PyTorch here; pass --device auto or cpu"
        )
    return name


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu.kind().bf16  # what the kernels run, under ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY too
    return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for 'auto', 'bf16', 'fp16' or 'fp32' on this device (None: plain fp32)."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if bf16_supported(device):
            return torch.bfloat16
        return torch.float16 if device.type == "cuda" else None
    return torch.bfloat16 if precision == "bf16" else torch.float16


def first_token_only(model: Any) -> Any:
    """A context in which the encoder's own calls compute the last layer for the first token alone
    (`first_token.only`; nothing where `enable` did not install it)."""
    return first_token.only(model)


def fused_attention_unavailable() -> str | None:
    """None when the fused attention kernel runs on this machine, else why not."""
    return attention.unavailable()


def tune_allocator() -> bool:
    """Keep freed memory in the process for reuse instead of giving large blocks back to the OS.

    glibc serves each allocation above its mmap threshold with a fresh mapping and unmaps it when
    freed, so every large activation pays a page fault per 4 KiB page it touches. This is what
    preloading jemalloc or tcmalloc does for PyTorch on CPUs, done with glibc's own mallopt, once per
    process (measured in benchmarks/RESULTS.md). Returns whether it applied."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if not sys.platform.startswith("linux") or not settings().malloc_tuning:
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    # Not glibc (musl has a mallopt that does nothing): the calls are harmless.
    _ALLOCATOR_TUNED = bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))
    return _ALLOCATOR_TUNED


def trim_allocator() -> None:
    """Give the memory freed since the last call back to the OS (glibc's malloc_trim), where
    `tune_allocator` keeps it: between the chunks of a long prediction, so that fragments freed by one
    chunk are not kept for the rest of the file. Measured (benchmarks/RESULTS.md, bench_scale): 812 MB ->
    799 MB peak at 100k rows, a small part of the rise over the one-chunk figure (679 MB). Elsewhere a no-op."""
    if not _ALLOCATOR_TUNED:
        return
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


__all__ = [
    "DEVICES",
    "CpuKind",
    "Settings",
    "ThreadGovernor",
    "autocast_dtype",
    "bf16_supported",
    "cpu",
    "cpu_kind",
    "describe_cpu",
    "enable",
    "first_token_only",
    "fused_attention_unavailable",
    "governor_for",
    "pick_device",
    "release",
    "settings",
    "steady",
    "trim_allocator",
    "tune_allocator",
]
