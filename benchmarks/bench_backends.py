"""Prediction backends for CPUs without bf16 (issue 27): PyTorch, ONNX Runtime and OpenVINO, fp32 and int8,
against transformers.pipeline, on the same run and texts, in one process.

    python benchmarks/bench_backends.py RUN                       # RUN: a textfit run folder
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/bench_backends.py RUN   # the AVX2 path

Rows: the pipeline (one text at a time, and batch_size=32); textfit's PyTorch path in fp32 and its default;
ONNX Runtime on the plain export, with its transformer optimizer, int8 dynamic, and int8 static (QDQ,
calibrated on the run's own training texts); OpenVINO fp32 on the export and int8 on the static QDQ file.
Texts/s over SST-2 dev (872) and an IMDb sample, and label agreement with textfit's PyTorch fp32. Note:
oneDNN (PyTorch, OpenVINO) obeys ONEDNN_MAX_CPU_ISA; ONNX Runtime's MLAS has no such cap and always
picks its kernels from CPUID, so its rows under the cap are the machine's full ISA.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_predict import texts_for  # noqa: E402
from textfit.data.batching import length_sorted_batches, pad  # noqa: E402
from textfit.data.tokens import encode_long  # noqa: E402
from userdata import machine_kind  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


# ONNX Runtime's own tools: its BERT fusions, and static int8 (QDQ) with activation ranges from the run's texts.
def build_optimized(src: str | Path, dst: str | Path, manifest: Any) -> dict[str, int]:
    """The export with ONNX Runtime's BERT fusions (attention, skip layer norm, bias GELU); returns what was fused."""
    from onnxruntime.transformers import optimizer
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(Path(src).parent))
    heads = getattr(config, "num_attention_heads", getattr(config, "n_heads", 0))
    hidden = getattr(config, "hidden_size", getattr(config, "dim", 0))
    opt = optimizer.optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0)
    opt.save_model_to_file(str(dst))
    return {k: v for k, v in opt.get_fused_operator_statistics().items() if v}


def calibration_batches(clf: Any, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32) -> list[dict]:
    """The texts as the export's inputs, tokenized and padded as prediction does them (numpy int64)."""
    m = clf.manifest
    enc, _ = encode_long(clf.tokenizer, list(texts), None if pairs is None else list(pairs), m.max_length, m.long_text)
    lengths = np.array([len(x) for x in enc["input_ids"]])
    out = []
    for ix in length_sorted_batches(lengths, batch_size, None):
        batch = pad(clf.tokenizer, enc, ix, None)
        out.append({k: v.numpy().astype(np.int64) for k, v in batch.items()})
    return out


def build_static_int8(
    src: str | Path, dst: str | Path, clf: Any, texts: list[str], pairs: list[str] | None = None
) -> None:
    """Static int8 (QDQ): the matrix products' weights per channel and their inputs per tensor, with
    activation ranges from the run's own `texts` (ONNX Runtime's calibration, percentile of the range)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    names = {i.name for i in onnx.load(str(src), load_external_data=False).graph.input}
    batches = [{k: v for k, v in b.items() if k in names} for b in calibration_batches(clf, texts, pairs)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict | None:
            return next(self.it, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's advice to pre-process, printed on every call
    try:
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        root.setLevel(level)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run")
    p.add_argument("--data", default="sst2,imdb")
    p.add_argument("--samples", type=int, default=300, help="IMDb reviews")
    p.add_argument("--variants", default="", help="comma-separated names to run (default: all)")
    a = p.parse_args()

    import numpy as np
    import pandas as pd
    import torch
    from transformers import pipeline
    from transformers.utils import logging

    from textfit import Classifier
    from textfit.accel import cpu
    from textfit.predict.classifier import OpenVinoBackend
    from textfit.predict.export import export_onnx

    logging.set_verbosity_error()
    run = Path(a.run)
    print(
        f"machine: {machine_kind()}; textfit CPU kind: {cpu.describe()}; torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}; run {run}"
    )
    ref = Classifier.load(run, precision="fp32")
    tmp = Path(tempfile.mkdtemp())
    export_onnx(str(run), str(tmp / "onnx"), quantize="int8-dynamic")
    calib = pd.read_csv(SHARED / "sst2/train.tsv", sep="\t", quoting=3).sentence.sample(256, random_state=0).tolist()
    t = time.perf_counter()
    build_optimized(tmp / "onnx" / "model.onnx", tmp / "onnx" / "model.opt.onnx", ref.manifest)
    print(f"optimizer: {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    build_static_int8(tmp / "onnx" / "model.onnx", tmp / "onnx" / "model.int8-static.onnx", ref, calib)
    print(f"static int8 with calibration on 256 training texts: {time.perf_counter() - t:.1f} s")

    def ort(name):
        import onnxruntime as ort

        from textfit.predict.classifier import OnnxBackend

        s = ort.InferenceSession(str(tmp / "onnx" / name), providers=["CPUExecutionProvider"])
        return Classifier(OnnxBackend(s), ref.tokenizer, ref.manifest)

    def ov(name, precision="f32"):
        return Classifier(OpenVinoBackend(tmp / "onnx" / name, precision), ref.tokenizer, ref.manifest)

    pipe = pipeline("text-classification", model=str(run), device=-1)
    label_of = {n: i for i, n in enumerate(ref.labels)}

    def via_pipe(bs):
        return lambda texts: np.array(
            [
                label_of[o["label"]]
                for o in pipe(texts, batch_size=bs, truncation=True, max_length=ref.manifest.max_length)
            ]
        )

    def via(clf):
        return lambda texts: clf.predict_proba(texts).argmax(-1)

    makers = {
        "pipeline (one at a time)": lambda: via_pipe(1),
        "pipeline batch_size=32": lambda: via_pipe(32),
        "torch fp32": lambda: via(ref),
        "torch default": lambda: via(Classifier.load(run)),
        "onnx fp32": lambda: via(ort("model.onnx")),
        "onnx fp32 optimized": lambda: via(ort("model.opt.onnx")),
        "onnx int8-dynamic": lambda: via(ort("model.int8-dynamic.onnx")),
        "onnx int8-static": lambda: via(ort("model.int8-static.onnx")),
        "openvino fp32": lambda: via(ov("model.onnx")),
        "openvino int8-static": lambda: via(ov("model.int8-static.onnx")),
    }
    chosen = [v for v in a.variants.split(",") if v] or list(makers)
    variants = {n: makers[n]() for n in makers if n in chosen or n.startswith("pipeline (")}
    rows = []
    for data in a.data.split(","):
        texts = texts_for(data, 0 if data == "sst2" else a.samples, 42)
        truth = ref.predict_proba(texts).argmax(-1)
        for name, fn in variants.items():
            fn(texts[:16])
            t = time.perf_counter()
            labels = fn(texts)
            rate = len(texts) / (time.perf_counter() - t)
            rows.append((data, name, rate, float((labels == truth).mean())))
            print(f"  {data} / {name}: {rate:.1f} texts/s", flush=True)
    print(f"\n{'data':<5} {'variant':<26} {'texts/s':>9} {'x pipeline':>10} {'agree fp32':>10}")
    for data, name, rate, agree in rows:
        base = next(r[2] for r in rows if r[0] == data and r[1] == "pipeline (one at a time)")
        print(f"{data:<5} {name:<26} {rate:>9.1f} {rate / base:>10.2f} {100 * agree:>9.2f}%")


if __name__ == "__main__":
    main()
