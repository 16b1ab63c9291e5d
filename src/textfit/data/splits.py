"""Rows of a split, and the validation and test splits carved from training data.

    split = take(train, [0, 2, 5])
    splits = carve_splits(splits, (0.8, 0.1, 0.1), seed=42, max_train_samples=None, notes=notes)

A missing validation (and test) split is carved from the training rows, stratified by label and
seeded with scikit-learn's `train_test_split`; `rows` keeps each row's line in its file, so the run's
splits.json can say which rows went where.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Split:
    """One split: texts (and second texts for pairs), labels, and where each row came from."""

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


def take(split: Split, ix: np.ndarray | list[int]) -> Split:
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


def stratified(
    labels: list[Any], fractions: tuple[float, float, float], seed: int, need: tuple[bool, bool]
) -> list[np.ndarray]:
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
        can_stratify = min(np.unique(y[ix], return_counts=True)[1]) >= 2 and n_out >= len(set(y[ix]))
        a, b = train_test_split(ix, test_size=n_out, random_state=seed, stratify=y[ix] if can_stratify else None)
        return np.sort(a), np.sort(b)

    rest, test = cut(idx, te)
    train, val = cut(rest, va / (tr + va) if va else 0.0)
    return [train, val, test]


def carve_splits(
    splits: dict[str, Split],
    fractions: tuple[float, float, float],
    seed: int,
    max_train_samples: int | None,
    notes: list[str],
    split_flag: str = "",
) -> dict[str, Split]:
    """Make the missing validation (and test) split from train, stratified and seeded; then
    take the --max-train-samples sample."""
    splits = dict(splits)
    train = splits["train"]
    need = ("validation" not in splits, "test" not in splits and "validation" not in splits)
    if need[0] or need[1]:
        tr_ix, va_ix, te_ix = stratified(train.labels, fractions, seed, need)
        if need[0] and len(va_ix):
            splits["validation"] = take(train, va_ix)
        if need[1] and len(te_ix):
            splits["test"] = take(train, te_ix)
        splits["train"] = train = take(train, tr_ix)
        made = [n for n, want, ix in zip(("validation", "test"), need, (va_ix, te_ix)) if want and len(ix)]
        kind = "random" if train.task == "regression" else "stratified"
        if made:
            notes.append(
                f"made a {kind} {'/'.join(made)} split from {train.source} (--split {split_flag}, seed {seed})"
            )
    if max_train_samples and max_train_samples < len(train.texts):
        rng = np.random.default_rng(seed)
        splits["train"] = take(train, np.sort(rng.permutation(len(train.texts))[:max_train_samples]))
    return splits
