"""The one prediction path: `eval`, `predict`, the server, the export's parity check and training's
evaluations all call `Classifier.predict_logits`.

    clf = Classifier.load("runs/sst2")         # or Classifier.load(run), a `Run` the command opened
    clf.predict(["a gripping film", "dull"])   # [Prediction(label='positive', score=0.97, scores={...}), ...]
    clf.predict_proba(texts)                   # numpy array (n, num_labels)

Texts are tokenized once (cut, or split into windows, as the run was trained), sorted by length so
that each batch pads to almost nothing, run by a backend (PyTorch, or ONNX Runtime for an export)
and returned in the input order. The run's task decides what a prediction is: the best class (or
the class past a tuned threshold), every label over its threshold (multi-label), or a value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from textfit import accel, models
from textfit.accel import governor_for
from textfit.data.batching import ladder_batches, length_sorted_batches, pad, width_plan
from textfit.data.tokens import encode_long, pool_windows
from textfit.errors import UsageError
from textfit.metrics import decide, scores_from_logits
from textfit.run import Run, RunManifest

AMP_MIN_TOKENS = 512  # GPU: batches smaller than this (padded tokens) skip autocast
# CPU: at most this many padded tokens a batch, however many texts `batch_size` allows, so that a
# batch's activations stay in the caches (the batch sizes measured best are in benchmarks/RESULTS.md).
CPU_BATCH_TOKENS = 8192
ONNX_FILES = {"": "model.onnx", "int8": "model.int8.onnx", "int8-dynamic": "model.int8-dynamic.onnx"}
BACKENDS = ("auto", "torch", "onnx", "openvino")
# auto takes an int8 export only when it kept the run's validation metric within this many points of fp32
INT8_MAX_DROP_POINTS = 0.3


def int8_check(run: Run | str | Path) -> dict[str, Any] | None:
    """What `textfit export --quantize` measured of its int8 file on the run's validation split (None: no export)."""
    import json

    path = (run.path if isinstance(run, Run) else Path(run)) / "onnx" / "parity.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("int8_check")
    except (OSError, ValueError, AttributeError):
        return None


def choose_backend(
    run: Run | str | Path,
    precision: str = "auto",
    device: str | None = None,
    quantize: str | None = None,
    adapter: bool = False,
) -> tuple[str, str | None, str]:
    """--backend auto: (backend, quantize, why). PyTorch, in bf16 on CPUs whose kernels have it (4.8x
    `pipeline`); on CPUs without bf16, the run's int8-dynamic ONNX export on ONNX Runtime where its
    validation check passed (7.0x `pipeline` on SST-2 dev against PyTorch fp32's 2.0-2.4x, 2.0x against
    1.0x on IMDb, AVX2 path; benchmarks/RESULTS.md), else PyTorch fp32 (ONNX Runtime's and OpenVINO's fp32
    measured faster on some sets and slower on others; int8-dynamic beat them on every set)."""
    run = Run.open(run)
    if (only := models.torch_only(run)) is not None:
        return "torch", None, f"PyTorch fp32 ({only})"
    if adapter or quantize is not None or precision != "auto":
        return "torch", quantize, "PyTorch (as --precision, --quantize or --adapter ask)"
    dev = accel.pick_device(device or "auto")
    if dev != "cpu":
        return "torch", None, f"PyTorch on {dev}"
    kind = accel.describe_cpu()
    if accel.cpu_kind().bf16:
        return "torch", None, f"PyTorch bf16 (CPU kind {kind})"
    check = int8_check(run)
    if not isinstance(check, dict) or not {"metric", "int8", "fp32", "rows", "drop_points"} <= set(check):
        check = check if isinstance(check, dict) and "unchecked" in check else None  # none, or not one textfit wrote
    if check and check.get("quantize") == "int8-dynamic" and check.get("passes"):
        return (
            "onnx",
            "int8-dynamic",
            (
                f"ONNX Runtime int8-dynamic (CPU kind {kind}, no bf16; validation {check['metric']} "
                f"{check['int8']:.4f} against fp32 {check['fp32']:.4f} on {check['rows']} rows)"
            ),
        )
    if check is None or check.get("quantize") != "int8-dynamic":
        make = f"textfit export {run} --format onnx --quantize int8-dynamic"
        why = f"no checked int8-dynamic export: '{make}' makes one"
    elif "unchecked" in check:
        why = f"the int8-dynamic export was not checked: {check['unchecked']}"
    else:
        lost = f"{check['drop_points']:.2f} points of validation {check['metric']}"
        why = f"int8-dynamic lost {lost}, over {INT8_MAX_DROP_POINTS}"
    return "torch", None, f"PyTorch fp32 (CPU kind {kind}, no bf16; {why})"


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
        if self.value is not None:
            return {"value": self.value}
        d: dict[str, Any] = {"label": self.label, "score": self.score, "probabilities": self.scores}
        if self.labels is not None:
            d["labels"] = list(self.labels)
        return d


class Backend(Protocol):
    device: torch.device

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...


class TorchBackend:
    """A PyTorch model: bf16 weights and fused kernels on CPUs with bf16 units (`accel.enable`),
    autocast on GPUs, or PyTorch's dynamic int8 quantization of the linear layers (CPU)."""

    def __init__(self, model: Any, precision: str = "auto", device: str | None = None, quantize: str | None = None):
        # --device names (auto, cuda, mps, cpu) are resolved; a torch device such as "cuda:1" is taken as it is
        if device is None or device in accel.DEVICES:
            device = accel.pick_device(device or "auto")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        # a model without attention (token vectors) stays fp32: a lookup and a mean cost nothing, bf16 would round
        self.dtype = accel.autocast_dtype(precision, self.device) if models.has_attention(model) else None
        if quantize in ("int8", "int8-dynamic"):
            if self.device.type != "cpu":
                raise UsageError("--quantize int8 runs on the CPU only")
            self.model = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)
            self.dtype = None
            accel.enable(self.model, "fp32", self.device)
        elif quantize is not None:
            raise UsageError(f"--quantize {quantize}: choose int8 or int8-dynamic")
        elif self.device.type == "cpu" and self.dtype == torch.bfloat16:
            self.model = accel.enable(self.model, "infer", self.device)  # bf16 weights: no autocast needed
        elif self.device.type == "cpu":
            accel.enable(self.model, "fp32", self.device)
        self.governor = governor_for(self.device, 1)  # fewer threads while other work shares the CPU

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if bool(batch["attention_mask"].all()):
            # No padding in this batch (sorted batches of long texts are often full): without a
            # mask, the model builds no attention bias and attention runs unmasked.
            batch.pop("attention_mask")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        # GPU: a few short texts run faster in fp32, as casting the weights costs more than bf16 saves.
        amp = self.dtype is not None and self.device.type != "cpu" and batch["input_ids"].numel() >= AMP_MIN_TOKENS
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=amp):
            return self.model(**batch).logits.float().cpu()


class OnnxBackend:
    """An ONNX Runtime session of a run's export (`textfit export`)."""

    def __init__(self, session: Any):
        self.session, self.device = session, torch.device("cpu")
        self.input_names = [i.name for i in session.get_inputs()]

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feed = {n: batch[n].numpy().astype(np.int64) for n in self.input_names}
        return torch.from_numpy(self.session.run(["logits"], feed)[0])


class OpenVinoBackend:
    """An OpenVINO CPU model compiled from an ONNX file (a run's export; a QDQ file runs as int8).

    `precision` is OpenVINO's inference precision hint: "f32" unless asked, since OpenVINO's own
    default on a CPU with bf16 units is bf16 (textfit's PyTorch path covers those CPUs)."""

    def __init__(self, path: str | Path, precision: str = "f32"):
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        self.model = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.input_names = [i.get_any_name() for i in self.model.inputs]
        self.request = self.model.create_infer_request()
        self.device = torch.device("cpu")

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feed = {n: batch[n].numpy().astype(np.int64) for n in self.input_names}
        return torch.from_numpy(np.array(self.request.infer(feed)[0]))


class Classifier:
    """A trained run ready to predict: its tokenizer, its manifest, and a backend (and `run`, the `Run` it
    was loaded from, when `load` made it: the explainer and the server read the run through it)."""

    def __init__(self, backend: Backend, tokenizer: Any, manifest: RunManifest, run: Run | None = None):
        self.backend, self.tokenizer, self.manifest, self.run = backend, tokenizer, manifest, run
        self.backend_name = {TorchBackend: "torch", OnnxBackend: "onnx", OpenVinoBackend: "openvino"}.get(
            type(backend), type(backend).__name__
        )
        self.backend_choice = ""  # --backend auto: what it chose and why
        self.task = manifest.task
        self.labels: list[str] = list(manifest.label_names)
        self.pairs = manifest.pairs
        self.threshold = manifest.threshold

    @classmethod
    def load(
        cls,
        run: Run | str | Path,
        precision: str = "auto",
        device: str | None = None,
        quantize: str | None = None,
        backend: str = "torch",
        adapter: bool = False,
    ) -> Classifier:
        """`adapter=True` (a LoRA run): the base model with the saved adapter, not the merged weights.
        backend: torch, onnx (RUN/onnx on ONNX Runtime), openvino (RUN/onnx/model.onnx on OpenVINO) or
        auto (`choose_backend`; the CLI's default), whose choice is kept in `backend_choice`. `run`: a `Run`
        (its manifest is not read again), or its folder (opened here, once)."""
        run = Run.open(run)
        why = ""
        if backend == "auto":
            backend, quantize, why = choose_backend(run, precision, device, quantize, adapter)
        if backend == "onnx":
            clf = cls.load_onnx(run, quantize)
        elif backend == "openvino":
            clf = cls.load_openvino(run, quantize)
        elif backend == "torch":
            model, tokenizer = models.load(run, adapter=adapter)
            clf = cls(TorchBackend(model, precision, device, quantize), tokenizer, run.manifest, run)
        else:
            raise UsageError(f"--backend {backend}: choose one of {', '.join(BACKENDS)}")
        clf.backend_name = backend + (f" {quantize}" if quantize else "")
        clf.backend_choice = why
        return clf

    @classmethod
    def load_openvino(cls, run: Run | str | Path, quantize: str | None = None) -> Classifier:
        """OpenVINO fp32 over the run's ONNX export (RUN/onnx/model.onnx); int8 is ONNX Runtime's."""
        from transformers import AutoTokenizer

        if quantize is not None:
            raise UsageError(
                f"--backend openvino runs the fp32 export; drop --quantize {quantize} or use --backend onnx"
            )
        try:
            import openvino  # noqa: F401
        except ImportError:
            raise UsageError("--backend openvino needs OpenVINO: pip install openvino") from None
        run = Run.open(run)
        folder = run.path / "onnx"
        if not (folder / "model.onnx").is_file():
            raise UsageError(f"{run}: no model.onnx in {folder}; run 'textfit export {run} --format onnx' first")
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=run.manifest.trust_remote_code)
        return cls(OpenVinoBackend(folder / "model.onnx"), tokenizer, run.manifest, run)

    @classmethod
    def load_onnx(
        cls,
        run: Run | str | Path,
        quantize: str | None = None,
        folder: str | Path | None = None,
    ) -> Classifier:
        """The export in RUN/onnx (or `folder`): model.onnx, or the int8 file that `quantize` names."""
        import onnxruntime as ort
        from transformers import AutoTokenizer

        run = Run.open(run)
        folder = Path(folder) if folder is not None else run.path / "onnx"
        path = folder / ONNX_FILES.get(quantize or "", "model.onnx")
        if not path.is_file():
            flag = f" --quantize {quantize}" if quantize else ""
            raise UsageError(f"{run}: no {path.name} in {folder}; run 'textfit export {run} --format onnx{flag}' first")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=run.manifest.trust_remote_code)
        return cls(OnnxBackend(session), tokenizer, run.manifest, run)

    def predict_logits(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        if self.pairs and pairs is None:
            raise UsageError("this model classifies sentence pairs: give a second text for each text")
        if pairs is not None and len(pairs) != len(texts):
            raise UsageError(f"{len(texts)} texts but {len(pairs)} second texts; give one second text per text")
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        m = self.manifest
        model = getattr(self.backend, "model", None)
        if pairs is None:  # the model's own path for single texts, where it has one
            fast = models.fast_logits(model, self.tokenizer, list(texts), m.max_length, m.long_text)
            if fast is not None:
                return fast
        enc, doc = encode_long(
            self.tokenizer, list(texts), None if pairs is None else list(pairs), m.max_length, m.long_text
        )
        lengths = np.array([len(x) for x in enc["input_ids"]])
        out = np.zeros((len(lengths), len(self.labels)), dtype=np.float32)
        cpu = self.backend.device.type == "cpu"
        if not models.has_attention(model):  # big batches, no token cap
            batch_size, cpu = models.batch_size(model, batch_size), False
        if cpu:  # a fixed set of shapes, whatever the chunk: fewer kernel builds, flat memory (ladder_batches)
            planned = ladder_batches(lengths, batch_size, CPU_BATCH_TOKENS, m.max_length)
        else:
            batches = length_sorted_batches(lengths, batch_size)
            plan = width_plan(self.backend.device.type)  # fewer distinct shapes: fewer kernel builds
            widths = plan(lengths[b[0]] for b in batches) if plan else {}
            planned = [(b, len(b), widths.get(int(lengths[b[0]]), int(lengths[b[0]]))) for b in batches]
        with torch.inference_mode():
            governor = getattr(self.backend, "governor", None)
            for ix, rows, width in planned:
                if governor is not None:
                    governor.tick()
                run = np.concatenate([ix, np.repeat(ix[-1:], rows - len(ix))]) if rows > len(ix) else ix
                out[ix] = self.backend.logits(pad(self.tokenizer, enc, run, width)).numpy()[: len(ix)]
        return pool_windows(out, doc, len(texts), m.long_text.pool)

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """Raw logits as the run's calibrated probabilities (or, for regression, the values)."""
        return scores_from_logits(logits, self.task, self.manifest.temperature)

    def predict_proba(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64) -> np.ndarray:
        """Class probabilities (softmax), one probability per label (multi-label, sigmoid), or
        for regression the predicted values (n, 1); calibrated when the run was (its temperature)."""
        return self.scores(self.predict_logits(texts, pairs, batch_size))

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
