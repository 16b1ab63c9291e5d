"""Fused attention for bf16 prediction on x86-64 CPUs with AMX (Intel Sapphire Rapids and later).

Measured against PyTorch's CPU flash attention (SDPA), which spends most of its time outside the
matrix products for narrow heads such as MiniLM's 32-wide ones (benchmarks/RESULTS.md has the
figures); SDPA stays the path everywhere this kernel does not run. The kernel (`attention.c`, next to this
file) computes each (text, head) pair with AMX tile products for q k^T and p v and an AVX-512 softmax
in base 2 between them, and reads q, k and v in the (batch, position, head, dim) layout the model's
projections produce and writes the output in the layout the next layer reads, so no transposed copies.
The (text, head) pairs are shared among PyTorch's own OpenMP threads: a pool of Python threads was slower,
competing for the cores with PyTorch's workers, which spin after each operator.

It is C compiled on first use with the machine's C compiler (gcc or clang, a second or so) into
~/.cache/textfit (or $TEXTFIT_CACHE; see `native`), registered as the PyTorch operator
`torch.ops.textfit.fused_attention` (so `torch.compile` and export see one opaque op), and used
only when everything it needs is there: Linux, x86-64, AMX and AVX-512 bf16, a compiler, bf16 inputs,
head sizes that are multiples of 32 (up to 256), self-attention with a key-padding mask or none.
Anything else, and TEXTFIT_FUSED_ATTENTION=0, takes PyTorch's SDPA instead.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from textfit.accel import cpu
from textfit.accel.masks import key_padding_mask
from textfit.accel.native import build, x86_64_linux
from textfit.accel.switches import settings

NAME = "textfit_cpu_infer"
SOURCE = Path(__file__).with_name("attention.c")
FLAGS = [
    "-O3",
    "-shared",
    "-fPIC",
    "-mavx512f",
    "-mavx512bw",
    "-mavx512vl",
    "-mavx512dq",
    "-mavx512bf16",
    "-mamx-tile",
    "-mamx-bf16",
    "-mfma",
]

SMALL = 1 << 16  # (text, head) pairs x length^2 below which one thread computes everything

_lock = threading.Lock()
_state: dict[str, Any] = {}


def _cpu_ok() -> str | None:
    """Why this machine cannot run the kernel, or None."""
    if not settings().fused_attention:
        return "turned off (TEXTFIT_FUSED_ATTENTION=0)"
    if not x86_64_linux():
        return "not x86-64 Linux"
    if not cpu.kind().amx:
        return f"the CPU's kernels have no AMX or no AVX-512 bf16 (kind: {cpu.describe()})"
    return None


def kernel() -> Any | None:
    """The loaded kernel (a ctypes function), or None where it cannot run here (see `unavailable`)."""
    if "fn" in _state:  # decided already (no lock: this runs for every attention call)
        return _state["fn"]
    with _lock:
        if "fn" in _state:
            return _state["fn"]
        fn, why = None, _cpu_ok()
        if why is None:
            try:
                lib = ctypes.CDLL(str(build(SOURCE, FLAGS)))
                if lib.textfit_amx_init() != 0:
                    raise RuntimeError("the kernel refused AMX (arch_prctl)")
                fn = lib.textfit_attention
                i64 = ctypes.c_int64
                fn.argtypes = [ctypes.c_void_p] * 5 + [i64] * 17 + [ctypes.c_float, i64, i64]
                fn.restype = ctypes.c_int
                omp = _openmp()
                if omp is not None:
                    omp_args: Any = [ctypes.c_void_p] * 5 + [i64] * 17 + [ctypes.c_float, i64] + [ctypes.c_void_p] * 3
                    lib.textfit_attention_omp.argtypes = omp_args
                    lib.textfit_attention_omp.restype = ctypes.c_int
                    _state["omp"] = (lib.textfit_attention_omp, omp)
            except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                why = f"could not build or load the kernel: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        _state.update(fn=fn, why=why)
        return fn


def unavailable() -> str | None:
    """None when the fused kernel runs here, else why not."""
    kernel()
    return _state["why"]


def _openmp() -> tuple[int, int, int] | None:
    """Addresses of GOMP_parallel, omp_get_thread_num and omp_get_num_threads in the OpenMP runtime
    PyTorch runs its operators on (its own libgomp, or libiomp5 / libomp, which provide the same
    entry points), found among the libraries this process has loaded; None where there is none."""
    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/" in line}
    except OSError:
        return None
    names = ("libgomp", "libiomp5", "libomp")
    found = sorted(
        (p for p in paths if os.path.basename(p).startswith(names) and ".so" in os.path.basename(p)),
        key=lambda p: not p.startswith(os.path.dirname(torch.__file__)),
    )  # PyTorch's own first
    for path in found:
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
            return tuple(
                ctypes.cast(getattr(lib, n), ctypes.c_void_p).value
                for n in ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")
            )  # type: ignore[return-value]
        except (OSError, AttributeError):
            continue
    return None


def _pool() -> ThreadPoolExecutor:
    n = max(1, torch.get_num_threads())
    if _state.get("threads") != n:
        _state["pool"] = ThreadPoolExecutor(n, thread_name_prefix="textfit-attention")
        _state["threads"] = n
    return _state["pool"]


def supports(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None) -> bool:
    """Whether `fused_attention` takes these inputs (else SDPA does)."""
    if query.device.type != "cpu" or torch.is_grad_enabled() or query.requires_grad:
        return False
    if not all(t.dtype == torch.bfloat16 and t.dim() == 4 and t.stride(-1) == 1 for t in (query, key, value)):
        return False
    b, h, length, d = query.shape
    if tuple(key.shape) != (b, h, length, d) or tuple(value.shape) != (b, h, length, d) or d % 32 or d > 256:
        return False
    if key.stride(2) % 2 or key.stride(2) * 16 > 2**31 - 1:
        return False
    if attention_mask is not None and (
        not attention_mask.dtype.is_floating_point  # additive masks only, not SDPA's bool ones
        or tuple(attention_mask.shape) not in ((b, 1, 1, length), (1, 1, 1, length))
    ):
        return False
    return kernel() is not None


@torch.library.custom_op("textfit::fused_attention", mutates_args=())
def _fused_attention_op(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, scaling: float
) -> torch.Tensor:
    return _run_kernel(query, key, value, mask, scaling)


@_fused_attention_op.register_fake
def _(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, scaling: float
) -> torch.Tensor:
    b, h, length, d = query.shape
    return query.new_empty(b, length, h, d)


def fused_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None, scaling: float
) -> torch.Tensor:
    """softmax(query key^T * scaling + mask) value for (batch, heads, length, head size) inputs,
    returned as (batch, length, heads, head size); the mask is additive per key, (batch|1, 1, 1, length).
    Call only where `supports` says so."""
    return torch.ops.textfit.fused_attention(query, key, value, attention_mask, float(scaling))


def _run_kernel(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None, scaling: float
) -> torch.Tensor:
    fn = kernel()
    b, h, length, d = query.shape
    out = torch.empty(b, length, h, d, dtype=query.dtype)
    mask = None
    if attention_mask is not None:
        mask = attention_mask.reshape(attention_mask.shape[0], length).float().expand(b, length).contiguous()
    args = (
        query.data_ptr(),
        key.data_ptr(),
        value.data_ptr(),
        out.data_ptr(),
        0 if mask is None else mask.data_ptr(),
        b,
        h,
        length,
        d,
        *query.stride()[:3],
        *key.stride()[:3],
        *value.stride()[:3],
        out.stride(0),
        out.stride(2),
        out.stride(1),
        length,
        float(scaling),
    )
    assert fn is not None, "fused_attention called where the kernel does not run"
    pairs = b * h
    # one thread for a few short texts (starting threads costs more), else every thread PyTorch uses
    workers = 1 if pairs * length * length < SMALL else min(max(1, torch.get_num_threads()), pairs)
    if workers == 1:
        codes = [fn(*args, 0, pairs)]
    elif "omp" in _state:  # on PyTorch's own OpenMP threads
        omp_fn, omp = _state["omp"]
        codes = [omp_fn(*args, workers, *omp)]
    else:  # ctypes lets go of the GIL: one C call per thread, each on its share of the (text, head) pairs
        cuts = [pairs * i // workers for i in range(workers + 1)]
        codes = list(_pool().map(lambda ab: fn(*args, ab[0], ab[1]), zip(cuts[:-1], cuts[1:])))
    if any(codes):
        raise RuntimeError(f"textfit fused attention failed (codes {codes})")
    return out


def cpu_inference_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function "textfit_cpu_infer": the fused kernel where it applies, else SDPA."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if not module.training and supports(query, key, value, attention_mask):
        return fused_attention(query, key, value, attention_mask, scaling), None
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


def use_fused_attention(model: Any) -> bool:
    """Switch a transformers model to "textfit_cpu_infer" when the kernel runs here and the model
    takes attention functions from transformers' AttentionInterface; returns whether it did."""
    if kernel() is None or not hasattr(model, "set_attn_implementation"):
        return False
    config = getattr(model, "config", None)
    heads, hidden = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
    head = getattr(config, "head_dim", None) or (hidden // heads if heads and hidden else None)
    if not head or head % 32 or head > 256 or getattr(config, "is_decoder", False):
        return False
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, cpu_inference_attention)
    AttentionMaskInterface.register(NAME, key_padding_mask)
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, NotImplementedError):
        return False
    return getattr(model.config, "_attn_implementation", None) == NAME
