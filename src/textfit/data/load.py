"""The two ways in: a training set from the user's flags, and a file read for a trained run.

    data = load_data(cfg)                          # TrainingData: splits with label ids, the learned schema
    split = read_for_run("holdout.csv", manifest)  # texts, pairs and label ids as the run reads them

Both go through `read` (files to frames) and `schema` (columns, task, labels): training learns
the schema, a run applies it unchanged.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from textfit.config import TrainConfig, split_percentages
from textfit.data.read import LABEL_NAMES, PAIR_OF, TEXT_NAMES, Frame, load_frames, read_one
from textfit.data.schema import (
    EMPTY_TEXT_TOLERANCE,
    check_label_kinds,
    check_labels_present,
    detect_task,
    find_column,
    is_index,
    is_list,
    label_ids,
    label_order,
    missing,
    resolve_columns,
    rows_text,
    task_labels,
    to_split,
)
from textfit.data.splits import Split, carve_splits, take
from textfit.errors import UsageError
from textfit.run import RunManifest, Schema


@dataclass
class TrainingData:
    splits: dict[str, Split]  # train, and validation and test where there are any; labels as model targets
    schema: Schema
    fingerprint: str
    notes: list[str] = field(default_factory=list)
    unlabeled: Split | None = None  # texts without labels (zero-shot --self-train), not a split of the metrics

    @property
    def split_rows(self) -> dict[str, list[int]]:
        rows = {n: list(map(int, s.rows)) for n, s in self.splits.items()}
        if self.unlabeled is not None:
            rows["unlabeled"] = list(map(int, self.unlabeled.rows))
        return rows


@dataclass(frozen=True)
class ReadOptions:
    """How a file given to a trained run is read: `eval --data`, `predict --input` (here and on Ray), the file
    jobs, and the texts of distillation and self-training. Columns default to the run's, then to the common names.

        options = ReadOptions(encoding="gb18030", text_column="review")
        split = read_for_run("holdout.csv", manifest, options)
    """

    encoding: str = "utf-8"
    quoting: str = "auto"  # auto, none or standard (see --quoting)
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None

    @classmethod
    def from_flags(cls, flags: Any) -> ReadOptions:
        """From a command's flags or a TrainConfig (whatever of the five it has)."""
        defaults = cls()
        return cls(**{f.name: getattr(flags, f.name, getattr(defaults, f.name)) for f in dataclasses.fields(cls)})

    def headerless(self) -> bool | None:
        """Columns given as indices mean a headerless file; given as names, a header; none given: detected."""
        given = (self.text_column, self.text_pair_column, self.label_column)
        return headerless_from_flags(given, given)


def headerless_from_flags(columns: tuple[str | None, ...], named: tuple[str | None, ...]) -> bool | None:
    """Column flags given as indices mean a headerless file; the `named` ones given as names, a header."""
    if any(is_index(c) for c in columns):
        return True
    return False if any(c is not None for c in named) else None


def _check_columns(frame: Frame, columns: tuple[Any, Any, Any]) -> None:
    for col in columns:
        if col is not None and col not in frame.df.columns:
            found = ", ".join(repr(str(c)) for c in frame.df.columns)
            raise UsageError(
                f"{frame.source}: no column {str(col)!r} (found in the training data); its columns are {found}"
            )


def read_splits(
    cfg: TrainConfig, found: list[dict[str, str]] | None = None
) -> tuple[dict[str, Split], tuple[Any, Any, Any], list[str], str]:
    """Every split the user gave, read and checked row by row; labels read for the task but not mapped.
    Returns the splits, the (text, pair, label) columns, notes to show, and a data fingerprint.
    `found` (inspect): problems with rows are added there, and the rows left out, instead of raising."""
    headerless = headerless_from_flags(
        (cfg.text_column, cfg.text_pair_column, cfg.label_column), (cfg.text_column, cfg.label_column)
    )
    frames, fingerprint = load_frames(
        cfg.data, cfg.data_config, cfg.train, cfg.validation, cfg.test, cfg.encoding, headerless, cfg.quoting
    )
    if "train" not in frames:
        there = ", ".join(frames) or "none"
        raise UsageError(f"--data {cfg.data}: no training split found (splits there: {there}); pass --train FILE")
    first = frames["train"]
    text, pair, label, notes = resolve_columns(
        first.df, cfg.text_column, cfg.text_pair_column, cfg.label_column, first.source
    )
    splits: dict[str, Split] = {}
    for name, frame in frames.items():
        if name != "train":
            _check_columns(frame, (text, pair, label))
        if name == "test" and all(missing(v) or str(v).strip() == "-1" for v in frame.df[label]):
            notes.append(f"{frame.source}: test labels are hidden (-1), so there is no test evaluation")
            continue
        # Empty label cells are checked once the task is known: a multi-label row may have no label.
        s = splits[name] = to_split(frame, text, pair, label, True, "drop" if found is None else "report")
        if found is not None and s.dropped:
            level = (
                "error"
                if len(s.dropped) > max(1, EMPTY_TEXT_TOLERANCE * (len(s.texts) + len(s.dropped)))
                else "warning"
            )
            col = text if pair is None else f"{text!r} or {pair!r}"
            where = rows_text(s.dropped, s.unit)
            message = f"{frame.source}: {len(s.dropped)} rows have an empty text in column {col!r} ({where})"
            found.append({"level": level, "kind": "empty_text", "message": f"{message}; fill them in or remove them"})
        elif s.dropped:
            notes.append(
                f"{frame.source}: left out {len(s.dropped)} rows with an empty text ({rows_text(s.dropped, s.unit)})"
            )
    train_labels = [v for v in splits["train"].labels if is_list(v) or not missing(v)]
    task, separator = detect_task(cfg.task, train_labels, cfg.label_separator)
    if task != "multi-label":
        for name, s in splits.items():
            try:
                check_labels_present(s.source, s.rows, s.labels, label, s.unit)
            except UsageError as e:
                if found is None:
                    raise
                found.append({"level": "error", "kind": "missing_labels", "message": str(e)})
                splits[name] = take(s, [i for i, v in enumerate(s.labels) if not missing(v)])
    if separator is not None and cfg.label_separator is None and cfg.task == "auto":
        example = next(v for v in train_labels if separator in str(v))
        notes.append(
            f"labels like {example!r} read as several labels separated by {separator!r}; "
            "pass --task classification to keep them whole"
        )
    for s in splits.values():
        s.raw_labels = [str(v) for v in s.labels]
        s.labels = task_labels(s, task, separator)
        s.task, s.label_separator = task, separator
    if task != cfg.task:
        notes.append(f"task: {task} (from the labels; --task to choose)")
    if task == "classification":
        try:
            check_label_kinds(splits["train"], label)
        except UsageError as e:
            if found is None:
                raise
            found.append({"level": "error", "kind": "label_kinds", "message": str(e)})
    if task == "classification" and len({any(isinstance(v, str) for v in s.labels) for s in splits.values()}) > 1:
        for s in splits.values():  # integers and strings of integers are one label type across splits
            s.labels = [str(v) for v in s.labels]
    return splits, (text, pair, label), notes, fingerprint


def bounded(values: list[Any], k: int = 8) -> str:
    """A list for a message: the first k values and how many there are in all."""
    shown = ", ".join(str(v) for v in values[:k])
    return shown if len(values) <= k else f"{shown}, ... ({len(values):,} in all)"


def label_problems(splits: dict[str, Split]) -> list[str]:
    """Label problems that make training meaningless, as one-line messages (empty: none)."""
    train = splits["train"]
    if train.task == "regression":
        if len(set(train.labels)) > 1:
            return []
        return [
            f"{train.source}: every training row has the value {train.labels[0]!r}; regression needs varied targets"
        ]
    if train.task == "multi-label":
        known = {x for v in train.labels for x in v}
        if not known:
            return [f"{train.source}: no training row has a label; a multi-label classifier needs labelled examples"]
        for s in splits.values():
            unseen = [(r, x) for r, v in zip(s.rows, s.labels) for x in v if x not in known]
            if unseen:
                r, x = unseen[0]
                return [
                    f"{s.source}: label {x!r} ({s.unit} {r}) never appears in the training data "
                    f"(labels there: {bounded(sorted(known))}); remove it or add training examples"
                ]
        return []
    order = label_order(train.labels)
    problems = []
    if len(order) < 2:
        problems.append(
            f"{train.source}: every training row has the label {order[0]!r}; a classifier needs at least two classes"
        )
    folded: dict[str, list[Any]] = {}
    for v in order:
        folded.setdefault(str(v).casefold(), []).append(v)
    for variants in folded.values():
        if len(variants) > 1:
            shown = " and ".join(repr(v) for v in variants)
            problems.append(
                f"{train.source}: labels {shown} differ only by case, so they train as different classes; "
                "write them the same way"
            )
    known = set(order)
    for s in splits.values():
        unseen_rows = [(r, v) for r, v in zip(s.rows, s.labels) if v not in known]
        if unseen_rows:
            r, v = unseen_rows[0]
            problems.append(
                f"{s.source}: label {v!r} ({s.unit} {r}, {len(unseen_rows)} rows) never appears in the training data "
                f"(labels there: {bounded(order)}); remove those rows or add training examples"
            )
    return problems


def split_seed(cfg: TrainConfig) -> int:
    return cfg.split_seed if cfg.split_seed is not None else cfg.seed


def _label_names(order: list[Any], given: str | None) -> list[str]:
    names = [str(v) for v in order]
    if not given:
        return names
    parts = [n.strip() for n in given.split(",")]
    if not all(isinstance(v, int) for v in order) or sorted(order) != list(range(len(parts))):
        raise UsageError(
            f"--label-names: expected one name per integer label 0..{len(parts) - 1}; the training labels are "
            f"{', '.join(names)}"
        )
    return parts


def load_data(cfg: TrainConfig) -> TrainingData:
    """Read, check and split the data; labels become the model's targets (see `schema.label_ids`)."""
    splits, (text, pair, label), notes, fingerprint = read_splits(cfg)
    problems = label_problems(splits)
    if problems:
        raise UsageError(problems[0])
    train = splits["train"]
    if train.task == "multi-label":
        order: list[Any] = sorted({x for v in train.labels for x in v})
    elif train.task == "regression":
        order = [str(label)]
    else:
        order = label_order(train.labels)
    given = set(splits)
    splits = carve_splits(
        splits, split_percentages(cfg.split), split_seed(cfg), cfg.max_train_samples, notes, cfg.split
    )
    carved = set(splits) - given
    problems = label_problems(splits)  # one rule, whether the splits were given or carved
    if problems and carved:
        raise UsageError(
            f"{problems[0]} [the {' and '.join(sorted(carved))} split was carved from the training rows, and "
            "classes with too few rows end up on one side: give each class a few rows more, merge rare classes, "
            "or pass --validation FILE]"
        )
    if problems:
        raise UsageError(problems[0])
    schema = Schema(
        task=train.task,
        text_column=str(text),
        text_pair_column=None if pair is None else str(pair),
        label_column=str(label),
        label_names=_label_names(order, cfg.label_names),
        label_values=list(order),
        label_separator=train.label_separator,
    )
    by_value = dataclasses.replace(schema, label_names=[str(v) for v in order])  # --label-names may reuse a value
    for s in splits.values():
        s.labels = label_ids(s, s.labels, by_value)
    if schema.task == "classification" and len(set(splits["train"].labels)) < 2:
        raise UsageError(f"{train.source}: the training sample has a single class; raise --max-train-samples")
    return TrainingData(splits, schema, fingerprint, notes)


def read_for_run(path: str, manifest: RunManifest, options: ReadOptions | None = None, labels: bool = True) -> Split:
    """Rows of a file for a trained run: its texts (and pairs) and, for evaluation, label ids.

    Columns default to the ones the run was trained on, then to the common names; a file
    with a single column is all text."""
    o = options or ReadOptions()
    frame = read_one(path, o.encoding, o.headerless(), o.quoting)
    columns = run_columns(frame, manifest, o.text_column, o.text_pair_column, o.label_column, labels)
    return _split_for_run(frame, columns, manifest.schema, labels)


def _split_for_run(frame: Frame, columns: tuple[Any, Any, Any], schema: Schema, labels: bool) -> Split:
    """A frame's rows as a run reads them: its columns' texts, and label ids when `labels`."""
    split = to_split(frame, *columns, schema.task == "multi-label", "drop" if labels else "error")
    if labels:
        split.labels = label_ids(split, task_labels(split, schema.task, schema.label_separator), schema)
    return split


def read_for_run_in_chunks(
    path: str, manifest: RunManifest, chunk_rows: int, options: ReadOptions | None = None
) -> Iterator[Split]:
    """`read_for_run` (labelled) a chunk of rows at a time (`stream.read_chunks`): the columns are settled on
    the first chunk, and each chunk comes back as a Split with label ids."""
    from textfit.data.stream import read_chunks

    o = options or ReadOptions()
    columns = None
    for frame in read_chunks(path, chunk_rows, o.encoding, o.headerless(), o.quoting):
        if columns is None:
            columns = run_columns(frame, manifest, o.text_column, o.text_pair_column, o.label_column, True)
        yield _split_for_run(frame, columns, manifest.schema, True)


def run_columns(
    frame: Frame,
    manifest: RunManifest,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    labels: bool = True,
) -> tuple[Any, Any, Any]:
    """The text, pair and label columns of a frame for a trained run (None where there is none): the
    flags, then the columns the run was trained on, then the common names; a file with a single column is
    all text. Shared by `read_for_run` and the chunked reader (`data.stream`), which asks its first chunk."""
    cols = list(frame.df.columns)
    lower = {str(c).strip().lower(): c for c in cols}
    schema = manifest.schema

    def pick(flag_value: str | None, flag: str, trained: str | None, known: list[str], required: bool) -> Any:
        if flag_value is not None:
            return find_column(cols, flag_value, flag, frame.source)
        for cand in ([trained] if trained is not None else []) + known:
            key = str(cand).strip().lower()
            if key in lower:
                return lower[key]
            if is_index(cand) and all(isinstance(c, int) for c in cols) and int(cand) < len(cols):
                return int(cand)
        if required:
            found = ", ".join(repr(str(c)) for c in cols)
            raise UsageError(f"{frame.source}: no {flag[2:].replace('-', ' ')} found among {found}; pass {flag} NAME")
        return None

    label = pick(label_column, "--label-column", schema.label_column, LABEL_NAMES, labels) if labels else None
    if text_column is None and not labels and cols == [0] and frame.df.shape[0] > 0:
        print(
            f"textfit: {frame.source} has one column and no header that textfit knows: every line, the first "
            "included, is read as a text",
            file=sys.stderr,
        )
    if text_column is None and len(cols) == 1 and not labels:
        text = cols[0]
    else:
        known = [n for n in TEXT_NAMES if lower.get(n) != label]
        text = pick(text_column, "--text-column", schema.text_column, known, True)
    pair = None
    if schema.text_pair_column is not None or text_pair_column is not None:
        partner = [PAIR_OF.get(str(text).lower(), "")]
        pair = pick(text_pair_column, "--text-pair-column", schema.text_pair_column, partner, True)
    return text, pair, label
