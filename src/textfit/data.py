"""Data in: files, folders and hub ids to labelled splits, then to token ids and batches.

    splits, info = load_data(cfg)          # {"train": Split, "validation": Split, ...}
    enc = encode(tokenizer, split, 256)    # token ids per text, unpadded
    batches = LengthGroupedBatches(lengths, batch_size=16, seed=42)

Local files are parsed with pandas (TSV with quoting off, a UTF-8 BOM stripped, headerless
CSVs detected); `datasets` loads `save_to_disk` folders and hub ids. Every problem with
the user's data raises `UsageError` with the file, line and column and the fix.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from .config import TrainConfig, split_percentages
from .errors import UsageError
from .model import run_task

FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}
TEXT_NAMES = ["text", "sentence", "review", "content", "sentence1", "#1 string", "premise", "question1", "question", "document"]
PAIR_OF = {"sentence1": "sentence2", "#1 string": "#2 string", "premise": "hypothesis", "question1": "question2", "question": "sentence"}
EMPTY_TEXT_TOLERANCE = 0.001  # more empty texts than this share of a file is an error, fewer are dropped
LABEL_NAMES = ["label", "labels", "sentiment", "quality", "class", "target", "score", "rating"]
SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation", "test": "test"}


@dataclass
class Split:
    """One split: texts (and second texts for pairs), raw labels, and where each row came from."""

    source: str  # file name or "hub-id[split]", for messages
    texts: list[str]
    pairs: list[str] | None
    labels: list[Any]
    rows: list[int]  # line number in the file (or row index in a data set), for messages
    unit: str = "line"
    dropped: list[int] = field(default_factory=list)  # rows left out for an empty text
    raw_labels: list[str] = field(default_factory=list)  # labels as written, before normalising
    task: str = "classification"  # or "multi-label" (labels: tuples of names) or "regression" (floats)
    label_separator: str | None = None  # multi-label cells written as strings: what separates the labels


@dataclass
class DataInfo:
    text_column: str
    text_pair_column: str | None
    label_column: str
    label_names: list[str]
    label_values: list[Any]  # the raw label values, in id order
    fingerprint: str
    notes: list[str] = field(default_factory=list)
    split_rows: dict[str, list[int]] = field(default_factory=dict)
    task: str = "classification"
    label_separator: str | None = None


# ---------------------------------------------------------------- reading


def file_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"{path}: unsupported format '{suffix or '(no extension)'}'; use a .csv, .tsv, .json, .jsonl or .parquet file, or a datasets folder")
    return FORMATS[suffix]


def _decode(path: str, raw: bytes, encoding: str) -> str:
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return raw.decode(enc)
    except LookupError:
        raise UsageError(f"--encoding {encoding}: unknown encoding; use a Python codec name such as utf-8, gb18030 or latin-1") from None
    except UnicodeDecodeError as e:
        guess = None
        try:
            from charset_normalizer import from_bytes

            best = from_bytes(raw[:200_000]).best()
            guess = best.encoding if best else None
        except ImportError:
            pass
        hint = f"--encoding {guess}" if guess and guess != "utf_8" else "--encoding with the file's encoding (e.g. gb18030, latin-1)"
        raise UsageError(f"{path}: not valid {encoding} (byte 0x{raw[e.start]:02x} at offset {e.start}); pass {hint}") from None


def _first_rows_are_data(df: pd.DataFrame, known: set[str]) -> bool:
    """Guess whether a delimited file has no header row: its first row holds no known column
    name and either the file has one column (a list of texts) or the row repeats a value seen
    further down its column (like a label)."""
    first = [str(v).strip().lower() for v in df.iloc[0]]
    if any(v in known for v in first):
        return False
    if df.shape[1] == 1:  # a plain list of texts, one per line
        return True
    body = df.iloc[1:201]
    return any(str(df.iloc[0, j]) in set(body.iloc[:, j].astype(str)) for j in range(df.shape[1]))


def read_table(path: str, encoding: str, headerless: bool | None) -> tuple[pd.DataFrame, int]:
    """Read one local file as strings. Returns the frame and the file line of its first row."""
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
        return df, 0
    raw = Path(path).read_bytes()
    text = _decode(path, raw, encoding)
    if not text.strip():
        raise UsageError(f"{path}: the file is empty")
    if fmt in ("json", "jsonl"):
        lines = fmt == "jsonl" or not text.lstrip().startswith(("[", "{\"data\"", "{ \"data\""))
        try:
            df = pd.read_json(io.StringIO(text), lines=lines, dtype=False)
        except ValueError as e:
            raise UsageError(f"{path}: cannot read as {'JSON lines' if lines else 'JSON'} ({str(e).splitlines()[0]}); expect one object per line or a list of objects") from None
        if df.empty:
            raise UsageError(f"{path}: the file has no rows")
        return df, 1
    sep, quoting = ("\t", csv.QUOTE_NONE) if fmt == "tsv" else (",", csv.QUOTE_MINIMAL)
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, quoting=quoting, header=None, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as e:
        raise UsageError(f"{path}: cannot parse as {fmt.upper()} ({str(e).strip().splitlines()[-1]}); check the delimiter and quotes") from None
    if headerless is None:
        headerless = len(df) > 1 and _first_rows_are_data(df, set(TEXT_NAMES) | set(PAIR_OF.values()) | set(LABEL_NAMES))
    if headerless:
        return df, 1
    if len(df) < 2:
        raise UsageError(f"{path}: the file has a header but no rows")
    header = [str(c).strip() for c in df.iloc[0]]
    df = df.iloc[1:].reset_index(drop=True)
    df.columns = header
    return df, 2


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host.split(":")[0], 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _frames_from_datasets(obj: Any, source: str) -> dict[str, tuple[pd.DataFrame, str]]:
    """Turn a datasets Dataset or DatasetDict into {split: (frame, source)}; ClassLabel ints become names."""
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
        out[key] = (df, f"{source}[{name}]")
    return out


def _fingerprint(paths: list[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode())
        if os.path.isfile(p):
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def _load_frames(cfg: TrainConfig, headerless: bool | None) -> tuple[dict[str, tuple[pd.DataFrame, str, int]], str]:
    """Every split the user gave: {split: (frame, source, first line)} and a data fingerprint."""
    import datasets

    frames: dict[str, tuple[pd.DataFrame, str, int]] = {}
    if cfg.data is not None and Path(cfg.data).is_dir():
        try:
            obj = datasets.load_from_disk(cfg.data)
        except FileNotFoundError:
            raise UsageError(f"{cfg.data}: a folder, but not one written by datasets.save_to_disk; pass a data file instead") from None
        for k, (df, src) in _frames_from_datasets(obj, cfg.data).items():
            frames[k] = (df, src, 0)
        fingerprint = getattr(obj, "_fingerprint", None) or _fingerprint([cfg.data])
        return frames, str(fingerprint)
    if cfg.data is not None and not os.path.exists(cfg.data) and Path(cfg.data).suffix == "":
        return _load_hub(cfg)  # a name like "imdb" or "user/name"
    paths = {"train": cfg.data or cfg.train, "validation": cfg.validation, "test": cfg.test}
    for split, path in paths.items():
        if path is None:
            continue
        df, first_line = read_table(path, cfg.encoding, headerless)
        frames[split] = (df, path, first_line)
    return frames, _fingerprint([p for p in paths.values() if p])


def _load_hub(cfg: TrainConfig) -> tuple[dict[str, tuple[pd.DataFrame, str, int]], str]:
    import datasets

    name, config = cfg.data, cfg.data_config
    if " " in name.strip() and config is None:  # "glue mrpc", as load_dataset("glue", "mrpc")
        name, config = name.split(None, 1)
    if not _hub_reachable():
        # The hub cache may still hold it: try offline before giving up.
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        obj = datasets.load_dataset(name, config)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(
            f"--data {cfg.data}: not a local file or folder, and the hub data set could not be loaded ({first[:200]}); "
            "check the name and your connection, or pass a local file"
        ) from None
    frames = {k: (df, src, 0) for k, (df, src) in _frames_from_datasets(obj, name).items()}
    if not frames:
        raise UsageError(f"--data {name}: the data set has no train, validation or test split")
    return frames, f"{name}:{config or ''}:" + ":".join(getattr(d, "_fingerprint", "") for d in getattr(obj, "values", lambda: [obj])())


# ---------------------------------------------------------------- columns


def _is_index(value: str | None) -> bool:
    return value is not None and str(value).strip().isdigit()


def _find(columns: list[Any], wanted: str | None, flag: str, source: str) -> Any:
    if wanted is None:
        return None
    if _is_index(wanted) and all(isinstance(c, int) for c in columns):
        idx = int(wanted)
        if idx >= len(columns):
            raise UsageError(f"{flag} {wanted}: {source} has only {len(columns)} columns (0 to {len(columns) - 1})")
        return idx
    for c in columns:
        if str(c) == wanted:
            return c
    for c in columns:
        if str(c).strip().lower() == wanted.strip().lower():
            return c
    shown = ", ".join(repr(str(c)) for c in columns)
    raise UsageError(f"{flag} {wanted}: no such column in {source}; its columns are {shown}")


def resolve_columns(df: pd.DataFrame, cfg: TrainConfig, source: str) -> tuple[Any, Any, Any, list[str]]:
    """Pick the text, pair and label columns: the user's choice, else the common names,
    else (headerless files) the longest text column and the column with few distinct values."""
    cols = list(df.columns)
    notes = []
    text = _find(cols, cfg.text_column, "--text-column", source)
    pair = _find(cols, cfg.text_pair_column, "--text-pair-column", source)
    label = _find(cols, cfg.label_column, "--label-column", source)
    lower = {str(c).strip().lower(): c for c in cols}
    headerless = all(isinstance(c, int) for c in cols)
    if label is None:
        label = next((lower[n] for n in LABEL_NAMES if n in lower), None)
        if label is None and headerless:
            distinct = {c: df[c].nunique() for c in cols if c != text}
            label = min(distinct, key=distinct.get) if distinct else None
        if label is None:
            raise UsageError(f"{source}: no label column found among {', '.join(repr(str(c)) for c in cols)}; pass --label-column NAME")
        notes.append(f"label column: {label!r}")
    if text is None:
        text = next((lower[n] for n in TEXT_NAMES if n in lower and lower[n] != label), None)
        if text is None and headerless:
            others = [c for c in cols if c != label]
            lengths = {c: df[c].astype(str).str.len().mean() for c in others}
            text = max(lengths, key=lengths.get) if lengths else None
        if text is None:
            raise UsageError(f"{source}: no text column found among {', '.join(repr(str(c)) for c in cols)}; pass --text-column NAME")
        notes.append(f"text column: {text!r}")
        if pair is None and cfg.text_pair_column is None:
            partner = PAIR_OF.get(str(text).strip().lower())
            if partner in lower and lower[partner] != label:
                pair = lower[partner]
                notes.append(f"text pair column: {pair!r}")
    if len({str(text), str(label)} | ({str(pair)} if pair is not None else set())) < (3 if pair is not None else 2):
        raise UsageError(f"{source}: the text, text pair and label columns must differ (got {text!r}, {pair!r}, {label!r})")
    return text, pair, label, notes


# ---------------------------------------------------------------- labels and checks


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _rows_text(rows: list[int], unit: str) -> str:
    shown = ", ".join(str(r) for r in rows[:5])
    return f"{unit}{'s' if len(rows) > 1 else ''} {shown}{', ...' if len(rows) > 5 else ''}"


def _to_split(df: pd.DataFrame, source: str, first_line: int, text: Any, pair: Any, label: Any, empty_labels: bool = False) -> Split:
    """Rows of a frame as a Split; `empty_labels`: an empty label cell is allowed (a multi-label row with no label)."""
    unit = "line" if first_line else "row"
    rows = [i + first_line for i in range(len(df))]
    labels = list(df[label]) if label is not None else [None] * len(df)
    if label is not None and not empty_labels:
        check_labels_present(source, rows, labels, label, unit)
    texts = ["" if _missing(v) else str(v) for v in df[text]]
    pairs = None if pair is None else ["" if _missing(v) else str(v) for v in df[pair]]
    empty = [i for i in range(len(texts)) if not texts[i].strip() or (pairs is not None and not pairs[i].strip())]
    split = Split(source, texts, pairs, labels, rows, unit)
    if not empty:
        return split
    bad = [rows[i] for i in empty]
    if len(empty) > max(1, EMPTY_TEXT_TOLERANCE * len(texts)):
        col = text if pair is None else f"{text!r} or {pair!r}"
        raise UsageError(f"{source}: {len(bad)} rows have an empty text in column {col!r} ({_rows_text(bad, unit)}); remove those rows or check --text-column")
    # A stray empty review in a large file (ChnSentiCorp has one) is dropped, and said so.
    split = _take(split, [i for i in range(len(texts)) if i not in set(empty)])
    split.dropped = bad
    return split


def check_labels_present(source: str, rows: list[int], labels: list[Any], column: Any, unit: str) -> None:
    bad = [r for r, v in zip(rows, labels) if not _is_list(v) and _missing(v)]
    if bad:
        raise UsageError(f"{source}: {len(bad)} rows have no label in column {column!r} ({_rows_text(bad, unit)}); fill them in or remove those rows")


def _normalise_labels(labels: list[Any]) -> list[Any]:
    """Integers (or strings of integers) become ints; anything else a stripped string."""
    out = []
    for v in labels:
        if isinstance(v, (bool, np.bool_)):
            v = int(v)
        if isinstance(v, (int, np.integer)):
            out.append(int(v))
            continue
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            out.append(int(v))
            continue
        s = str(v).strip()
        try:
            f = float(s)
            out.append(int(f) if f.is_integer() else s)
        except ValueError:
            out.append(s)
    if any(isinstance(v, str) for v in out):
        out = [str(v) for v in out]
    return out


def _is_list(v: Any) -> bool:
    return isinstance(v, (list, tuple, np.ndarray)) or (isinstance(v, str) and v.strip().startswith("[") and v.strip().endswith("]"))


SEPARATORS = (",", "|", ";")


def guess_separator(labels: list[Any]) -> str | None:
    """The separator of multi-label cells written as strings ('joy,love'): one that appears in at
    least a tenth of the labels, whose parts also appear as labels on their own."""
    strings = [v.strip() for v in labels if isinstance(v, str)]
    if len(strings) < len(labels) or not strings:
        return None
    for sep in SEPARATORS:
        joined = [v for v in strings if sep in v]
        if len(joined) < 0.1 * len(strings):
            continue
        alone = {v for v in strings if sep not in v}
        parts = {p.strip() for v in joined for p in v.split(sep) if p.strip()}
        if parts and len(parts & alone) >= 0.8 * len(parts):
            return sep
    return None


def detect_task(cfg_task: str, labels: list[Any], separator: str | None) -> tuple[str, str | None]:
    """The task and, for multi-label cells written as strings, their separator: the task the user
    asked for, or for 'auto': lists of labels, a --label-separator, or strings joined by a
    separator whose parts are labels too are multi-label; numbers that are not all integers are
    regression; the rest classification."""
    lists = bool(labels) and all(_is_list(v) for v in labels)
    if separator is None and cfg_task in ("auto", "multi-label") and not lists:
        separator = guess_separator(labels)
    if cfg_task != "auto":
        return cfg_task, separator if cfg_task == "multi-label" else None
    if separator is not None or lists:
        return "multi-label", separator
    numbers = []
    for v in labels:
        try:
            numbers.append(float(v))
        except (TypeError, ValueError):
            return "classification", None
    return "regression" if any(not math.isfinite(x) or not x.is_integer() for x in numbers) else "classification", None


def label_set(v: Any, separator: str | None, where: str) -> tuple[str, ...]:
    """One multi-label value as a sorted tuple of names: a list, a JSON list, or a separated string."""
    import json

    if isinstance(v, str) and v.strip().startswith("["):
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            raise UsageError(f"{where}: label {v!r} is not a valid JSON list; write it like [\"a\", \"b\"] or pass --label-separator") from None
    if isinstance(v, (list, tuple, np.ndarray)):
        items = [str(x).strip() for x in v]
    elif _missing(v):
        items = []
    else:
        items = [x.strip() for x in str(v).split(separator or ",")]
    return tuple(sorted({x for x in items if x}))


def to_number(v: Any, where: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x):
        raise UsageError(f"{where}: label {v!r} is not a number, and this is a regression task; fix the row, or pass --task classification")
    return x


def task_labels(split: Split, task: str, separator: str | None) -> list[Any]:
    """The labels of a split read for its task (tuples of names, floats, or normalised classes)."""
    if task == "multi-label":
        return [label_set(v, separator, f"{split.source} {split.unit} {r}") for v, r in zip(split.labels, split.rows)]
    if task == "regression":
        return [to_number(v, f"{split.source} {split.unit} {r}") for v, r in zip(split.labels, split.rows)]
    return _normalise_labels(split.labels)


def multi_hot(labels: list[tuple[str, ...]], names: list[str]) -> list[list[float]]:
    """Each row's set of labels as 0/1 per name, in the order of `names`."""
    return [[1.0 if n in v else 0.0 for n in names] for v in labels]


def label_order(train_labels: list[Any]) -> list[Any]:
    """A stable order: integers ascending, strings alphabetically."""
    return sorted(set(train_labels), key=lambda v: (isinstance(v, str), v))


# ---------------------------------------------------------------- splits


def _stratified(labels: list[Any], fractions: tuple[float, float, float], seed: int, need: tuple[bool, bool]) -> list[np.ndarray]:
    """Indices for the train/validation/test parts that are missing (need = (validation, test))."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    y = np.array([str(v) for v in labels])
    tr, va, te = fractions
    va = va if need[0] else 0.0
    te = te if need[1] else 0.0

    def cut(ix: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
        if share <= 0:
            return ix, ix[:0]
        n_out = max(1, round(share * len(ix)))
        strat = y[ix] if min(np.unique(y[ix], return_counts=True)[1]) >= 2 and n_out >= len(set(y[ix])) else None
        a, b = train_test_split(ix, test_size=n_out, random_state=seed, stratify=strat)
        return np.sort(a), np.sort(b)

    rest, test = cut(idx, te)
    train, val = cut(rest, va / (tr + va) if va else 0.0)
    return [train, val, test]


def _take(split: Split, ix: np.ndarray | list[int]) -> Split:
    return Split(
        split.source,
        [split.texts[i] for i in ix],
        [split.pairs[i] for i in ix] if split.pairs is not None else None,
        [split.labels[i] for i in ix],
        [split.rows[i] for i in ix],
        split.unit,
        dropped=split.dropped,
        raw_labels=[split.raw_labels[i] for i in ix] if split.raw_labels else [],
        task=split.task,
        label_separator=split.label_separator,
    )


def read_splits(cfg: TrainConfig) -> tuple[dict[str, Split], tuple[Any, Any, Any], list[str], str]:
    """Every split the user gave, read and checked row by row; labels normalised but not mapped.
    Returns the splits, the (text, pair, label) columns, notes to show, and a data fingerprint."""
    headerless = True if any(_is_index(c) for c in (cfg.text_column, cfg.text_pair_column, cfg.label_column)) else None
    if headerless is None and any(c is not None for c in (cfg.text_column, cfg.label_column)):
        headerless = False
    frames, fingerprint = _load_frames(cfg, headerless)
    if "train" not in frames:
        raise UsageError(f"--data {cfg.data}: no training split found (splits there: {', '.join(frames) or 'none'}); pass --train FILE")
    first_df, first_src, _ = frames["train"]
    text, pair, label, notes = resolve_columns(first_df, cfg, first_src)
    splits: dict[str, Split] = {}
    for name, (df, src, first_line) in frames.items():
        if name != "train":
            for col in (text, pair, label):
                if col is not None and col not in df.columns:
                    raise UsageError(f"{src}: no column {str(col)!r} (found in the training data); its columns are {', '.join(repr(str(c)) for c in df.columns)}")
        if name == "test" and all(_missing(v) or str(v).strip() == "-1" for v in df[label]):
            notes.append(f"{src}: test labels are hidden (-1), so there is no test evaluation")
            continue
        # Empty label cells are checked once the task is known: a multi-label row may have no label.
        splits[name] = _to_split(df, src, first_line, text, pair, label, empty_labels=True)
        if splits[name].dropped:
            notes.append(f"{src}: left out {len(splits[name].dropped)} rows with an empty text ({_rows_text(splits[name].dropped, splits[name].unit)})")
    train_labels = [v for v in splits["train"].labels if _is_list(v) or not _missing(v)]
    task, separator = detect_task(cfg.task, train_labels, cfg.label_separator)
    if task != "multi-label":
        for s in splits.values():
            check_labels_present(s.source, s.rows, s.labels, label, s.unit)
    if separator is not None and cfg.label_separator is None and cfg.task == "auto":
        notes.append(f"labels like {next(v for v in train_labels if separator in str(v))!r} read as several labels "
                     f"separated by {separator!r}; pass --task classification to keep them whole")
    for name, s in splits.items():
        s.raw_labels = [str(v) for v in s.labels]
        s.labels = task_labels(s, task, separator)
        s.task, s.label_separator = task, separator
    if task != cfg.task:
        notes.append(f"task: {task} (from the labels; --task to choose)")
    if task != "classification":
        return splits, (text, pair, label), notes, fingerprint
    # Integers and strings of integers are one label type across splits.
    kinds = {name: any(isinstance(v, str) for v in s.labels) for name, s in splits.items()}
    if len(set(kinds.values())) > 1:
        for s in splits.values():
            s.labels = [str(v) for v in s.labels]
    return splits, (text, pair, label), notes, fingerprint


def label_problems(splits: dict[str, Split]) -> list[str]:
    """Label problems that make training meaningless, as one-line messages (empty: none)."""
    train = splits["train"]
    if train.task == "regression":
        return [] if len(set(train.labels)) > 1 else [f"{train.source}: every training row has the value {train.labels[0]!r}; regression needs varied targets"]
    if train.task == "multi-label":
        known = {x for v in train.labels for x in v}
        if not known:
            return [f"{train.source}: no training row has a label; a multi-label classifier needs labelled examples"]
        for s in splits.values():
            unseen = [(r, x) for r, v in zip(s.rows, s.labels) for x in v if x not in known]
            if unseen:
                r, x = unseen[0]
                return [f"{s.source}: label {x!r} ({s.unit} {r}) never appears in the training data "
                        f"(labels there: {', '.join(sorted(known))}); remove it or add training examples"]
        return []
    order = label_order(train.labels)
    problems = []
    if len(order) < 2:
        problems.append(f"{train.source}: every training row has the label {order[0]!r}; a classifier needs at least two classes")
    folded: dict[str, list[Any]] = {}
    for v in order:
        folded.setdefault(str(v).casefold(), []).append(v)
    for variants in folded.values():
        if len(variants) > 1:
            problems.append(f"{train.source}: labels {' and '.join(repr(v) for v in variants)} differ only by case, so they train as "
                            "different classes; write them the same way")
    known = set(order)
    for s in splits.values():
        unseen = [(r, v) for r, v in zip(s.rows, s.labels) if v not in known]
        if unseen:
            r, v = unseen[0]
            problems.append(
                f"{s.source}: label {v!r} ({s.unit} {r}, {len(unseen)} rows) never appears in the training data "
                f"(labels there: {', '.join(map(str, order))}); remove those rows or add training examples"
            )
    return problems


def split_seed(cfg: TrainConfig) -> int:
    return cfg.split_seed if cfg.split_seed is not None else cfg.seed


def carve_splits(splits: dict[str, Split], cfg: TrainConfig, notes: list[str]) -> dict[str, Split]:
    """Make the missing validation (and test) split from train, stratified and seeded; then
    take the --max-train-samples sample."""
    splits = dict(splits)
    train = splits["train"]
    need = ("validation" not in splits, "test" not in splits and "validation" not in splits)
    if need[0] or need[1]:
        fractions = split_percentages(cfg.split)
        tr_ix, va_ix, te_ix = _stratified(train.labels, fractions, split_seed(cfg), need)
        if need[0] and len(va_ix):
            splits["validation"] = _take(train, va_ix)
        if need[1] and len(te_ix):
            splits["test"] = _take(train, te_ix)
        splits["train"] = train = _take(train, tr_ix)
        made = [n for n, want in zip(("validation", "test"), need) if want]
        kind = "random" if train.task == "regression" else "stratified"
        notes.append(f"made a {kind} {'/'.join(made)} split from {train.source} (--split {cfg.split}, seed {split_seed(cfg)})")
    if cfg.max_train_samples and cfg.max_train_samples < len(train.texts):
        rng = np.random.default_rng(split_seed(cfg))
        splits["train"] = _take(train, np.sort(rng.permutation(len(train.texts))[: cfg.max_train_samples]))
    return splits


def load_data(cfg: TrainConfig) -> tuple[dict[str, Split], DataInfo]:
    """Read, check and split the data; labels are returned as ids into `info.label_names`."""
    splits, (text, pair, label), notes, fingerprint = read_splits(cfg)
    problems = label_problems(splits)
    if problems:
        raise UsageError(problems[0])
    task = splits["train"].task
    if task == "multi-label":
        order = sorted({x for v in splits["train"].labels for x in v})
    elif task == "regression":
        order = [str(label)]
    else:
        order = label_order(splits["train"].labels)
    splits = carve_splits(splits, cfg, notes)
    train = splits["train"]

    names = [str(v) for v in order]
    if cfg.label_names:
        given = [n.strip() for n in cfg.label_names.split(",")]
        if not all(isinstance(v, int) for v in order) or sorted(order) != list(range(len(given))):
            raise UsageError(f"--label-names: expected one name per integer label 0..{len(given) - 1}; the training labels are {', '.join(names)}")
        names = given
    to_id = {v: i for i, v in enumerate(order)}
    for s in splits.values():
        if task == "multi-label":
            s.labels = multi_hot(s.labels, order)
        elif task == "classification":
            s.labels = [to_id[v] for v in s.labels]
    if task == "classification" and len(set(train.labels)) < 2:
        raise UsageError(f"{train.source}: the training sample has a single class; raise --max-train-samples")
    info = DataInfo(
        text_column=str(text),
        text_pair_column=None if pair is None else str(pair),
        label_column=str(label),
        label_names=names,
        label_values=list(order),
        fingerprint=fingerprint,
        notes=notes,
        split_rows={n: list(map(int, s.rows)) for n, s in splits.items()},
        task=task,
        label_separator=train.label_separator,
    )
    return splits, info


# ---------------------------------------------------------------- tokens and batches


def encode(tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int) -> dict[str, list[list[int]]]:
    """Token ids per example, truncated to max_length and not padded (padding is per batch)."""
    out = tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=False)
    return {k: v for k, v in out.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


@dataclass(frozen=True)
class LongText:
    """How a text longer than max_length is read; stored in the run's manifest so that
    evaluation, prediction and the server read texts the way training did."""

    truncation: str = "head"  # head, tail or head+tail
    mode: str = "truncate"  # truncate or window
    stride: int | None = None  # tokens shared by consecutive windows
    pool: str = "mean"  # how window logits become a text's logits

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> "LongText":
        d = manifest.get("long_text") or {}
        return cls(d.get("truncation", "head"), d.get("mode", "truncate"), d.get("stride"), d.get("pool", "mean"))

    def to_dict(self) -> dict[str, Any]:
        return {"truncation": self.truncation, "mode": self.mode, "stride": self.stride, "pool": self.pool}

    def window_stride(self, max_length: int) -> int:
        """Tokens shared by consecutive windows: --stride, else a quarter of the window."""
        return self.stride if self.stride is not None else max_length // 4


def _special_counts(tokenizer: Any) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a single text ([CLS] and [SEP]: 1, 1)."""
    with_special = tokenizer("a")["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start : start + len(plain)] == plain:
            return start, len(with_special) - start - len(plain)
    return 0, 0


def head_tail_split(budget: int) -> tuple[int, int]:
    """First and last tokens kept by head+tail: a quarter from the start, the rest from the end
    (128 + 382 for BERT's 510, the best truncation on IMDb in Sun et al., 2019)."""
    head = round(budget * 128 / 510)
    return head, budget - head


def encode_long(tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int, long: LongText) -> tuple[dict[str, list[list[int]]], list[int]]:
    """Token ids per example and the text each example comes from: one example per text, cut
    as `long.truncation` says, or with `long.mode == "window"` overlapping windows of
    max_length tokens (the tokenizer's own overflow with a stride) that cover every token."""
    if long.mode == "truncate" and long.truncation == "head":
        return encode(tokenizer, texts, pairs, max_length), list(range(len(texts)))
    if pairs is not None:
        raise UsageError("--truncation tail/head+tail and --long-text window work on single texts, not sentence pairs; use the default --truncation head")
    keys = ("input_ids", "attention_mask", "token_type_ids")
    if long.mode == "window":
        stride = long.window_stride(max_length)
        if stride >= max_length - 2:
            raise UsageError(f"--stride {stride}: must be smaller than --max-length {max_length} minus the special tokens")
        out = tokenizer(texts, truncation=True, max_length=max_length, stride=stride, return_overflowing_tokens=True, padding=False)
        return {k: v for k, v in out.items() if k in keys}, list(out["overflow_to_sample_mapping"])
    before, after = _special_counts(tokenizer)
    full = tokenizer(texts, padding=False)  # no truncation: cut below
    budget = max_length - before - after
    head, tail = (0, budget) if long.truncation == "tail" else head_tail_split(budget)
    enc: dict[str, list[list[int]]] = {k: [] for k in keys if k in full}
    for i in range(len(texts)):
        ids = full["input_ids"][i]
        if len(ids) <= max_length:
            keep = list(range(len(ids)))
        else:
            body = range(before, len(ids) - after)
            keep = list(range(before)) + list(body[:head]) + list(body[len(body) - tail :]) + list(range(len(ids) - after, len(ids)))
        for k in enc:
            row = full[k][i]
            enc[k].append([row[j] for j in keep])
    return enc, list(range(len(texts)))


def pool_windows(logits: np.ndarray, doc: list[int] | np.ndarray, n_docs: int, how: str) -> np.ndarray:
    """A text's logits from its windows' logits (mean or max); identity when one example is one text."""
    doc = np.asarray(doc)
    if len(doc) == n_docs and (doc == np.arange(n_docs)).all():
        return logits
    out = np.full((n_docs, logits.shape[1]), -np.inf if how == "max" else 0.0, dtype=np.float32)
    if how == "max":
        np.maximum.at(out, doc, logits)
        return out
    np.add.at(out, doc, logits)
    return out / np.bincount(doc, minlength=n_docs)[:, None]


class EncodedDataset(torch.utils.data.Dataset):
    def __init__(self, enc: dict[str, list[list[int]]], labels: list[int] | None = None):
        self.enc, self.labels = enc, labels
        self.lengths = [len(x) for x in enc["input_ids"]]

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {k: v[i] for k, v in self.enc.items()}
        item["index"] = i
        if self.labels is not None:
            item["labels"] = self.labels[i]
        return item


def shared_widths(widths: Any) -> dict[int, int]:
    """Each batch width mapped to the width its batch is padded to on a CPU: a wider one that other
    batches of the same pass use, at most max(2, width // 32) tokens wider, so that fewer distinct
    shapes reach oneDNN. oneDNN builds (JIT-compiles) its matrix-product kernels for every new shape,
    2-20 ms each on this project's CPU: a one-epoch SST-2 run with 29 batch widths spent about 10%
    of its time there; sharing leaves 13 widths and trained 8-11% faster (benchmarks/RESULTS.md).
    Depends on the set of widths only, so a resumed run pads as the uninterrupted one did."""
    out: dict[int, int] = {}
    canonical = None
    for w in sorted(set(int(x) for x in widths), reverse=True):
        if canonical is None or w + max(2, w // 32) < canonical:
            canonical = w
        out[w] = canonical
    return out


def make_collate(tokenizer: Any, widths: dict[int, int] | None = None):
    """Pads each batch to its longest example, or to `widths[longest]` when given (shared_widths)."""

    def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        index = torch.tensor([it.pop("index") for it in items])
        labels = [it.pop("labels") for it in items] if "labels" in items[0] else None
        width = max(len(it["input_ids"]) for it in items)
        target = widths.get(width, width) if widths else width
        if target > width:
            batch = tokenizer.pad(items, padding="max_length", max_length=target, return_tensors="pt")
        else:
            batch = tokenizer.pad(items, padding=True, return_tensors="pt")
        batch = dict(batch)
        batch["index"] = index
        if labels is not None:
            batch["labels"] = torch.tensor(labels)
        return batch

    return collate


class LengthGroupedBatches(torch.utils.data.Sampler):
    """Batches of similar length so that padding nearly disappears, in a random, seeded order.

    Each epoch: shuffle all indices, cut them into chunks of `group` batches, sort each chunk
    by length, cut it into batches, and shuffle the batches. The randomness per epoch comes
    from (seed, epoch) only, so the order is reproducible and resumable.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group: int = 50, shuffle: bool = True, share_widths: bool = False):
        self.lengths, self.batch_size, self.seed, self.group, self.shuffle = lengths, batch_size, seed, group, shuffle
        self.epoch = 0
        # share_widths (CPU): `widths` maps each batch's width to the shared width of this pass
        # (shared_widths); the collate function pads to it. Updated in place at each pass.
        self.share_widths = share_widths
        self.widths: dict[int, int] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        out = self._batches()
        if self.share_widths:
            self.widths.clear()
            self.widths.update(shared_widths(max(self.lengths[i] for i in b) for b in out))
        return out

    def _batches(self) -> list[list[int]]:
        n = len(self.lengths)
        lengths = torch.tensor(self.lengths)
        if not self.shuffle:
            order = torch.argsort(lengths, descending=True, stable=True).tolist()
            return [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(n, generator=g)
        chunk = self.batch_size * self.group
        out = []
        for s in range(0, n, chunk):
            part = perm[s : s + chunk]
            part = part[torch.argsort(lengths[part], descending=True, stable=True)].tolist()
            out += [part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        return [out[i] for i in torch.randperm(len(out), generator=g).tolist()]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


def read_for_run(path: str, manifest: dict[str, Any], encoding: str = "utf-8", text_column: str | None = None,
                 text_pair_column: str | None = None, label_column: str | None = None, labels: bool = True) -> Split:
    """Rows of a file for a trained run: its texts (and pairs) and, for evaluation, label ids.

    Columns default to the ones the run was trained on, then to the common names; a file
    with a single column is all text."""
    given = (text_column, text_pair_column, label_column)
    headerless = True if any(_is_index(c) for c in given) else None
    if headerless is None and any(c is not None for c in given):
        headerless = False
    if Path(path).is_dir():
        import datasets

        frames = _frames_from_datasets(datasets.load_from_disk(path), path)
        key = "test" if "test" in frames else next(iter(frames))
        df, first_line, source = frames[key][0], 0, frames[key][1]
    else:
        df, first_line = read_table(path, encoding, headerless)
        source = path
    cols = list(df.columns)
    lower = {str(c).strip().lower(): c for c in cols}

    def pick(flag_value: str | None, flag: str, trained: str | None, known: list[str], required: bool) -> Any:
        if flag_value is not None:
            return _find(cols, flag_value, flag, source)
        for cand in ([trained] if trained is not None else []) + known:
            key = str(cand).strip().lower()
            if key in lower:
                return lower[key]
            if _is_index(cand) and all(isinstance(c, int) for c in cols) and int(cand) < len(cols):
                return int(cand)
        if required:
            raise UsageError(f"{source}: no {flag[2:].replace('-', ' ')} found among {', '.join(repr(str(c)) for c in cols)}; pass {flag} NAME")
        return None

    label = pick(label_column, "--label-column", manifest.get("label_column"), LABEL_NAMES, labels) if labels else None
    if text_column is None and len(cols) == 1 and not labels:
        text = cols[0]
    else:
        text = pick(text_column, "--text-column", manifest.get("text_column"), [n for n in TEXT_NAMES if lower.get(n) != label], True)
    pair = None
    if manifest.get("text_pair_column") is not None or text_pair_column is not None:
        pair = pick(text_pair_column, "--text-pair-column", manifest.get("text_pair_column"), [PAIR_OF.get(str(text).lower(), "")], True)
    task = run_task(manifest)
    split = _to_split(df, source, first_line, text, pair, label, task == "multi-label")
    if not labels:
        return split
    if task != "classification":
        split.labels = task_labels(split, task, manifest.get("label_separator"))
        if task == "multi-label":
            names = manifest["label_names"]
            unseen = [(r, x) for r, v in zip(split.rows, split.labels) for x in v if x not in names]
            if unseen:
                r, x = unseen[0]
                sep = manifest.get("label_separator") or ","
                raise UsageError(f"{source}: label {x!r} ({split.unit} {r}) is not one the model knows ({', '.join(names)}); "
                                 f"write a row's labels as a JSON list or separated by {sep!r}, and check --label-column")
            split.labels = multi_hot(split.labels, names)
        return split
    values = manifest["label_values"]
    split.labels = _normalise_labels(split.labels)
    lookup = {str(v): i for i, v in enumerate(values)}
    lookup.update({n: i for i, n in enumerate(manifest["label_names"])})
    unseen = [(r, v) for r, v in zip(split.rows, split.labels) if str(v) not in lookup]
    if unseen:
        r, v = unseen[0]
        raise UsageError(f"{source}: label {v!r} ({split.unit} {r}, {len(unseen)} rows) is not one the model knows "
                         f"({', '.join(map(str, manifest['label_names']))}); remove those rows or check --label-column")
    split.labels = [lookup[str(v)] for v in split.labels]
    return split
