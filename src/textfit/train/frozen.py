"""Frozen backbone, trained fast: encode every text once, then train the head from the cache.

    fn = head_function(model)                   # None: this architecture's head is not known here
    feats = encode_features(model, loader, device, dtype)
    head = CachedHead(model, fn)                 # head(features=...) -> .logits

With `--freeze-backbone` the encoder's output for a text never changes, so the first epoch
computes the [CLS] vector of every text once (inference mode, no dropout in the frozen encoder)
and every later step runs only the head (pooler and classifier) on cached vectors: epochs after
the first cost a small fraction of the first. The head modules are the model's own, so saving
the model saves the trained head.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from textfit import accel
from textfit.data import EncodedDataset, LengthGroupedBatches, Split, encode_long, length_sorted_batches, make_collate
from textfit.run import RunManifest

if TYPE_CHECKING:
    from textfit.train.setup import TrainState

# Heads that read hidden[:, 0] themselves as out_proj(tanh(dense(...))); ELECTRA's also reads it, through a GELU
TANH_HEADS = ("roberta", "xlm-roberta", "camembert", "mpnet")


def head_function(model: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The classification head as a function of the first token's final hidden state."""
    base = model.base_model
    kind = getattr(model.config, "model_type", "")
    if hasattr(base, "pooler") and hasattr(model, "classifier") and hasattr(model, "dropout"):  # BERT family
        pooler = base.pooler
        if pooler is None:
            return lambda h: model.classifier(model.dropout(h))
        return lambda h: model.classifier(model.dropout(pooler(h[:, None, :])))
    if kind == "distilbert":
        return lambda h: model.classifier(model.dropout(F.relu(model.pre_classifier(h))))
    if kind in (*TANH_HEADS, "electra"):
        return lambda h: model.classifier(h[:, None, :])
    return None


class CachedHead(nn.Module):
    """The model's head over cached features; the training loop computes the task's loss."""

    def __init__(self, model: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, features: torch.Tensor) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        return SequenceClassifierOutput(logits=self.fn(features))


def encode_features(model: Any, loader: Any, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    """The first token's final hidden state for every example, in dataset order (fp32, on the CPU)."""
    model.eval()
    rows: dict[int, torch.Tensor] = {}
    with torch.inference_mode():
        for batch in loader:
            index = batch.pop("index")
            batch.pop("labels", None)
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None), accel.first_token_only(model):
                hidden = model.base_model(**batch).last_hidden_state[:, 0]
            for i, h in zip(index.tolist(), hidden.float().cpu()):
                rows[i] = h
    model.train()
    return torch.stack([rows[i] for i in range(len(rows))])


class FeatureDataset(torch.utils.data.Dataset):
    def __init__(self, features: torch.Tensor, labels: list[int]):
        self.features, self.labels = features, labels
        self.lengths = [1] * len(labels)  # one vector per example: nothing to pad

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"features": self.features[i], "labels": self.labels[i], "index": i}


def encode_splits(
    model: Any,
    train_dl: Any,
    splits: dict[str, Split],
    tokenizer: Any,
    manifest: RunManifest,
    batch_size: int,
    device: torch.device,
    amp: torch.dtype | None,
) -> dict[str, tuple[torch.Tensor, Any]]:
    """Every split's cached vectors: {"train": (vectors, None), "validation": (vectors, window -> text), ...}."""
    model.to(device)
    feats: dict[str, tuple[torch.Tensor, Any]] = {"train": (encode_features(model, train_dl, device, amp), None)}
    for name in ("validation", "test"):
        if name in splits:
            feats[name] = encode_split(model, splits[name], tokenizer, manifest, batch_size, device, amp)
    return feats


def encode_split(
    model: Any,
    split: Split,
    tokenizer: Any,
    manifest: RunManifest,
    batch_size: int,
    device: torch.device,
    amp: torch.dtype | None,
) -> tuple[torch.Tensor, Any]:
    """One split's vectors (length-sorted batches) and, for --long-text window, each window's text."""
    enc, doc = encode_long(tokenizer, split.texts, split.pairs, manifest.max_length, manifest.long_text)
    ds = EncodedDataset(enc)
    order = [b.tolist() for b in length_sorted_batches(np.asarray(ds.lengths), batch_size)]
    loader = torch.utils.data.DataLoader(ds, batch_sampler=order, collate_fn=make_collate(tokenizer, ds))
    return encode_features(model, loader, device, amp), doc


def feature_loader(features: torch.Tensor, labels: list[Any], batch_size: int, seed: int) -> Any:
    """The training loader over cached vectors, seeded like the token loader."""
    ds = FeatureDataset(features, labels)
    sampler = LengthGroupedBatches(ds.lengths, batch_size, seed)
    return torch.utils.data.DataLoader(ds, batch_sampler=sampler, generator=torch.Generator().manual_seed(seed))


def use_cached_features(s: TrainState) -> None:
    """Encode every split once through the (frozen) encoder; the head trains on the vectors (the state's loop
    then calls `CachedHead`). --freeze-backbone on one process, and the contrastive and zero-shot methods."""
    t = time.time()
    feats = encode_splits(
        s.model, s.train_dl, s.data.splits, s.tokenizer, s.manifest, s.cfg.eval_batch_size, s.accelerator.device, s.amp
    )
    s.features = {n: f for n, f in feats.items() if n != "train"}
    s.train_dl = feature_loader(feats["train"][0], s.train_dl.dataset.labels, s.cfg.batch_size or 16, s.cfg.seed)
    s.sampler = s.train_dl.batch_sampler
    fn = head_function(s.model)
    assert fn is not None
    s.trainable = CachedHead(s.model, fn)
    s.features_seconds = time.time() - t
    n = sum(len(f) for f, _ in feats.values())
    took = f"{s.features_seconds:.1f}s"
    s.say(f"textfit: frozen backbone: encoded {n} texts once in {took}; the head trains on the cached vectors")
