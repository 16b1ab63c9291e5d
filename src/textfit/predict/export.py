"""`textfit export RUN --format onnx [--quantize int8|int8-dynamic]`: an ONNX model that proves parity first.

    result = export_onnx("runs/sst2", quantize="int8")       # or a `Run` the command opened
    Classifier.load("runs/sst2", backend="onnx", quantize="int8").predict(["a gripping film"])

Writes RUN/onnx/ (or --output): model.onnx (and model.int8.onnx: every encoder matrix product's
weights in int8, block-wise with one scale per 128 values, activations kept in fp32: onnxruntime's
MatMulNBits; or model.int8-dynamic.onnx: onnxruntime's dynamic quantization, faster on CPUs with
int8 instructions and a little less faithful), the tokenizer, config.json and textfit.json beside it. Before the
folder is put in place, the ONNX model runs on a sample of texts of many lengths, padded in
batches, and its logits are compared with PyTorch's fp32: the largest difference and the label
agreement are printed, and the export is refused when they fail the bounds below.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textfit import accel, models
from textfit.errors import UsageError
from textfit.models.transformer import quiet_transformers, require_safetensors
from textfit.predict.classifier import INT8_MAX_DROP_POINTS, ONNX_FILES, Classifier, OnnxBackend, TorchBackend
from textfit.run import Run, write_json

MAX_DIFF_FP32 = 1e-3  # largest |logit difference| allowed for the fp32 export
MIN_AGREE_FP32 = 1.0
MIN_AGREE_INT8 = 0.95  # on the parity sample, whose random token texts sit near the boundary more than real data

SAMPLE = [
    "a gripping , beautifully acted film .",
    "dull .",
    "The room was spotless and the staff were lovely.",
    "I would not recommend this hotel to anyone; the service was slow, the food cold, and the bill wrong.",
    "It's fine.",
    "Not bad at all, actually quite good!",
    "the plot makes no sense and the acting is wooden throughout",
    "房间很干净，服务也很好。",
    "An uneven but often moving story about a family that falls apart and, slowly, finds its way back.",
]


class ParityError(Exception):
    """The exported model does not reproduce PyTorch's outputs."""


def _sample(tokenizer: Any, max_length: int, n_random: int = 48, seed: int = 0) -> list[str]:
    """The fixed sentences, plus texts of random tokens with lengths up to max_length."""
    rng = random.Random(seed)
    # sorted: a fast tokenizer's vocabulary comes in a different order in every process (a Rust hash map)
    vocab = sorted(t for t in tokenizer.get_vocab() if t.isalpha() and t.isascii() and len(t) > 2)
    texts = list(SAMPLE)
    for _ in range(n_random):
        n = rng.choice([3, 8, 20, 60, max_length])
        texts.append(" ".join(rng.choice(vocab) for _ in range(n)))
    return texts


INT8_BLOCK = 128


def quantize_int8(src: Path, dst: Path, block_size: int = INT8_BLOCK) -> None:
    """Weight-only int8: each MatMul's constant weights as symmetric int8 blocks of `block_size`
    values with a scale each (onnxruntime's MatMulNBits), activations in fp32.

    Dynamic quantization (int8 weights per channel and uint8 activations per tensor, onnxruntime's
    quantize_dynamic) changed more SST-2 dev labels of a MiniLM run than block-wise weights with fp32
    activations (benchmarks/RESULTS.md): one scale for a whole activation tensor loses the small values
    next to the outliers."""
    import logging

    import onnx
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    quiet = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it logs every node it skips
    try:
        config = nbits.DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, bits=8)
        quantizer = nbits.MatMulNBitsQuantizer(
            onnx.load(str(src)), bits=8, block_size=block_size, is_symmetric=True, algo_config=config
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
    finally:
        quiet.setLevel(level)


def agreement(clf: Any, got: np.ndarray, want: np.ndarray) -> float:
    """Share of texts whose prediction is the same: the class (thresholds included), every label
    of a multi-label text, or a regression value within 5% of the reference's spread."""
    a, b = (clf.decide(clf.scores(x)) for x in (got, want))  # calibrated, as thresholds were tuned
    if clf.task == "regression":
        return float((np.abs(a - b) <= 0.05 * max(float(np.std(b)), 1e-6)).mean())
    if clf.task == "multi-label":
        return float((a == b).all(-1).mean())
    return float((a == b).mean())


def _validation_split(run: Run, fingerprint: str) -> Any:
    """The run's validation split, read again as training read it (train_config.yaml), or a UsageError
    (also when the data's fingerprint is no longer the one the run was trained on)."""
    from textfit.config import load_config
    from textfit.data import load_data

    path = run.path / "train_config.yaml"
    if not path.is_file():
        raise UsageError(f"{path} is missing")
    with contextlib.redirect_stdout(io.StringIO()):  # the reader's notes on columns and splits were shown at training
        data = load_data(load_config(str(path), {}))
    if fingerprint and data.fingerprint != fingerprint:
        raise UsageError("the training data changed since the run was trained (its fingerprint differs)")
    split = data.splits.get("validation")
    if split is None or not split.labels:
        raise UsageError("the run has no validation split")
    return split


def validation_check(run: Run, ref: Any, int8: Any, quantize: str) -> dict[str, Any]:
    """The int8 file's validation metric against PyTorch fp32's on the run's own validation split (accuracy;
    multi-label: micro F1; regression: Pearson), in points; `passes` when it lost at most INT8_MAX_DROP_POINTS."""
    from textfit.metrics import task_metrics

    try:
        split = _validation_split(run, ref.manifest.data_fingerprint)
    except (UsageError, OSError, ValueError) as e:
        return {"quantize": quantize, "unchecked": str(e).splitlines()[0], "passes": False}
    task = ref.task
    metric = {"classification": "accuracy", "multi-label": "f1_micro", "regression": "pearson"}[task]
    values = []
    for clf in (ref, int8):
        scores = clf.scores(clf.predict_logits(split.texts, split.pairs))
        values.append(float(task_metrics(task, split.labels, scores, clf.labels, clf.threshold)[metric]))
    drop = 100 * (values[0] - values[1])
    return {
        "quantize": quantize,
        "metric": metric,
        "rows": len(split.labels),
        "fp32": values[0],
        "int8": values[1],
        "drop_points": drop,
        "passes": drop <= INT8_MAX_DROP_POINTS,
    }


def default_output(run: Run | str | Path) -> Path:
    """RUN/onnx: where `export` writes without --output."""
    return (run.path if isinstance(run, Run) else Path(run)) / "onnx"


def export_onnx(
    run: Run | str, output: str | None = None, quantize: str | None = None, opset: int = 17
) -> dict[str, Any]:
    """Export `run` (a `Run`, or its folder, opened here once) to ONNX, after the parity check."""
    import onnxruntime as ort
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if quantize not in ("int8", "int8-dynamic", None):
        raise UsageError(f"--quantize {quantize}: choose int8 or int8-dynamic")
    run = Run.open(run)
    manifest = run.manifest
    if (why := models.exportable(run)) is not None:
        raise UsageError(f"{run} is {why}")
    require_safetensors(run.path)
    quiet_transformers()
    remote = run.manifest.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(str(run.path), trust_remote_code=remote)
    # The plain attention exports to standard ONNX ops and traces without data-dependent branches.
    model = AutoModelForSequenceClassification.from_pretrained(
        str(run.path), use_safetensors=True, attn_implementation="eager", trust_remote_code=remote
    ).eval()
    accel.enable(model, "fp32", torch.device("cpu"))  # the graph computes the last layer for [CLS] alone, as PyTorch
    out = Path(output) if output else default_output(run)
    if out.is_dir() and any(out.iterdir()) and not (out / "model.onnx").is_file():
        first = next(p for p in sorted(out.rglob("*")) if p.is_file() or p.is_dir())
        raise UsageError(
            f"--output {out}: the folder is not a textfit export, and replacing it would delete {first}; "
            "choose another --output"
        )
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        names = ["input_ids", "attention_mask"] + (
            ["token_type_ids"] if "token_type_ids" in tokenizer.model_input_names else []
        )
        example = tokenizer(["an example text", "a second, longer example text"], padding=True, return_tensors="pt")
        args = tuple(example[n] for n in names)
        axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python conditions; parity below is the real check
            torch.onnx.export(
                model,
                args,
                str(tmp / "model.onnx"),
                input_names=names,
                output_names=["logits"],
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
            )
        files = ["model.onnx"]
        if quantize == "int8":
            quantize_int8(tmp / "model.onnx", tmp / ONNX_FILES["int8"])
            files.append(ONNX_FILES["int8"])
        if quantize == "int8-dynamic":
            import logging

            from onnxruntime.quantization import QuantType, quantize_dynamic

            logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice to pre-process, printed on every call
            quantize_dynamic(
                str(tmp / "model.onnx"),
                str(tmp / ONNX_FILES["int8-dynamic"]),
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
            files.append(ONNX_FILES["int8-dynamic"])
        tokenizer.save_pretrained(tmp)
        model.config.save_pretrained(tmp)
        write_json(tmp / "textfit.json", {**manifest.to_dict(), "exported_from": str(run), "onnx_opset": opset})

        # Parity: PyTorch fp32 against each ONNX file, on texts of many lengths, in padded batches.
        ref = Classifier(TorchBackend(model, precision="fp32", device="cpu"), tokenizer, manifest)
        texts = _sample(tokenizer, manifest.max_length)
        pairs = [t[::-1] for t in texts] if ref.pairs else None
        want = ref.predict_logits(texts, pairs, batch_size=16)
        report = {}
        onnx: dict[str, Classifier] = {}
        for f in files:
            sess = ort.InferenceSession(str(tmp / f), providers=["CPUExecutionProvider"])
            onnx[f] = Classifier(OnnxBackend(sess), tokenizer, manifest)
            got = onnx[f].predict_logits(texts, pairs, batch_size=16)
            diff = float(np.abs(got - want).max())
            agree = agreement(ref, got, want)
            report[f] = {"max_logit_diff": diff, "label_agreement": agree, "texts": len(texts)}
            ok = (diff <= MAX_DIFF_FP32 and agree >= MIN_AGREE_FP32) if f == "model.onnx" else agree >= MIN_AGREE_INT8
            print(
                f"textfit: parity {f}: max |logit difference| {diff:.2e}, label agreement {100 * agree:.1f}% on "
                f"{len(texts)} texts "
                f"({'ok' if ok else 'FAILED'})"
            )
            if not ok:
                raise ParityError(
                    f"{f} does not reproduce the PyTorch model (max logit difference {diff:.3g}, "
                    f"label agreement {100 * agree:.1f}%); nothing was written"
                )
        if quantize:
            report["int8_check"] = validation_check(run, ref, onnx[files[-1]], quantize)
            c = report["int8_check"]
            if "unchecked" in c:
                print(f"textfit: {files[-1]} not checked on the validation split: {c['unchecked']}")
            else:
                use = (
                    "--backend auto uses it on CPUs without bf16"
                    if c["passes"]
                    else f"over {INT8_MAX_DROP_POINTS}: --backend auto keeps fp32"
                )
                print(
                    f"textfit: {files[-1]} on {c['rows']} validation rows: {c['metric']} {c['int8']:.4f} against "
                    f"fp32 {c['fp32']:.4f} ({c['drop_points']:+.2f} points lost; {use})"
                )
        write_json(tmp / "parity.json", report)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"textfit: exported {', '.join(files)} to {out}")
    return {"folder": str(out), "files": files, "parity": report}
