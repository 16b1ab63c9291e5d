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


AMP_MIN_TOKENS = 512  # batches smaller than this (padded tokens) skip autocast


@dataclass(frozen=True)
class Prediction:
    """The predicted label, its probability, and every class's probability."""

    label: str
    score: float
    scores: dict[str, float]


class Classifier:
    """A trained run ready to predict: a PyTorch model, or an ONNX Runtime session of its export."""

    def __init__(self, model: Any, tokenizer: Any, manifest: dict[str, Any], precision: str = "auto", device: str | None = None,
                 quantize: str | None = None):
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.max_length: int = int(manifest.get("max_length", 512))
        self.pairs: bool = manifest.get("text_pair_column") is not None
        self.onnx = not isinstance(model, torch.nn.Module)
        if self.onnx:  # an onnxruntime.InferenceSession
            self.model, self.device, self.dtype = model, torch.device("cpu"), None
            self.input_names = [i.name for i in model.get_inputs()]
            self.labels: list[str] = list(manifest["label_names"])
            return
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.dtype = autocast_dtype(precision, self.device)
        if quantize == "int8":
            # Dynamic int8 quantization of the linear layers (CPU): int8 weights, fp32 activations.
            if self.device.type != "cpu":
                raise UsageError("--quantize int8 runs on the CPU only")
            self.model = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)
            self.dtype = None
        elif quantize is not None:
            raise UsageError(f"--quantize {quantize}: the only choice is int8")
        self.labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    @classmethod
    def load(cls, run: str | Path, precision: str = "auto", device: str | None = None, quantize: str | None = None,
             backend: str = "torch") -> "Classifier":
        if backend == "onnx":
            return cls.load_onnx(run, quantize)
        if backend != "torch":
            raise UsageError(f"--backend {backend}: choose torch or onnx")
        model, tokenizer, manifest = load_run(run)
        return cls(model, tokenizer, manifest, precision, device, quantize)

    @classmethod
    def load_onnx(cls, run: str | Path, quantize: str | None = None) -> "Classifier":
        import onnxruntime as ort
        from transformers import AutoTokenizer

        from .model import read_manifest

        manifest = read_manifest(run)
        folder = Path(run) / "onnx"
        path = folder / ("model.int8.onnx" if quantize == "int8" else "model.onnx")
        if not path.is_file():
            flag = " --quantize int8" if quantize == "int8" else ""
            raise UsageError(f"{run}: no {path.name} in {folder}; run 'textfit export {run} --format onnx{flag}' first")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return cls(session, AutoTokenizer.from_pretrained(str(folder)), manifest)

    def _logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.onnx:
            feed = {n: batch[n].numpy().astype(np.int64) for n in self.input_names}
            return torch.from_numpy(self.model.run(["logits"], feed)[0])
        batch = {k: v.to(self.device) for k, v in batch.items()}
        # A few short texts run faster in fp32: casting the weights costs more than bf16 saves.
        amp = self.dtype is not None and batch["input_ids"].numel() >= AMP_MIN_TOKENS
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=amp):
            return self.model(**batch).logits.float().cpu()

    def predict_logits(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64) -> np.ndarray:
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
                out[index.numpy()] = self._logits(batch).numpy()
        return out

    def predict_proba(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64) -> np.ndarray:
        logits = self.predict_logits(texts, pairs, batch_size)
        return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()

    def predict(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64) -> list[Prediction]:
        """Always a list of Prediction records, one per text, in the input order."""
        probs = self.predict_proba(texts, pairs, batch_size)
        preds = []
        for row in probs:
            best = int(row.argmax())
            preds.append(Prediction(self.labels[best], float(row[best]), {n: float(p) for n, p in zip(self.labels, row)}))
        return preds
