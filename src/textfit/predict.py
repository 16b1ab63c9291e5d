"""The one prediction path, used by `eval`, `predict`, the Python API and the server.

    clf = Classifier.load("runs/sst2")
    clf.predict(["a gripping film", "dull"])   # [Prediction(label='1', score=0.97, scores={...}), ...]
    clf.predict_proba(texts)                   # numpy array (n, num_labels)

Texts are tokenized once, sorted by length so that each batch pads to almost nothing,
run under `torch.inference_mode` (bf16 autocast where the hardware supports it), and
returned in the input order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import encode, make_collate
from .errors import UsageError
from .model import autocast_dtype, load_run


@dataclass(frozen=True)
class Prediction:
    """The predicted label, its probability, and every class's probability."""

    label: str
    score: float
    scores: dict[str, float]


class Classifier:
    def __init__(self, model: Any, tokenizer: Any, manifest: dict[str, Any], precision: str = "auto", device: str | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.dtype = autocast_dtype(precision, self.device)
        self.labels: list[str] = [model.config.id2label[i] for i in range(model.config.num_labels)]
        self.max_length: int = int(manifest.get("max_length", 512))
        self.pairs: bool = manifest.get("text_pair_column") is not None

    @classmethod
    def load(cls, run: str | Path, precision: str = "auto", device: str | None = None) -> "Classifier":
        model, tokenizer, manifest = load_run(run)
        return cls(model, tokenizer, manifest, precision, device)

    def predict_proba(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        if self.pairs and pairs is None:
            raise UsageError("this model classifies sentence pairs: give a second text for each text")
        if pairs is not None and len(pairs) != len(texts):
            raise UsageError(f"{len(texts)} texts but {len(pairs)} second texts; give one second text per text")
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        enc = encode(self.tokenizer, list(texts), None if pairs is None else list(pairs), self.max_length)
        lengths = np.array([len(x) for x in enc["input_ids"]])
        order = np.argsort(-lengths, kind="stable")
        collate = make_collate(self.tokenizer)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                ix = order[s : s + batch_size]
                batch = collate([{**{k: v[i] for k, v in enc.items()}, "index": int(i)} for i in ix])
                index = batch.pop("index")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                    logits = self.model(**batch).logits
                out[index.numpy()] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    def predict(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64) -> list[Prediction]:
        """Always a list of Prediction records, one per text, in the input order."""
        probs = self.predict_proba(texts, pairs, batch_size)
        preds = []
        for row in probs:
            best = int(row.argmax())
            preds.append(Prediction(self.labels[best], float(row[best]), {n: float(p) for n, p in zip(self.labels, row)}))
        return preds
