"""Files read in chunks of rows, so that memory stays flat whatever the number of rows.

    for frame in read_chunks("tickets.csv", chunk_rows=10_000):   # Frames, every cell a string
        ...                                                        # frame.first_line: the file line of row 0
    total = count_rows("tickets.parquet")                          # from the metadata; None where not cheap

CSV and TSV: pandas' chunked C reader (`read_csv(chunksize=...)`), with the same rules as the whole-file
reader (`read.read_table`): quotes off for TSVs unless a sample of the file shows quoted fields, a UTF-8
BOM stripped, headerless files detected on the first chunk. JSON lines: pandas' chunked `read_json`.
CSV, TSV and JSON files compressed as a whole (.gz, .bz2, .xz, .zst) are decompressed as they are read.
Parquet: pyarrow's `ParquetFile.iter_batches`. A JSON array and a datasets folder cannot be read in
pieces: they are read whole and handed on in chunks (said in `--help`).
"""

from __future__ import annotations

import codecs
import csv
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from textfit.data.compressed import DECOMPRESS_ERRORS, compression, read_raw, undecompressable
from textfit.data.read import Frame, file_format, first_rows_are_data, quoted_tsv, read_one
from textfit.errors import UsageError
from textfit.textfiles import codec, decode

SAMPLE_BYTES = 1 << 20  # what the quoting and encoding checks look at before the chunks are read


def count_rows(path: str) -> int | None:
    """The number of rows where the format says it for free (Parquet's metadata), else None."""
    if os.path.isfile(path) and Path(path).suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except Exception:  # a bad file is reported by the reader, with its message
            return None
    return None


def _sample(path: str, encoding: str) -> str:
    """The first MiB, decoded (a multi-byte character cut at its end is left out); a bad byte there is
    reported as the whole-file reader reports it, with charset-normalizer's guess."""
    raw = read_raw(path, SAMPLE_BYTES)
    enc = codec(encoding)
    try:
        return codecs.getincrementaldecoder(enc)().decode(raw, final=len(raw) < SAMPLE_BYTES)
    except LookupError:
        decode(path, raw, encoding)  # raises the unknown-encoding message
        raise
    except UnicodeDecodeError:
        decode(path, raw, encoding)  # raises with the offset and a guess
        raise


def read_chunks(
    path: str, chunk_rows: int, encoding: str = "utf-8", headerless: bool | None = None, quoting: str = "auto"
) -> Iterator[Frame]:
    """The rows of one file (or datasets folder) as Frames of at most `chunk_rows` rows, in order."""
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    fmt = "folder" if os.path.isdir(path) else file_format(path)
    if fmt in ("csv", "tsv"):
        yield from _exact(_delimited_chunks(path, fmt, chunk_rows, encoding, headerless, quoting), chunk_rows)
    elif fmt == "jsonl" or (fmt == "json" and not _sample(path, encoding).lstrip().startswith(("[", '{"data"'))):
        yield from _jsonl_chunks(path, chunk_rows, encoding)
    elif fmt == "parquet":
        yield from _parquet_chunks(path, chunk_rows)
    else:  # a JSON array or a datasets folder: read whole
        frame = read_one(path, encoding, headerless, quoting)
        for start in range(0, len(frame.df), chunk_rows):
            part = frame.df.iloc[start : start + chunk_rows].reset_index(drop=True)
            yield Frame(part, frame.source, frame.first_line + start)


def _delimited_chunks(
    path: str, fmt: str, chunk_rows: int, encoding: str, headerless: bool | None, quoting: str
) -> Iterator[Frame]:
    sample = _sample(path, encoding)
    if not sample.strip():
        raise UsageError(f"{path}: the file is empty")
    mode = csv.QUOTE_MINIMAL
    if quoting == "none" or (quoting == "auto" and fmt == "tsv" and not ('"' in sample and quoted_tsv(sample))):
        mode = csv.QUOTE_NONE
    enc = codec(encoding)
    reader = pd.read_csv(
        path,
        sep="\t" if fmt == "tsv" else ",",
        quoting=mode,
        header=None,
        dtype=str,
        keep_default_na=False,
        encoding=enc,
        chunksize=chunk_rows,
        skip_blank_lines=True,
    )
    header: list[str] | None = None
    line = 1  # the file line of the next row (quoted fields that hold newlines make it a row count)
    try:
        for n, df in enumerate(reader):
            if n == 0:
                if headerless is None:
                    headerless = len(df) > 1 and first_rows_are_data(df)
                if not headerless:
                    header = [str(c).strip() for c in df.iloc[0]]
                    repeated = sorted({c for c in header if header.count(c) > 1})
                    if repeated:
                        first = header.index(repeated[0])
                        raise UsageError(
                            f"{path}: the column name {repeated[0]!r} appears twice in the header (columns "
                            f"{first + 1} and {header.index(repeated[0], first + 1) + 1}); rename one of them"
                        )
                    df = df.iloc[1:].reset_index(drop=True)
                    line = 2
                    if df.empty:
                        raise UsageError(f"{path}: the file has a header but no rows")
            if header is not None:
                df.columns = header
            yield Frame(df, path, line)
            line += len(df)
    except pd.errors.ParserError as e:
        last = str(e).strip().splitlines()[-1]
        raise UsageError(
            f"{path}: cannot parse as {fmt.upper()} ({last}); check the delimiter and quotes, or pass --quoting "
            + ("standard" if mode == csv.QUOTE_NONE else "none")
        ) from None
    except UnicodeDecodeError as e:
        raise UsageError(
            f"{path}: not valid {encoding} after line {line} ({e.reason}); pass --encoding with the file's encoding"
        ) from None
    except DECOMPRESS_ERRORS as e:  # a compressed file cut short or corrupt past the sample
        if not compression(path):
            raise
        raise undecompressable(path, e) from None


def _jsonl_chunks(path: str, chunk_rows: int, encoding: str) -> Iterator[Frame]:
    if not _sample(path, encoding).strip():
        raise UsageError(f"{path}: the file is empty")
    enc = codec(encoding)
    line = 1
    try:
        with pd.read_json(path, lines=True, dtype=False, chunksize=chunk_rows, encoding=enc) as reader:
            for df in reader:
                yield Frame(df.reset_index(drop=True), path, line)
                line += len(df)
    except ValueError as e:
        raise UsageError(
            f"{path}: cannot read as JSON lines after line {line} ({str(e).splitlines()[0]}); expect one object "
            "per line"
        ) from None
    except UnicodeDecodeError as e:
        raise UsageError(
            f"{path}: not valid {encoding} after line {line} ({e.reason}); pass --encoding with the file's encoding"
        ) from None
    except DECOMPRESS_ERRORS as e:
        if not compression(path):
            raise
        raise undecompressable(path, e) from None


def _parquet_chunks(path: str, chunk_rows: int) -> Iterator[Frame]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises many types for a bad file
        raise UsageError(f"{path}: cannot read as Parquet ({str(e).splitlines()[0]})") from None
    if pf.metadata.num_rows == 0:
        raise UsageError(f"{path}: the file has no rows")
    row = 0
    for batch in pf.iter_batches(batch_size=chunk_rows):
        yield Frame(batch.to_pandas(), path, row)
        row += batch.num_rows


def _exact(frames: Iterator[Frame], chunk_rows: int) -> Iterator[Frame]:
    """Frames of exactly `chunk_rows` rows (the last one shorter): the reader's first chunk loses its header
    row, and the chunks must fall where another engine's do (`ray_engine`: blocks of `chunk_rows`)."""
    carry: Frame | None = None
    for frame in frames:
        if carry is not None:
            frame = Frame(pd.concat([carry.df, frame.df], ignore_index=True), frame.source, carry.first_line)
        start = 0
        while len(frame.df) - start >= chunk_rows:
            part = frame.df.iloc[start : start + chunk_rows].reset_index(drop=True)
            yield Frame(part, frame.source, frame.first_line + start)
            start += chunk_rows
        rest = frame.df.iloc[start:].reset_index(drop=True)
        carry = Frame(rest, frame.source, frame.first_line + start) if len(rest) else None
    if carry is not None:
        yield carry
