"""Building textfit's C kernels (`attention.c`, `dropout.c`) on the user's machine, once.

Each is compiled with the machine's C compiler ($CC, cc, gcc or clang) into ~/.cache/textfit (or
$TEXTFIT_CACHE, or $XDG_CACHE_HOME/textfit), named by a hash of the source, compiler and flags, and
loaded with ctypes; the callers fall back to PyTorch where a kernel cannot be built or run.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("TEXTFIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "textfit"
    )
    return Path(root)


def x86_64_linux() -> bool:
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def build(source: Path, flags: list[str]) -> Path:
    """`source` compiled into a shared library with `flags`, built once into the cache folder
    (keyed by the source, compiler and flags); raises where it cannot be built."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or clang) found")
    key = hashlib.sha256(source.read_bytes() + " ".join([cc, *flags]).encode()).hexdigest()[:16]
    target = cache_dir() / f"{source.stem}-{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        subprocess.run([cc, *flags, "-o", str(built), str(source)], check=True, capture_output=True, timeout=120)
        os.replace(built, target)  # atomic: another process may be building the same file
    return target
