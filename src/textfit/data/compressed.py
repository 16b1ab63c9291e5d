"""Files compressed as a whole, read by their last extension: `.gz`, `.bz2`, `.xz` (the standard library's
decompressors) and `.zst` (zstandard's, where it is installed).

    compression("tickets.csv.gz")      # "gzip" (pandas' name, so pandas' readers infer the same), or None
    raw = read_raw("tickets.csv.gz")   # the decompressed bytes; UsageError for a file cut short or corrupt

pandas' own readers decompress by the same extensions (`compression="infer"`), which the chunked readers
use; these helpers serve the readers that take bytes (the whole-file reader, the quoting and encoding sample).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path
from typing import IO

from textfit.errors import UsageError, first_line

COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}
# what the decompressors raise for a file cut short (EOFError) or not compressed as its name says
DECOMPRESS_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, lzma.LZMAError)


def compression(path: str) -> str | None:
    """pandas' name of the compression that the file's last extension says (gzip, bz2, xz, zstd), or None."""
    return COMPRESSIONS.get(Path(path).suffix.lower())


def uncompressed(name: str) -> str:
    """The name without its compression extension (tickets.csv.gz -> tickets.csv); any other name as it is."""
    return str(Path(name).with_suffix("")) if compression(name) else name


def open_raw(path: str) -> IO[bytes]:
    """The file's bytes, decompressed where its extension says it is compressed."""
    kind = compression(path)
    if kind == "zstd":
        try:
            import zstandard
        except ImportError:
            raise UsageError(f"{path}: reading .zst files needs the zstandard package: pip install zstandard") from None
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)  # type: ignore[no-any-return]
    opener = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}.get(kind or "", open)
    return opener(path, "rb")  # type: ignore[no-any-return, operator]


def undecompressable(path: str, error: BaseException) -> UsageError:
    """The one-line error for a compressed file that cannot be read to its end."""
    return UsageError(
        f"{path}: cannot decompress as {compression(path)} ({first_line(error)}); check that the file is whole and "
        "that its extension names its compression"
    )


def read_raw(path: str, limit: int = -1) -> bytes:
    """The file's bytes (at most `limit` of them), decompressed where its extension says so."""
    if not compression(path):
        with open(path, "rb") as fh:
            return fh.read(limit)
    try:
        with open_raw(path) as fh:
            return fh.read(limit)
    except DECOMPRESS_ERRORS as e:
        raise undecompressable(path, e) from None
