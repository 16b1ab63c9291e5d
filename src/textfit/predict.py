"""The one prediction path, used by `eval`, `predict`, the Python API and the server.

    clf = Classifier.load("runs/sst2")
    clf.predict(["a gripping film", "dull"])   # [Prediction(label='1', score=0.97, scores={...}), ...]
    clf.predict_proba(texts)                   # numpy array (n, num_labels)

Texts are tokenized once (cut, or split into windows, as the run was trained), sorted by
length so that each batch pads to almost nothing, run under `torch.inference_mode` (in bf16
where the hardware supports it: bf16 weights on CPUs, autocast on GPUs), and returned in the
input order. The run's task
decides what a prediction is: the best class (or the class past a tuned threshold), every
label over its threshold (multi-label), or a value (regression).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import LongText, encode_long, pool_windows, shared_widths
from .errors import UsageError
from .evaluate import decide, scores_from_logits
from .model import autocast_dtype, for_cpu_inference, load_run, run_task, tune_allocator

AMP_MIN_TOKENS = 512  # GPU: batches smaller than this (padded tokens) skip autocast
# CPU: at most this many padded tokens a batch, however many texts `batch_size` allows. On the
# project's CPU machine IMDb reviews (256 tokens) ran fastest in batches of 16-32 texts and SST-2
# sentences in batches of 64-128: the activations of a batch stay in the caches.
CPU_BATCH_TOKENS = 8192


@dataclass(frozen=True)
class Prediction:
    """The predicted label, its probability, and every class's probability.

    Multi-label runs: `labels` holds every label over its threshold (`label` is them joined
    by commas, `score` the highest probability). Regression runs: `value` is the prediction
    (and `score` too)."""

    label: str
    score: float
    scores: dict[str, float]
    labels: tuple[str, ...] | None = None
    value: float | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"label": self.label, "score": self.score, "probabilities": self.scores}
        if self.labels is not None:
            d["labels"] = list(self.labels)
        if self.value is not None:
            d = {"value": self.value}
        return d


class Classifier:
    """A trained run ready to predict: a PyTorch model, or an ONNX Runtime session of its export."""

    def __init__(self, model: Any, tokenizer: Any, manifest: dict[str, Any], precision: str = "auto", device: str | None = None,
                 quantize: str | None = None):
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.max_length: int = int(manifest.get("max_length", 512))
        self.pairs: bool = manifest.get("text_pair_column") is not None
        self.task = run_task(manifest)
        self.long = LongText.from_manifest(manifest)
        self.threshold = manifest.get("threshold")
        self.onnx = not isinstance(model, torch.nn.Module)
        if self.onnx:  # an onnxruntime.InferenceSession
            self.model, self.device, self.dtype = model, torch.device("cpu"), None
            self.input_names = [i.name for i in model.get_inputs()]
            self.labels: list[str] = list(manifest["label_names"])
            return
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.dtype = autocast_dtype(precision, self.device)
        if quantize in ("int8", "int8-dynamic"):
            # PyTorch's dynamic int8 quantization of the linear layers (CPU): int8 weights and activations.
            if self.device.type != "cpu":
                raise UsageError("--quantize int8 runs on the CPU only")
            self.model = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)
            self.dtype = None
        elif quantize is not None:
            raise UsageError(f"--quantize {quantize}: choose int8 or int8-dynamic")
        elif self.device.type == "cpu" and self.dtype == torch.bfloat16:
            self.model = for_cpu_inference(self.model)  # bf16 weights; no autocast needed
        if self.device.type == "cpu":
            tune_allocator()
        self.labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    @classmethod
    def load(cls, run: str | Path, precision: str = "auto", device: str | None = None, quantize: str | None = None,
             backend: str = "torch", adapter: bool = False) -> "Classifier":
        """`adapter=True` (a LoRA run): the base model with the saved adapter, not the merged weights."""
        if backend == "onnx":
            return cls.load_onnx(run, quantize)
        if backend != "torch":
            raise UsageError(f"--backend {backend}: choose torch or onnx")
        if adapter:
            model, tokenizer, manifest = load_adapter(run)
        else:
            model, tokenizer, manifest = load_run(run)
        return cls(model, tokenizer, manifest, precision, device, quantize)

    @classmethod
    def load_onnx(cls, run: str | Path, quantize: str | None = None, folder: str | Path | None = None) -> "Classifier":
        """The export in RUN/onnx (or `folder`): model.onnx, or the int8 file that `quantize` names."""
        import onnxruntime as ort
        from transformers import AutoTokenizer

        from .export import ONNX_FILES
        from .model import read_manifest

        manifest = read_manifest(run)
        folder = Path(folder) if folder is not None else Path(run) / "onnx"
        path = folder / ONNX_FILES.get(quantize or "", "model.onnx")
        if not path.is_file():
            flag = f" --quantize {quantize}" if quantize else ""
            raise UsageError(f"{run}: no {path.name} in {folder}; run 'textfit export {run} --format onnx{flag}' first")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return cls(session, AutoTokenizer.from_pretrained(str(folder)), manifest)

    def _logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.onnx:
            feed = {n: batch[n].numpy().astype(np.int64) for n in self.input_names}
            return torch.from_numpy(self.model.run(["logits"], feed)[0])
        if bool(batch["attention_mask"].all()):
            # No padding in this batch (sorted batches of long texts are often full): without a
            # mask, the model builds no (batch x 1 x length x length) bias and attention runs unmasked.
            batch.pop("attention_mask")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        # GPU: a few short texts run faster in fp32, as casting the weights costs more than bf16
        # saves. CPU: the weights are bf16 already (for_cpu_inference), autocast is not needed.
        amp = self.dtype is not None and self.device.type != "cpu" and batch["input_ids"].numel() >= AMP_MIN_TOKENS
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
        enc, doc = encode_long(self.tokenizer, list(texts), None if pairs is None else list(pairs), self.max_length, self.long)
        lengths = np.array([len(x) for x in enc["input_ids"]])
        out = np.zeros((len(lengths), len(self.labels)), dtype=np.float32)
        max_tokens = CPU_BATCH_TOKENS if self.device.type == "cpu" else None
        batches = length_sorted_batches(lengths, batch_size, max_tokens)
        # CPU: batches padded to widths they share (fewer oneDNN kernel builds, see shared_widths)
        widths = shared_widths(lengths[b[0]] for b in batches) if self.device.type == "cpu" else {}
        with torch.inference_mode():
            for ix in batches:
                out[ix] = self._logits(self._pad(enc, ix, widths.get(int(lengths[ix[0]])))).numpy()
        return pool_windows(out, doc, len(texts), self.long.pool)

    def _pad(self, enc: dict[str, list[list[int]]], ix: np.ndarray, width: int | None = None) -> dict[str, torch.Tensor]:
        """Rows `ix` of the encoded texts, padded to the longest of them (or to `width`), as tensors:
        the tokenizer's own padding rules, built with numpy (`tokenizer.pad` took 2% of IMDb prediction)."""
        tok = self.tokenizer
        longest = max(len(enc["input_ids"][i]) for i in ix)
        width = max(width or 0, longest)
        if tok.pad_token_id is None:  # the tokenizer's own error message
            return dict(tok.pad([{k: v[i] for k, v in enc.items()} for i in ix], padding="max_length", max_length=width, return_tensors="pt"))
        pad_values = {"input_ids": tok.pad_token_id, "token_type_ids": tok.pad_token_type_id, "attention_mask": 0}
        left = tok.padding_side == "left"
        batch = {}
        for key, rows in enc.items():
            arr = np.full((len(ix), width), pad_values.get(key, 0), dtype=np.int64)
            for j, i in enumerate(ix):
                row = rows[i]
                if left:
                    arr[j, width - len(row) :] = row
                else:
                    arr[j, : len(row)] = row
            batch[key] = torch.from_numpy(arr)
        return batch

    def predict_proba(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64) -> np.ndarray:
        """Class probabilities (softmax), one probability per label (multi-label, sigmoid), or
        for regression the predicted values (n, 1)."""
        return scores_from_logits(self.predict_logits(texts, pairs, batch_size), self.task)

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """Class ids, 0/1 per label, or values: the run's decision, thresholds included."""
        return decide(scores, self.task, self.threshold)

    def predict(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64) -> list[Prediction]:
        """Always a list of Prediction records, one per text, in the input order."""
        probs = self.predict_proba(texts, pairs, batch_size)
        chosen = self.decide(probs)
        preds = []
        for row, c in zip(probs, chosen):
            scores = {n: float(p) for n, p in zip(self.labels, row)}
            if self.task == "regression":
                preds.append(Prediction(f"{float(c):.4g}", float(c), scores, value=float(c)))
            elif self.task == "multi-label":
                on = tuple(n for n, x in zip(self.labels, c) if x)
                preds.append(Prediction(",".join(on), float(row.max()), scores, labels=on))
            else:
                preds.append(Prediction(self.labels[int(c)], float(row[int(c)]), scores))
        return preds


def length_sorted_batches(lengths: np.ndarray, batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Indices in batches, longest texts first, so that each batch pads to almost nothing: at
    most `batch_size` texts, and (when `max_tokens` is given) at most that many padded tokens,
    but always at least one text."""
    order = np.argsort(-lengths, kind="stable")
    batches, s = [], 0
    while s < len(order):
        n = batch_size if max_tokens is None else max(1, min(batch_size, max_tokens // max(1, int(lengths[order[s]]))))
        batches.append(order[s : s + n])
        s += n
    return batches


def load_adapter(run: str | Path) -> tuple[Any, Any, dict[str, Any]]:
    """A LoRA run as trained: its base model with the adapter (and trained head) from RUN/adapter."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from .model import default_model_path, load_for_training, quiet_peft, read_manifest, resolve_model

    manifest = read_manifest(run)
    lora = manifest.get("lora")
    if not lora or not (Path(run) / lora["adapter"]).is_dir():
        raise UsageError(f"--adapter: {run} was not trained with --lora (no adapter folder); load it without --adapter")
    base_path = lora.get("base_model_path") or default_model_path()
    if not Path(base_path).is_dir():
        base_path = resolve_model(manifest["base_model"])
    base, _ = load_for_training(base_path, manifest["label_names"], task=run_task(manifest))  # a fresh head, as training began
    with quiet_peft():
        model = PeftModel.from_pretrained(base, str(Path(run) / lora["adapter"]))
    return model.eval(), AutoTokenizer.from_pretrained(str(run)), manifest
