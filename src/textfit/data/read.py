"""Files, folders and hub ids to frames: the first step of every reader.

    frames, fingerprint = load_frames(data="reviews.csv")   # {"train": Frame, ...}
    frame = read_one("holdout.csv")                          # one file or datasets folder

Local files are parsed with pandas as strings (TSV with quoting off, since SST-2 and MRPC hold
stray quotes; a UTF-8 BOM stripped; headerless CSVs detected; CSV, TSV and JSON also compressed
as a whole, .gz, .bz2, .xz or .zst, by the extension); `datasets` loads `save_to_disk`
folders and hub ids. Every problem raises `UsageError` with the file and the fix.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from textfit.data.compressed import compression, read_raw, uncompressed
from textfit.errors import UsageError, first_line
from textfit.hub import hub_reachable
from textfit.textfiles import decode

FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}
TEXT_NAMES = [
    "text",
    "sentence",
    "review",
    "content",
    "sentence1",
    "#1 string",
    "premise",
    "question1",
    "question",
    "document",
]
PAIR_OF = {
    "sentence1": "sentence2",
    "#1 string": "#2 string",
    "premise": "hypothesis",
    "question1": "question2",
    "question": "sentence",
}
LABEL_NAMES = ["label", "labels", "sentiment", "quality", "class", "target", "score", "rating"]
SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "dev": "validation",
    "test": "test",
}


@dataclass
class Frame:
    df: pd.DataFrame
    source: str  # file name or "hub-id[split]", for messages
    first_line: int  # the file line of the first row; 0 for rows of a data set (counted from 0)


def data_stem(path: str) -> str:
    """A data file's name without its format and compression extensions (reviews.csv.gz -> reviews), for the
    names of default output folders; a folder's or a hub id's last part as it is."""
    return Path(uncompressed(path.rstrip("/"))).stem


def file_format(path: str) -> str:
    """csv, tsv, json, jsonl or parquet, by the extension (the one before .gz, .bz2, .xz or .zst)."""
    suffix = Path(uncompressed(path)).suffix.lower()
    if suffix not in FORMATS or (FORMATS[suffix] == "parquet" and compression(path)):
        raise UsageError(
            f"{path}: unsupported format '{''.join(Path(path).suffixes[-2:]) or '(no extension)'}'; use a .csv, .tsv, "
            ".json, .jsonl or .parquet file (the first four also as .gz, .bz2, .xz or .zst), or a datasets folder"
        )
    return FORMATS[suffix]


def first_rows_are_data(df: pd.DataFrame) -> bool:
    """Guess whether a delimited file has no header row: its first row holds no known column
    name and either the file has one column (a list of texts) or the row repeats a value seen
    further down its column (like a label)."""
    known = set(TEXT_NAMES) | set(PAIR_OF.values()) | set(LABEL_NAMES)
    first = [str(v).strip().lower() for v in df.iloc[0]]
    if any(v in known for v in first):
        return False
    if df.shape[1] == 1:  # a plain list of texts, one per line
        return True
    body = df.iloc[1:201]
    return any(str(df.iloc[0, j]) in set(body.iloc[:, j].astype(str)) for j in range(df.shape[1]))


def quoted_tsv(text: str) -> bool:
    """Whether a TSV is written with standard quoting that matters: it parses strictly as quoted CSV
    with tabs, every row as wide as the first, and some quoted field holds a tab, a newline or a quote.
    SST-2 and MRPC, whose quotes are stray characters of the text, fail this and are read quote-free."""
    try:
        rows = [r for r in csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_MINIMAL, strict=True) if r]
    except csv.Error:
        return False
    if not rows or any(len(r) != len(rows[0]) for r in rows):
        return False
    return any("\t" in c or "\n" in c or '"' in c for r in rows for c in r)


QUOTING = ("auto", "none", "standard")


def _read_delimited(path: str, text: str, fmt: str, headerless: bool | None, quoting: str = "auto") -> Frame:
    sep = "\t" if fmt == "tsv" else ","
    # TSVs are read with quoting off first: SST-2 and MRPC hold stray quotes. A TSV that does not parse
    # that way is read again with standard quoting (fields in quotes may hold tabs and newlines).
    # --quoting none or standard forces one way, for CSVs too.
    tries = [csv.QUOTE_NONE, csv.QUOTE_MINIMAL] if fmt == "tsv" else [csv.QUOTE_MINIMAL]
    if quoting != "auto":
        tries = [csv.QUOTE_NONE if quoting == "none" else csv.QUOTE_MINIMAL]
    elif fmt == "tsv" and '"' in text and quoted_tsv(text):
        tries = [csv.QUOTE_MINIMAL]
        print(f"textfit: {path}: read with quoted fields (quotes hold tabs, newlines or quotes)", file=sys.stderr)
    for n, mode in enumerate(tries):
        try:
            df = pd.read_csv(io.StringIO(text), sep=sep, quoting=mode, header=None, dtype=str, keep_default_na=False)
            if n:
                print(
                    f"textfit: {path}: read with quoted fields (it does not parse with quotes as plain text)",
                    file=sys.stderr,
                )
            break
        except pd.errors.ParserError as e:
            if n == len(tries) - 1:
                last = str(e).strip().splitlines()[-1]
                other = "standard" if quoting == "none" else "none"
                raise UsageError(
                    f"{path}: cannot parse as {fmt.upper()} ({last}); check the delimiter and quotes"
                    + (f", or pass --quoting {other}" if quoting != "auto" else "")
                ) from None
    if headerless is None:
        headerless = len(df) > 1 and first_rows_are_data(df)
    if headerless:
        return Frame(df, path, 1)
    if len(df) < 2:
        raise UsageError(f"{path}: the file has a header but no rows")
    header = [str(c).strip() for c in df.iloc[0]]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise UsageError(
            f"{path}: the column name {repeated[0]!r} appears twice in the header (columns "
            f"{header.index(repeated[0]) + 1} "
            f"and {header.index(repeated[0], header.index(repeated[0]) + 1) + 1}); rename one of them"
        )
    df = df.iloc[1:].reset_index(drop=True)
    df.columns = header
    return Frame(df, path, 2)


def read_table(path: str, encoding: str = "utf-8", headerless: bool | None = None, quoting: str = "auto") -> Frame:
    """One local file, every cell a string (JSON and Parquet keep their types); `quoting`: how a CSV or
    TSV's quotes are read (auto: see `_read_delimited`)."""
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{path}: is a folder; pass a file, or a folder written by datasets.save_to_disk")
    fmt = file_format(path)
    if fmt == "parquet":
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises many types for a bad file
            raise UsageError(f"{path}: cannot read as Parquet ({str(e).splitlines()[0]})") from None
        if df.empty:
            raise UsageError(f"{path}: the file has no rows")
        return Frame(df, path, 0)
    text = decode(path, read_raw(path), encoding)
    if not text.strip():
        raise UsageError(f"{path}: the file is empty")
    if fmt in ("json", "jsonl"):
        lines = fmt == "jsonl" or not text.lstrip().startswith(("[", '{"data"', '{ "data"'))
        try:
            df = pd.read_json(io.StringIO(text), lines=lines, dtype=False)
        except ValueError as e:
            kind = "JSON lines" if lines else "JSON"
            raise UsageError(
                f"{path}: cannot read as {kind} ({str(e).splitlines()[0]}); expect one object per line or a list of "
                "objects"
            ) from None
        if df.empty:
            raise UsageError(f"{path}: the file has no rows")
        return Frame(df, path, 1)
    return _read_delimited(path, text, fmt, headerless, quoting)


def frames_from_datasets(obj: Any, source: str) -> dict[str, Frame]:
    """A datasets Dataset or DatasetDict as {split: Frame}; ClassLabel ints become their names."""
    import datasets

    items = obj.items() if isinstance(obj, datasets.DatasetDict) else [("train", obj)]
    out = {}
    for name, ds in items:
        key = SPLIT_ALIASES.get(name.lower())
        if key is None:
            continue  # e.g. imdb's "unsupervised"
        df = ds.to_pandas()
        for col, feat in ds.features.items():
            if isinstance(feat, datasets.ClassLabel):
                df[col] = [feat.names[v] if 0 <= v < len(feat.names) else None for v in df[col]]
        out[key] = Frame(df, f"{source}[{name}]", 0)
    return out


def _load_from_disk(folder: str) -> Any:
    import datasets

    try:
        return datasets.load_from_disk(folder)
    except FileNotFoundError:
        raise UsageError(
            f"{folder}: a folder, but not one written by datasets.save_to_disk; pass a data file instead"
        ) from None


def read_one(path: str, encoding: str = "utf-8", headerless: bool | None = None, quoting: str = "auto") -> Frame:
    """One file, or the test split (else the first) of a datasets folder: what eval and predict read."""
    if Path(path).is_dir():
        frames = frames_from_datasets(_load_from_disk(path), path)
        if not frames:
            raise UsageError(f"{path}: the data set has no train, validation or test split")
        return frames["test"] if "test" in frames else next(iter(frames.values()))
    return read_table(path, encoding, headerless, quoting)


def fingerprint(paths: list[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode())
        if os.path.isfile(p):
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def load_hub(name: str, config: str | None) -> tuple[dict[str, Frame], str]:
    import datasets

    shown = name
    if " " in name.strip() and config is None:  # "glue mrpc", as load_dataset("glue", "mrpc")
        name, config = name.split(None, 1)
    if not hub_reachable():
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the hub cache may still hold it
    try:
        obj = datasets.load_dataset(name, config)
    except Exception as e:
        raise UsageError(
            f"--data {shown}: not a local file or folder, and the hub data set could not be loaded "
            f"({first_line(e)[:200]}); "
            "check the name and your connection, or pass a local file"
        ) from None
    frames = frames_from_datasets(obj, name)
    if not frames:
        raise UsageError(f"--data {name}: the data set has no train, validation or test split")
    parts = getattr(obj, "values", lambda: [obj])()
    return frames, f"{name}:{config or ''}:" + ":".join(getattr(d, "_fingerprint", "") for d in parts)


def load_frames(
    data: str | None,
    data_config: str | None = None,
    train: str | None = None,
    validation: str | None = None,
    test: str | None = None,
    encoding: str = "utf-8",
    headerless: bool | None = None,
    quoting: str = "auto",
) -> tuple[dict[str, Frame], str]:
    """Every split the user gave, as {split: Frame}, and a fingerprint of the data."""
    if data is not None and Path(data).is_dir():
        obj = _load_from_disk(data)
        return frames_from_datasets(obj, data), str(getattr(obj, "_fingerprint", None) or fingerprint([data]))
    if data is not None and not os.path.exists(data) and Path(data).suffix == "":
        return load_hub(data, data_config)  # a name like "imdb" or "user/name"
    paths = {"train": data or train, "validation": validation, "test": test}
    frames = {
        split: read_table(path, encoding, headerless, quoting) for split, path in paths.items() if path is not None
    }
    return frames, fingerprint([p for p in paths.values() if p])
