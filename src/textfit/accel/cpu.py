"""What this CPU's kernels can do, not only what CPUID says: `kind()`.

    accel.cpu.kind()   # CpuKind(name='avx512-bf16', avx512=True, bf16=True, amx=False, why='...')

CPUID (PyTorch's `torch.cpu._is_*_supported`) names the instructions the chip has; the kernels that
run are chosen by oneDNN (capped by `ONEDNN_MAX_CPU_ISA` / `DNNL_MAX_CPU_ISA`) and by ATen's
vectorised code (capped by `ATEN_CPU_CAPABILITY`, read back with `torch.backends.cpu.get_cpu_capability`).
Under `ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2` a bf16 machine runs the AVX2 kernels, and
bf16 there is emulated: casting to bf16 made training 6x slower than the Trainer's fp32 (Zen 4). So
textfit uses bf16, its AVX-512 bf16 kernels and its AMX attention only where both caps let them run;
the same two variables make any machine take, and prove, the path of a CPU without bf16 (add
`MKL_ENABLE_INSTRUCTIONS=AVX2` for AVX2's speed too: PyTorch's fp32 matrix products run on MKL, which
ignores oneDNN's cap). `TEXTFIT_CPU_BF16=0` turns bf16 and the kernels built for it off alone.

Library check: neither PyTorch nor oneDNN exposes oneDNN's effective ISA to Python (oneDNN's
`dnnl_get_effective_cpu_isa` is not exported by libtorch), so the cap is read from the variable
oneDNN itself reads, with oneDNN's names and order.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch

from textfit.accel.switches import settings

# oneDNN's `dnnl_cpu_isa_t` names in increasing order (ONEDNN_MAX_CPU_ISA takes these, any case),
# with the older aliases oneDNN still accepts.
ONEDNN_ISAS = [
    "sse41",
    "avx",
    "avx2",
    "avx2_vnni",
    "avx2_vnni_2",
    "avx512_core",
    "avx512_core_vnni",
    "avx512_core_bf16",
    "avx10_1_512",
    "avx10_1_512_amx",
    "avx10_1_512_amx_fp16",
    "avx10_2_512",
    "avx10_2_512_amx_2",
]
ALIASES = {
    "avx512_core_fp16": "avx10_1_512",
    "avx512_core_amx": "avx10_1_512_amx",
    "avx512_core_amx_fp16": "avx10_1_512_amx_fp16",
}


@dataclass(frozen=True)
class CpuKind:
    """name: "amx", "avx512-bf16", "avx512", "avx2" or "other" (what the kernels will run);
    why: what capped it below the chip, or "" where nothing did."""

    name: str
    avx512: bool
    bf16: bool
    amx: bool
    why: str = ""


def onednn_cap() -> int | None:
    """The index in ONEDNN_ISAS of oneDNN's cap, or None where no cap is set (or it is ALL/DEFAULT)."""
    raw = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    name = ALIASES.get(raw.strip().lower(), raw.strip().lower())
    return ONEDNN_ISAS.index(name) if name in ONEDNN_ISAS else None


def _allowed(level: str, cap: int | None) -> bool:
    return cap is None or cap >= ONEDNN_ISAS.index(level)


@functools.lru_cache(maxsize=1)
def kind() -> CpuKind:
    """This process's CPU kind (the caps are read once: oneDNN and ATen read them once too)."""

    def has(name: str) -> bool:
        return bool(getattr(torch.cpu, name, lambda: False)())

    aten = torch.backends.cpu.get_cpu_capability()  # "AVX512", "AVX2", "DEFAULT", ... after ATEN_CPU_CAPABILITY
    cap = onednn_cap()
    why = []
    if cap is not None:
        why.append(f"ONEDNN_MAX_CPU_ISA={ONEDNN_ISAS[cap].upper()}")
    if aten != "AVX512" and has("_is_avx512_supported"):
        why.append(f"ATen's kernels are {aten}")
    avx512 = has("_is_avx512_supported") and aten == "AVX512" and _allowed("avx512_core", cap)
    bf16 = (
        avx512
        and (has("_is_avx512_bf16_supported") or has("_is_amx_tile_supported"))
        and _allowed("avx512_core_bf16", cap)
    )
    if bf16 and not settings().cpu_bf16:
        bf16 = False
        why.append("TEXTFIT_CPU_BF16=0")
    amx = bf16 and has("_is_amx_tile_supported") and _allowed("avx10_1_512_amx", cap)
    avx2 = has("_is_avx2_supported") and aten in ("AVX2", "AVX512") and _allowed("avx2", cap)
    name = "amx" if amx else "avx512-bf16" if bf16 else "avx512" if avx512 else "avx2" if avx2 else "other"
    return CpuKind(name, avx512, bf16, amx, "; ".join(why))


def describe() -> str:
    """One line for logs and messages: the kind, and what capped it."""
    k = kind()
    return f"{k.name} ({k.why})" if k.why else k.name
