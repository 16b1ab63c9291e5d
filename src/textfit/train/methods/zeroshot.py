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
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from textfit.data import ReadOptions, Split, TrainingData, read_for_run, read_splits
from textfit.data.read import fingerprint as file_fingerprint
from textfit.data.schema import Schema, label_ids
from textfit.errors import UsageError
from textfit.train.methods.contrastive import head_on_the_mean, logistic_head, pooled, set_classifier

if TYPE_CHECKING:
    from textfit.config import TrainConfig
    from textfit.run import RunManifest
    from textfit.train.setup import TrainState

NAME = "zero-shot"
LOOP = False  # the head is set from the descriptions' vectors: the loop only evaluates
SCALE = 30.0  # logits per unit of cosine similarity without a validation split to fit it on (RESULTS.md)
SELF_TRAIN_ROUNDS = 2  # label, keep the confident, fit; again with the fitted head (RESULTS.md: 2 beat 1)
SELF_TRAIN_KEEP = 0.5  # of the smallest label's count, from each label (RESULTS.md: 0.5 beat 0.25 and 1)
SELF_TRAIN_MIN = 16  # texts a label, at least, to self-train on


def check(cfg: TrainConfig) -> None:
    """--method zero-shot (or --zero-shot) needs the labels' descriptions."""
    if not cfg.label_description:
        raise UsageError(
            "--zero-shot: needs a description of every label, e.g. --label-description '0=a negative movie review' "
            "--label-description '1=a positive movie review'"
        )
    if cfg.self_train and not (cfg.data or cfg.train):
        raise UsageError("--self-train: needs --zero-shot and --data FILE of unlabelled texts to label and train on")


def refuse_elsewhere(cfg: TrainConfig, method: str) -> None:
    """This method's own flags, given to another method."""
    if cfg.label_description:
        raise UsageError("--label-description: used with --zero-shot only; add --zero-shot, or drop the descriptions")
    if cfg.self_train:
        raise UsageError("--self-train: needs --zero-shot and --data FILE of unlabelled texts to label and train on")


def read_data(cfg: TrainConfig) -> TrainingData:
    """The spine's question: the run's data (`training_data`)."""
    return training_data(cfg)


def descriptions(cfg: TrainConfig) -> list[tuple[str, str]]:
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


def _labelled(cfg: TrainConfig) -> dict[str, Split]:
    """The labelled files given with --zero-shot, read as training reads them: --data (unless --self-train
    reads its texts) or --validation as the validation split, --test as the test split."""
    evaluation = cfg.validation or (None if cfg.self_train else cfg.data or cfg.train)
    if evaluation is None and cfg.test is None:
        return {}
    if cfg.data and cfg.validation and not cfg.self_train:
        raise UsageError("--zero-shot: --data and --validation both given; one labelled file measures the model")
    first = evaluation or cfg.test
    reading = dataclasses.replace(cfg, data=None, train=first, validation=None, test=cfg.test if evaluation else None)
    splits, _, _, _ = read_splits(reading)
    named = {"validation" if evaluation else "test": splits["train"]}
    if "test" in splits and evaluation:
        named["test"] = splits["test"]
    return named


def training_data(cfg: TrainConfig) -> TrainingData:
    """The descriptions as the training split; the labelled files, if any, checked against them."""
    described = descriptions(cfg)
    labels = [label for label, _ in described]
    splits = _labelled(cfg)
    if cfg.self_train and not (cfg.data or cfg.train):
        raise UsageError(
            "--self-train: give --data FILE, the texts to label with the zero-shot model and learn from (a label "
            "column, if any, is not read; measure with --validation / --test)"
        )
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
    unlabeled = None
    if cfg.self_train:
        reading = cast(Any, SimpleNamespace(schema=schema))  # read_for_run asks a run only for its columns
        source = cfg.data or cfg.train
        assert source is not None  # check(): --self-train needs --data
        options = ReadOptions(encoding=cfg.encoding, quoting=cfg.quoting, text_column=cfg.text_column)
        unlabeled = read_for_run(source, reading, options, labels=False)
        if len(unlabeled.texts) < SELF_TRAIN_MIN * len(names):
            raise UsageError(
                f"{source}: {len(unlabeled.texts)} texts to self-train on; give at least {SELF_TRAIN_MIN} a label "
                f"({SELF_TRAIN_MIN * len(names)}), or leave out --self-train"
            )
        fingerprint += f"|self-train:{file_fingerprint([source])}"
        notes.append(f"self-training: {len(unlabeled.texts)} unlabelled texts from {source}")
    return TrainingData({"train": train, **splits}, schema, fingerprint, notes, unlabeled)


def fit_head(s: TrainState) -> None:
    """The classifier's rows: SCALE times each description's unit vector (the mean layer's output has norm
    sqrt(hidden) and zero mean, so the dot product over hidden is the cosine, the centred one). With
    --self-train, the head is then learned from the unlabelled texts (`self_train`)."""
    vectors = pooled(s.train_dl.dataset.features)
    order = np.asarray(s.train_dl.dataset.labels)
    weight = np.zeros_like(vectors)
    weight[order] = vectors * (SCALE / vectors.shape[1])
    bias = np.zeros(len(order))
    if s.data.unlabeled is not None:
        weight, bias = self_train(s, weight, bias)
    set_classifier(s.model, weight, bias)


def self_train(s: TrainState, weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Self-training on the unlabelled texts' vectors (the encoder is not changed): SELF_TRAIN_ROUNDS times,
    label every text with the current head, keep the most confident SELF_TRAIN_KEEP of the smallest label's
    count from each label (balanced), and fit a logistic-regression head on them. Measured on SST-2 and the
    IMDb sample (benchmarks/RESULTS.md): 0.67 -> 0.75 and 0.60 -> 0.73 for the same two descriptions."""
    from textfit.train.frozen import encode_split

    t = time.time()
    assert s.data.unlabeled is not None and s.manifest.method is not None  # training_data and fit set them
    x = pooled(
        encode_split(
            s.model, s.data.unlabeled, s.tokenizer, s.manifest, s.cfg.eval_batch_size, s.accelerator.device, s.amp
        )[0]
    )
    names, kept, rounds = s.data.schema.label_names, np.zeros(0, dtype=np.int64), 0
    for _ in range(SELF_TRAIN_ROUNDS):
        logits = x @ weight.T + bias
        guess = logits.argmax(1)
        top2 = np.sort(logits, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        counts = np.bincount(guess, minlength=len(names))
        k = int(SELF_TRAIN_KEEP * counts.min())
        if k < SELF_TRAIN_MIN // 2:
            rare = names[int(counts.argmin())]
            s.say(
                f"textfit: self-training stopped: the model labels {counts.min()} of {len(x)} texts {rare}; "
                "the head stays as it was (more texts, or other descriptions, may help)"
            )
            break
        kept = np.concatenate(
            [np.flatnonzero(guess == c)[np.argsort(-margin[guess == c], kind="stable")[:k]] for c in range(len(names))]
        )
        weight, bias = logistic_head(x[kept], guess[kept], "classification", len(names), False)
        rounds += 1
    seconds = time.time() - t
    s.manifest.method["self_training"] = {
        "texts": len(x),
        "kept": len(kept),
        "rounds": rounds,
        "seconds": round(seconds, 2),
    }
    if rounds:
        s.say(
            f"textfit: self-training: {len(x)} unlabelled texts labelled by the zero-shot model, the head learned "
            f"from the {len(kept)} most confident ({rounds} round(s), {seconds:.1f}s)"
        )
    return weight, bias


def fit(s: TrainState) -> None:
    """The mean layer appended, the descriptions and every split encoded once, the head set from them."""
    described = zip(s.data.schema.label_names, s.data.splits["train"].texts)
    s.manifest.method = {"name": NAME, "descriptions": dict(described), "scale": SCALE}
    head_on_the_mean(s, fit_head)


def card(manifest: RunManifest, config: dict[str, Any]) -> dict[str, Any]:
    """The model card's section: the descriptions, and how a text's logits come from them."""
    m = manifest.method
    if not m:
        return {}
    described = "".join(f"- `{label}`: {text}\n" for label, text in m["descriptions"].items())
    return {
        "section": (
            "\n## Zero-shot\n\nNo training rows: a text's logit for a label is the cosine similarity of its "
            f"mean-pooled embedding and the label's description, times {m['scale']:g} (the temperature rescales it "
            f"where a validation split was given). The descriptions:\n\n{described}"
        )
    }
