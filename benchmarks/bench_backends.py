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
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_predict import texts_for  # noqa: E402
from userdata import machine_kind  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


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
    from textfit.backends import build_optimized, build_static_int8
    from textfit.export import export_onnx
    from textfit.predict import OpenVinoBackend

    logging.set_verbosity_error()
    run = Path(a.run)
    print(f"machine: {machine_kind()}; textfit CPU kind: {cpu.describe()}; torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}; run {run}")
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

        from textfit.predict import OnnxBackend

        s = ort.InferenceSession(str(tmp / "onnx" / name), providers=["CPUExecutionProvider"])
        return Classifier(OnnxBackend(s), ref.tokenizer, ref.manifest)

    def ov(name, precision="f32"):
        return Classifier(OpenVinoBackend(tmp / "onnx" / name, precision), ref.tokenizer, ref.manifest)

    pipe = pipeline("text-classification", model=str(run), device=-1)
    label_of = {n: i for i, n in enumerate(ref.labels)}

    def via_pipe(bs):
        return lambda texts: np.array(
            [label_of[o["label"]] for o in pipe(texts, batch_size=bs, truncation=True, max_length=ref.manifest.max_length)]
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
