"""ONNX Runtime's transformer optimizer (fused Attention, SkipLayerNorm, BiasGelu, EmbedLayerNormalization) as the
prediction backend, against the plain export and textfit's default PyTorch path, on SST-2 dev (issue 19).

    python benchmarks/bench_ort_fusions.py RUN        # RUN: a run folder with RUN/onnx (textfit export RUN --format onnx)

Prints the fused operators, texts/s (best of 3 passes over the 872 dev sentences, batch 64) and label
agreement with PyTorch fp32. The optimized model is written to a temporary folder, never into RUN.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from userdata import machine_kind  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    from onnxruntime.transformers import optimizer
    from transformers import AutoConfig

    from textfit import Classifier

    run = Path(sys.argv[1])
    config = AutoConfig.from_pretrained(run)
    print(f"machine: {machine_kind()}; run {run}")
    opt = optimizer.optimize_model(
        str(run / "onnx/model.onnx"),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=0,
    )
    print("fused:", {k: v for k, v in opt.get_fused_operator_statistics().items() if v})
    texts = pd.read_csv(SHARED / "sst2/dev.tsv", sep="\t", quoting=3).sentence.tolist()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        opt.save_model_to_file(str(out / "model.onnx"))
        for f in (run / "onnx").iterdir():
            if f.is_file() and f.name != "model.onnx":
                shutil.copy(f, out / f.name)
        ref = Classifier.load(run, precision="fp32").predict_proba(texts)
        variants = [
            ("onnx export (plain)", Classifier.load(run, backend="onnx")),
            ("onnx + transformer fusions", Classifier.load_onnx(run, folder=out)),
            ("textfit default (PyTorch)", Classifier.load(run)),
        ]
        for name, clf in variants:
            clf.predict_proba(texts[:64])
            best = float("inf")
            for _ in range(3):
                t = time.time()
                p = clf.predict_proba(texts)
                best = min(best, time.time() - t)
            agree = float((p.argmax(1) == ref.argmax(1)).mean())
            print(
                f"{name:<28} {len(texts) / best:7.1f} texts/s  agreement {agree:.4f}  max |dp| {np.abs(p - ref).max():.1e}"
            )


if __name__ == "__main__":
    main()
