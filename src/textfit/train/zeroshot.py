"""Zero-shot: a classifier from one description per label, no labelled rows.

    textfit train --zero-shot --label-description "0=a negative movie review" \\
        --label-description "1=a positive movie review" --output runs/zero

`training_data` makes the run's data: the descriptions are its training rows (one per label), and a labelled
`--data`, `--validation` or `--test` file only measures the model (a `--data` file is the validation split).
The run is built as a contrastive run is (fewshot.py): the mean layer appended to the encoder, every
description encoded once, and the classifier's rows set to the descriptions' vectors, so that a text's logit
for a label is SCALE times the cosine similarity of its embedding and the label's description. With a
validation split, the temperature (--calibration, on by default) fits that scale to the labels; without one,
SCALE is the value fitted on SST-2 and the IMDb sample (benchmarks/RESULTS.md). sentence-transformers'
`util.cos_sim` computes the same similarities; here they live in the classifier's weights so that the run is
an ordinary sequence-classification model every command and `pipeline` load.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..data import Split, TrainingData, read_splits
from ..data.schema import Schema, label_ids
from ..errors import UsageError
from .fewshot import set_classifier

SCALE = 30.0  # logits per unit of cosine similarity without a validation split to fit it on (RESULTS.md)


def descriptions(cfg: Any) -> list[tuple[str, str]]:
    """--label-description LABEL=TEXT, in the order given: (label, description) pairs."""
    out: list[tuple[str, str]] = []
    for item in cfg.label_description or []:
        label, sep, text = str(item).partition("=")
        label, text = label.strip(), text.strip()
        if not sep or not label or not text:
            raise UsageError(
                f"--label-description {item!r}: expected LABEL=DESCRIPTION, e.g. '1=a positive movie review'"
            )
        if label in dict(out):
            raise UsageError(f"--label-description: label {label!r} is described twice; give each label once")
        out.append((label, text))
    if len(out) < 2:
        raise UsageError("--zero-shot: describe at least two labels, one --label-description LABEL=TEXT each")
    return out


def _labelled(cfg: Any) -> dict[str, Split]:
    """The labelled files given with --zero-shot, read as training reads them: --data or --validation as the
    validation split, --test as the test split."""
    evaluation = cfg.validation or cfg.data or cfg.train
    if evaluation is None and cfg.test is None:
        return {}
    if cfg.data and cfg.validation:
        raise UsageError("--zero-shot: --data and --validation both given; one labelled file measures the model")
    first = evaluation or cfg.test
    reading = dataclasses.replace(cfg, data=None, train=first, validation=None, test=cfg.test if evaluation else None)
    splits, _, _, _ = read_splits(reading)
    named = {"validation" if evaluation else "test": splits["train"]}
    if "test" in splits and evaluation:
        named["test"] = splits["test"]
    return named


def training_data(cfg: Any) -> TrainingData:
    """The descriptions as the training split; the labelled files, if any, checked against them."""
    described = descriptions(cfg)
    labels = [label for label, _ in described]
    splits = _labelled(cfg)
    if cfg.self_train:
        raise UsageError("--self-train: not available in this version; train on labelled rows with --method auto")
    values: list[Any] = labels
    for split in splits.values():
        if split.task != "classification":
            raise UsageError(f"{split.source}: --zero-shot classifies into the described labels; this is {split.task}")
        seen = sorted({str(v) for v in split.labels})
        missing = [v for v in seen if v not in labels]
        if missing:
            raise UsageError(
                f"{split.source}: label {missing[0]!r} has no --label-description (described: {', '.join(labels)}); "
                f"add --label-description '{missing[0]}=...'"
            )
        unused = [v for v in labels if v not in seen]
        if unused and split is next(iter(splits.values())):
            raise UsageError(
                f"--label-description {unused[0]}=...: label {unused[0]!r} is not in {split.source} (its labels: "
                f"{', '.join(seen)}); describe the data's labels"
            )
        values = [next(v for v in split.labels if str(v) == label) for label in labels]  # the file's own types
    if all(isinstance(v, int) for v in values):  # integer labels in their order, as training orders them
        order = np.argsort(values, kind="stable")
        described = [described[i] for i in order]
        values = [values[i] for i in order]
    names = [label for label, _ in described]
    schema = Schema(
        task="classification",
        text_column="text",
        text_pair_column=None,
        label_column="label",
        label_names=names,
        label_values=list(values),
        label_separator=None,
    )
    train = Split("--label-description", [text for _, text in described], None, names, list(range(1, len(names) + 1)))
    train.labels = label_ids(train, names, schema)
    for split in splits.values():
        split.labels = label_ids(split, split.labels, schema)
    notes = [f"zero-shot: {len(names)} labels described; no training rows"]
    fingerprint = "zero-shot:" + "|".join(f"{label}={text}" for label, text in described)
    return TrainingData({"train": train, **splits}, schema, fingerprint, notes)


def fit_head(s: Any) -> None:
    """The classifier's rows: SCALE times each description's unit vector (the mean layer's output has norm
    sqrt(hidden) and zero mean, so the dot product over hidden is the cosine, the centred one)."""
    from .fewshot import pooled

    vectors = pooled(s.train_dl.dataset.features)
    order = np.asarray(s.train_dl.dataset.labels)
    weight = np.zeros_like(vectors)
    weight[order] = vectors * (SCALE / vectors.shape[1])
    set_classifier(s.model, weight, np.zeros(len(order)))
