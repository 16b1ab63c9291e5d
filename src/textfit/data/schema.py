"""The learned shape of the data: columns, task, labels and their separator.

    text, pair, label, notes = resolve_columns(df, "--text-column" values..., source)
    split = to_split(frame, text, pair, label)          # rows of a frame, empty texts checked
    labels = task_labels(split, task, separator)         # normalised for the task
    ids = label_ids(split, labels, schema)               # class ids / multi-hot rows / values

Training infers these (`detect_task`, `label_order`) and stores them in the run as a `Schema`;
eval, predict and the server apply the same functions with the stored schema, so a file is read
the same way at every stage.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from textfit.data.read import LABEL_NAMES, PAIR_OF, TEXT_NAMES, Frame
from textfit.data.splits import Split, take
from textfit.errors import UsageError
from textfit.run import Schema

EMPTY_TEXT_TOLERANCE = 0.001  # more empty texts than this share of a file is an error, fewer are dropped
SEPARATORS = (",", "|", ";")


def is_index(value: str | None) -> bool:
    return value is not None and str(value).strip().isdigit()


def find_column(columns: list[Any], wanted: str | None, flag: str, source: str) -> Any:
    if wanted is None:
        return None
    if is_index(wanted) and all(isinstance(c, int) for c in columns):
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


def _listed(cols: list[Any]) -> str:
    return ", ".join(repr(str(c)) for c in cols)


def resolve_columns(
    df: pd.DataFrame, text_column: str | None, pair_column: str | None, label_column: str | None, source: str
) -> tuple[Any, Any, Any, list[str]]:
    """Pick the text, pair and label columns: the user's choice, else the common names,
    else (headerless files) the longest text column and the column with few distinct values."""
    cols = list(df.columns)
    notes = []
    text = find_column(cols, text_column, "--text-column", source)
    pair = find_column(cols, pair_column, "--text-pair-column", source)
    label = find_column(cols, label_column, "--label-column", source)
    lower = {str(c).strip().lower(): c for c in cols}
    headerless = all(isinstance(c, int) for c in cols)
    if label is None:
        label = next((lower[n] for n in LABEL_NAMES if n in lower), None)
        if label is None and headerless:
            distinct = {c: df[c].nunique() for c in cols if c != text}
            label = min(distinct, key=lambda c: distinct[c]) if distinct else None
        if label is None:
            raise UsageError(f"{source}: no label column found among {_listed(cols)}; pass --label-column NAME")
        notes.append(f"label column: {label!r}")
    if text is None:
        text = next((lower[n] for n in TEXT_NAMES if n in lower and lower[n] != label), None)
        if text is None and headerless:
            lengths = {c: df[c].astype(str).str.len().mean() for c in cols if c != label}
            text = max(lengths, key=lambda c: lengths[c]) if lengths else None
        if text is None:
            raise UsageError(f"{source}: no text column found among {_listed(cols)}; pass --text-column NAME")
        notes.append(f"text column: {text!r}")
        if pair is None and pair_column is None:
            partner = PAIR_OF.get(str(text).strip().lower())
            if partner in lower and lower[partner] != label:
                pair = lower[partner]
                notes.append(f"text pair column: {pair!r}")
    if len({str(text), str(label)} | ({str(pair)} if pair is not None else set())) < (3 if pair is not None else 2):
        raise UsageError(
            f"{source}: the text, text pair and label columns must differ (got {text!r}, {pair!r}, {label!r})"
        )
    return text, pair, label, notes


def missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def rows_text(rows: list[int], unit: str) -> str:
    shown = ", ".join(str(r) for r in rows[:5])
    return f"{unit}{'s' if len(rows) > 1 else ''} {shown}{', ...' if len(rows) > 5 else ''}"


def text_cells(frame: Frame, column: Any) -> list[str]:
    """A column's cells as texts; a column of lists (tokens?) is refused rather than read as "['a' 'b']"."""
    values = list(frame.df[column])
    lists = [i for i, v in enumerate(values) if isinstance(v, (list, tuple, np.ndarray))]
    if lists:
        raise UsageError(
            f"{frame.source}: column {column!r} holds lists (row {lists[0] + frame.first_line}: "
            f"{str(values[lists[0]])[:60]}), "
            "not texts; join each list into one string (e.g. ' '.join(tokens)) or pass another --text-column"
        )
    return ["" if missing(v) else str(v) for v in values]


def to_split(
    frame: Frame, text: Any, pair: Any, label: Any, empty_labels: bool = False, empty_texts: str = "drop"
) -> Split:
    """Rows of a frame as a Split; `empty_labels`: an empty label cell is allowed (a multi-label row with
    no label); `empty_texts`: "drop" a few empty texts (the caller notes them) and refuse more, "error"
    on any, or "report": drop them all (inspect reports them)."""
    df, source = frame.df, frame.source
    unit = "line" if frame.first_line else "row"
    rows = [i + frame.first_line for i in range(len(df))]
    labels = list(df[label]) if label is not None else [None] * len(df)
    if label is not None and not empty_labels:
        check_labels_present(source, rows, labels, label, unit)
    texts = text_cells(frame, text)
    pairs = None if pair is None else text_cells(frame, pair)
    empty = [i for i in range(len(texts)) if not texts[i].strip() or (pairs is not None and not pairs[i].strip())]
    split = Split(source, texts, pairs, labels, rows, unit)
    if not empty:
        return split
    bad = [rows[i] for i in empty]
    if empty_texts == "error":
        raise UsageError(
            f"{source}: {len(bad)} rows have an empty text ({rows_text(bad, unit)}); every row needs a text, "
            "so that each output row answers its input row: fill them in or remove them"
        )
    if empty_texts == "drop" and len(empty) > max(1, EMPTY_TEXT_TOLERANCE * len(texts)):
        col = text if pair is None else f"{text!r} or {pair!r}"
        raise UsageError(
            f"{source}: {len(bad)} rows have an empty text in column {col!r} ({rows_text(bad, unit)}); "
            "remove those rows or check --text-column"
        )
    # A stray empty review in a large file (ChnSentiCorp has one) is dropped, and said so.
    gone = set(empty)
    split = take(split, [i for i in range(len(texts)) if i not in gone])
    split.dropped = bad
    return split


def check_labels_present(source: str, rows: list[int], labels: list[Any], column: Any, unit: str) -> None:
    bad = [r for r, v in zip(rows, labels) if not is_list(v) and missing(v)]
    if bad:
        raise UsageError(
            f"{source}: {len(bad)} rows have no label in column {column!r} ({rows_text(bad, unit)}); "
            "fill them in or remove those rows"
        )


def normalise_labels(labels: list[Any]) -> list[Any]:
    """Integers (or strings of integers) become ints; anything else a stripped string."""
    out: list[Any] = []
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


def check_label_kinds(split: Split, column: Any) -> None:
    """Classes written as numbers in some rows and as names in others (0/1 beside neg/pos) would train
    as separate classes: refused, naming both kinds."""
    numbers = sorted({r for r in split.raw_labels if _is_number(r)})
    names = sorted({r for r in split.raw_labels if not _is_number(r)})
    if numbers and names:
        raise UsageError(
            f"{split.source}: the label column {column!r} mixes numbers and names ({', '.join(numbers[:3])} and "
            f"{', '.join(repr(n) for n in names[:3])}), which would train as {len(numbers) + len(names)} different "
            "classes; write every label the same way"
        )


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def is_list(v: Any) -> bool:
    if isinstance(v, (list, tuple, np.ndarray)):
        return True
    return isinstance(v, str) and v.strip().startswith("[") and v.strip().endswith("]")


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
    lists = bool(labels) and all(is_list(v) for v in labels)
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
    regression = any(not math.isfinite(x) or not x.is_integer() for x in numbers)
    return ("regression" if regression else "classification"), None


def label_set(v: Any, separator: str | None, where: str) -> tuple[str, ...]:
    """One multi-label value as a sorted tuple of names: a list, a JSON list, or a separated string."""
    if isinstance(v, str) and v.strip().startswith("["):
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            raise UsageError(
                f'{where}: label {v!r} is not a valid JSON list; write it like ["a", "b"] or pass --label-separator'
            ) from None
    if isinstance(v, (list, tuple, np.ndarray)):
        items = [str(x).strip() for x in v]
    elif missing(v):
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
        raise UsageError(
            f"{where}: label {v!r} is not a number, and this is a regression task; fix the row, or pass --task "
            "classification"
        )
    return x


def task_labels(split: Split, task: str, separator: str | None) -> list[Any]:
    """The labels of a split read for its task (tuples of names, floats, or normalised classes)."""
    where = [f"{split.source} {split.unit} {r}" for r in split.rows]
    if task == "multi-label":
        return [label_set(v, separator, w) for v, w in zip(split.labels, where)]
    if task == "regression":
        return [to_number(v, w) for v, w in zip(split.labels, where)]
    return normalise_labels(split.labels)


def label_order(train_labels: list[Any]) -> list[Any]:
    """A stable order: integers ascending, strings alphabetically."""
    return sorted(set(train_labels), key=lambda v: (isinstance(v, str), v))


def label_ids(split: Split, labels: list[Any], schema: Schema) -> list[Any]:
    """Task-read labels (see `task_labels`) as the model's targets: class ids, 0/1 per label, or
    the values; a label the schema does not know is an error naming its row."""
    names = schema.label_names
    if schema.task == "regression":
        return labels
    if schema.task == "multi-label":
        unseen = [(r, x) for r, v in zip(split.rows, labels) for x in v if x not in names]
        if unseen:
            r, x = unseen[0]
            sep = schema.label_separator or ","
            raise UsageError(
                f"{split.source}: label {x!r} ({split.unit} {r}) is not one the model knows ({', '.join(names)}); "
                f"write a row's labels as a JSON list or separated by {sep!r}, and check --label-column"
            )
        return [[1.0 if n in v else 0.0 for n in names] for v in labels]
    lookup = {str(v): i for i, v in enumerate(schema.label_values)}
    lookup.update({n: i for i, n in enumerate(names)})
    unseen_rows = [(r, v) for r, v in zip(split.rows, labels) if str(v) not in lookup]
    if unseen_rows:
        r, v = unseen_rows[0]
        raise UsageError(
            f"{split.source}: label {v!r} ({split.unit} {r}, {len(unseen_rows)} rows) is not one the model knows "
            f"({', '.join(map(str, names))}); remove those rows or check --label-column"
        )
    return [lookup[str(v)] for v in labels]
