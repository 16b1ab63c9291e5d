"""The static student as a training method (`--method static`, `--model static`, `distill --student static`):
model2vec's vectors of an encoder and a new head, trained in the shared loop (models/static.py holds the model,
its run files and its prediction; this module the training side: its defaults, building, refusals, record and
card). Under `textfit distill` the vectors come from the teacher's encoder and the loss from its scores."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from textfit.errors import UsageError
from textfit.models import static as model
from textfit.models.static import CONV, HIDDEN, PCA_DIMS, StaticStudent, is_static_run, student, student_config

if TYPE_CHECKING:
    from textfit.config import TrainConfig
    from textfit.data import TrainingData
    from textfit.run import RunManifest
    from textfit.train.setup import TrainState

NAME = "static"
LAYERS = False  # token vectors and a small head: no layer-wise decay, nothing to freeze
FP32 = True  # its steps are a lookup and a small head, which bf16 only rounds
BATCH_SIZE = model.TRAIN_BATCH
EPOCHS = model.EPOCHS
LEARNING_RATE = model.LEARNING_RATE
DEFAULTS_FOR = "a static student"


def check_task(task: str, pairs: bool) -> None:
    """Single texts, multi-class or multi-label; the rest in one line that says why."""
    if pairs:
        raise UsageError(
            "--student static classifies single texts: a bag of token vectors cannot compare two texts; drop "
            "--text-pair-column, or distill a transformer student (--student MODEL, --layers K)"
        )
    if task == "regression":
        raise UsageError(
            "--student static: regression is not offered (not measured); distill a transformer student "
            "(--student MODEL, --layers K)"
        )


def _require_model2vec() -> Any:
    try:
        from model2vec.distill import distill_from_model
    except ImportError:
        raise UsageError("--student static needs model2vec (and skeletoken): pip install 'textfit[static]'") from None
    return distill_from_model


@contextlib.contextmanager
def _quiet_model2vec() -> Iterator[None]:
    """model2vec's progress bar over the vocabulary and skeletoken's notes on the tokenizer tell a user of
    textfit nothing: textfit says in one line what was made and how long it took."""
    import functools
    import logging

    import model2vec.distill.inference as inference

    loggers = [logging.getLogger(n) for n in ("model2vec", "skeletoken")]
    levels = [g.level for g in loggers]
    bar = inference.tqdm
    inference.tqdm = functools.partial(bar, disable=True)
    for g in loggers:
        g.setLevel(logging.ERROR)
    try:
        yield
    finally:
        inference.tqdm = bar
        for g, level in zip(loggers, levels):
            g.setLevel(level)


def student_of(body: str | Path, label_names: list[str], task: str, say: Any = print) -> tuple[StaticStudent, Any]:
    """The student of `body` (a run folder or a model folder): model2vec's vectors of its encoder, a new head;
    and the body's tokenizer, which the run keeps."""
    import time

    import transformers
    from transformers import AutoModel, AutoTokenizer

    distill_from_model = _require_model2vec()
    transformers.logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(str(body))
    encoder = AutoModel.from_pretrained(str(body), use_safetensors=True)
    t = time.time()
    with _quiet_model2vec():
        static = distill_from_model(
            encoder, tokenizer, pca_dims=PCA_DIMS, device="cpu", token_remove_pattern=None, quantize_to="float32"
        )
    say(f"textfit: static vectors of {body}'s {len(tokenizer)} tokens by model2vec in {time.time() - t:.1f}s")
    vocab = tokenizer.get_vocab()
    body_vocab = static.tokenizer.get_vocab()
    hf_ids = np.zeros(len(body_vocab), dtype=np.int64)
    for token, i in body_vocab.items():
        if token not in vocab:
            raise UsageError(f"--student static: model2vec's vocabulary of {body} has {token!r}, its tokenizer not")
        hf_ids[i] = vocab[token]
    body_vectors = torch.from_numpy(np.asarray(static.embedding, dtype=np.float32))
    config = student_config(label_names, task, HIDDEN, static.dim, conv=CONV)
    model = student(body_vectors, torch.from_numpy(hf_ids), tokenizer, config, HIDDEN)
    model.body = {
        "hf_ids": hf_ids,
        "tokenizer": static.tokenizer.to_str(),
        "config": dict(static.config),
        "base": Path(str(body)).name,
    }
    return model, tokenizer


def for_training(
    cfg: TrainConfig, task: str, label_names: list[str], pairs: bool, body: Path, say: Any
) -> tuple[StaticStudent, Any]:
    """The student and tokenizer for `--student static`, its vectors from `body` (the teacher's run under
    `distill`, the packaged MiniLM under `train`); the options a static student cannot take are refused first."""
    check_task(task, pairs)
    for flag, on in (
        ("--layers", cfg.layers),
        ("--lora", cfg.lora),
        ("--freeze-backbone", cfg.freeze_backbone),
        ("--freeze-layers", cfg.freeze_layers),
    ):
        if on:
            raise UsageError(f"--student static has no transformer layers: drop {flag}")
    if cfg.teacher and is_static_run(body):
        raise UsageError(
            f"teacher {cfg.teacher} is a static student; distill from a transformer run (its encoder gives the vectors)"
        )
    return student_of(body, label_names, task, say)


USAGE = """
With textfit: `textfit predict {repo} "{example}"` on the downloaded folder (`transformers.pipeline` does not
load a static student). The token vectors alone, as sentence embeddings:

```python
from model2vec import StaticModel

embeddings = StaticModel.from_pretrained("{repo}/static").encode(["{example}"])
```"""


def _card_section(manifest: RunManifest) -> str:
    """A static student: what it is and how fast it predicted."""
    st = manifest.static
    if not st:
        return ""
    speed = st.get("texts_per_second")
    return (
        f"\n## Static student\n\nNo transformer: one {st['dim']}-dimensional vector per token (model2vec's "
        f"distillation of `{st['vectors_from']}`'s encoder, trained further with the head; model2vec's format in "
        f"`static/`), the mean and maximum of a text's token vectors"
        + (
            f", the mean of its neighbouring token pairs' vectors ({st['bigram_buckets']:,} hashed buckets, in "
            "`head.safetensors`)"
            if st.get("bigram_buckets")
            else ""
        )
        + (
            f", the maximum over its tokens of a learned window over each token and its two neighbours "
            f"({st['conv']} channels)"
            if st.get("conv")
            else ""
        )
        + f", and a head of one hidden layer of {st['hidden']} units."
        + (
            f" It predicted {speed:,.0f} texts a second on the validation split at the end of training "
            f"({st['measured_on']}).\n"
            if speed
            else "\n"
        )
    )


def build(cfg: TrainConfig, data: TrainingData, say: Any) -> tuple[str, StaticStudent, Any]:
    """The student of the teacher's encoder under `distill`, else of the packaged MiniLM."""
    from textfit.hub import default_model_path
    from textfit.train.methods.distill import teacher_folders

    schema = data.schema
    body = teacher_folders(cfg.teacher)[0] if cfg.teacher else Path(default_model_path())
    student, tokenizer = for_training(
        cfg, schema.task, schema.label_names, schema.text_pair_column is not None, body, say
    )
    return str(body), student, tokenizer


def teacher(cfg: TrainConfig, data: TrainingData, out: Path | None, say: Any) -> Any:
    """Under `textfit distill`: the teacher's scores (distill.prepare); none under `train`."""
    from textfit.train.methods.distill import prepare

    return prepare(cfg, data, out, say) if cfg.teacher else None


def record(s: TrainState, final: Any) -> None:
    """What it is and how fast it predicts, for textfit.json and the card."""
    split = s.data.splits.get("validation") or s.data.splits["train"]
    s.manifest.static = model.summary(final, s.tokenizer, split.texts, s.manifest.max_length, str(s.model_path))


def card(manifest: RunManifest, config: dict[str, Any]) -> dict[str, Any]:
    from textfit.train.methods.distill import card_section

    teacher_part = card_section(manifest, config) if manifest.distillation else ""
    return {
        "section": teacher_part + _card_section(manifest),
        "usage": USAGE,
        "library_name": "model2vec",
        "tags": ["static", "model2vec"],
    }
