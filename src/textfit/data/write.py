"""Prediction files written in parts and joined: CSV, TSV, JSON lines and Parquet, by extension.

    fmt = output_format("scored.parquet")                 # UsageError for another extension
    write_part(df, work / "part-000003", fmt, header=False)  # whole or absent: written aside, then renamed
    join_parts(parts, Path("scored.parquet"), fmt, work / "joined")

pandas writes CSV and TSV (QUOTE_MINIMAL, "\\n" line ends), `json.dumps` JSON lines (nested values kept,
numpy values as Python's), pyarrow Parquet; parts are joined byte for byte (CSV, TSV, JSON lines) or row
group by row group (Parquet), so a file joined from resumed parts is the file an uninterrupted run writes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd

from textfit.errors import UsageError

OUTPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}


def output_format(path: str, flag: str = "--output") -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise UsageError(f"{flag} {path}: unsupported format; use a .csv, .tsv, .jsonl or .parquet file")
    return OUTPUT_FORMATS[suffix]


def write_part(df: pd.DataFrame, path: Path, fmt: str, header: bool) -> None:
    """One finished part: written beside its name, then renamed (a part that exists is whole)."""
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
    elif fmt == "jsonl":
        with open(tmp, "w", encoding="utf-8") as fh:
            for rec in df.to_dict("records"):
                fh.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
    else:
        df.to_csv(tmp, index=False, header=header, sep="\t" if fmt == "tsv" else ",", lineterminator="\n")
    os.replace(tmp, path)


def join_parts(parts: list[Path], out: Path, fmt: str, scratch: Path, headers: bool = False) -> None:
    """The parts, in order, as one file renamed into place; `headers`: every CSV/TSV part has a header
    line, kept from the first part only (output parts: only the first part has one)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        tables = (pq.read_table(p) for p in parts)
        writer = None
        for t in tables:
            if writer is None:
                writer = pq.ParquetWriter(scratch, t.schema)
            elif t.num_rows == 0:
                continue
            writer.write_table(t.cast(writer.schema) if t.schema != writer.schema else t)
        if writer is not None:
            writer.close()
    else:
        with open(scratch, "wb") as dst:
            for k, p in enumerate(parts):
                with open(p, "rb") as src:
                    if headers and k and fmt in ("csv", "tsv"):
                        src.readline()
                    shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(scratch, out)


def count_part(part: Path, fmt: str) -> int:
    """Rows in a finished part (a resumed run counts its rejects again for the summary)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(part).metadata.num_rows)
    if fmt == "jsonl":
        with open(part, "rb") as fh:
            return sum(1 for _ in fh)
    return len(pd.read_csv(part, sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=False))
