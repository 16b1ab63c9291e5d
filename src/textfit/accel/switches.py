"""The off switches of the CPU fast paths, read from the environment in one place: `settings()`.

    accel.settings().fused_attention   # False under TEXTFIT_FUSED_ATTENTION=0

Each switch is on unless its variable is exactly "0". They are read once per process, at the first call
(as oneDNN and ATen read their own variables once); a test that changes one calls `settings.cache_clear()`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """What the TEXTFIT_* switches turn off; True: the fast path runs where the machine allows it."""

    fused_attention: bool = True
    """TEXTFIT_FUSED_ATTENTION=0: PyTorch's SDPA instead of the AMX attention kernel (attention.py)."""
    fused_dropout: bool = True
    """TEXTFIT_FUSED_DROPOUT=0: PyTorch's dropout instead of the fused C kernel (dropout.py)."""
    malloc_tuning: bool = True
    """TEXTFIT_MALLOC_TUNING=0: glibc gives large freed blocks back to the OS as it does by default
    (`tune_allocator`)."""
    first_token: bool = True
    """TEXTFIT_FIRST_TOKEN=0: a BERT classifier's last layer runs for every position, not the first token
    alone (first_token.py)."""
    cpu_bf16: bool = True
    """TEXTFIT_CPU_BF16=0: no bf16 on the CPU, and none of the kernels built for it (the AVX-512 bf16
    dropout, the AMX attention), even where the CPU and the oneDNN/ATen caps have it (cpu.py)."""

    @classmethod
    def from_environment(cls) -> Settings:
        def on(name: str) -> bool:
            return os.environ.get(name) != "0"

        return cls(
            fused_attention=on("TEXTFIT_FUSED_ATTENTION"),
            fused_dropout=on("TEXTFIT_FUSED_DROPOUT"),
            malloc_tuning=on("TEXTFIT_MALLOC_TUNING"),
            first_token=on("TEXTFIT_FIRST_TOKEN"),
            cpu_bf16=on("TEXTFIT_CPU_BF16"),
        )


@functools.lru_cache(maxsize=1)
def settings() -> Settings:
    """This process's switches, read from the environment once."""
    return Settings.from_environment()
