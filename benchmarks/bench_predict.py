"""Prediction speed: textfit against transformers.pipeline("text-classification"), same run, same texts.

    python benchmarks/bench_predict.py                 # fine-tunes a quick SST-2 run first
    python benchmarks/bench_predict.py --run runs/sst2 # or uses a run you have
    python benchmarks/bench_predict.py --data sst2,path/to/your.csv  # texts of any file textfit reads

For SST-2 dev, the IMDb sample (or a seeded sample of --samples texts from your files): texts/s
for a batch job, the median latency of one short text, and label agreement with fp32 PyTorch
(textfit's path with --precision fp32, which agrees with the pipeline). Rows: the pipeline as the
tutorials call it (one text at a time), the pipeline with batch_size=32, textfit fp32, textfit's
default (on CPUs with bf16: bf16 weights and oneDNN's fused linear kernels, and textfit's fused
attention where the CPU has AMX; GPUs: autocast),
textfit with PyTorch's dynamic int8 quantization, and the ONNX export (fp32 and int8) on onnxruntime.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from userdata import data_label, machine_kind, read_user_data  # noqa: E402


def texts_for(name: str, n: int, seed: int) -> list[str]:
    """SST-2 dev, the IMDb sample, or the texts of any file textfit reads (a seeded sample of n)."""
    import pandas as pd

    if name == "sst2":
        return pd.read_csv(SHARED / "sst2/dev.tsv", sep="\t", quoting=3)["sentence"].astype(str).tolist()[: n or None]
    if name == "imdb":
        df = pd.read_csv(SHARED / "imdb/IMDB Dataset.csv").sample(frac=1.0, random_state=seed)
        return df["review"].astype(str).tolist()[: n or None]
    train, validation = read_user_data(name, seed)
    texts = train["text"].astype(str).tolist() + validation["text"].astype(str).tolist()
    return pd.Series(texts).sample(n=min(n or len(texts), len(texts)), random_state=seed).tolist()


def quick_run(folder: str) -> str:
    from textfit import TrainConfig, train

    r = train(TrainConfig(train=str(SHARED / "sst2/train.tsv"), validation=str(SHARED / "sst2/dev.tsv"), max_train_samples=2000,
                          epochs=1, label_names="negative,positive", output=folder))
    return r["folder"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default=None, help="a textfit run folder (default: fine-tune the packaged model on 2000 SST-2 rows)")
    p.add_argument("--data", default="sst2,imdb", help="sst2, imdb and/or paths of data files, comma-separated")
    p.add_argument("--samples", "--imdb-samples", type=int, default=500, help="texts taken from IMDb and from your files")
    p.add_argument("--latency-reps", type=int, default=50)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()

    import numpy as np
    import torch
    from transformers import pipeline
    from transformers.utils import logging

    from textfit import Classifier

    logging.set_verbosity_error()
    run = a.run or quick_run(tempfile.mkdtemp() + "/run")
    ref = Classifier.load(run, precision="fp32")
    max_length = ref.manifest.max_length
    print(f"machine: {machine_kind()}, torch {torch.__version__}, threads {torch.get_num_threads()}" + f"; run {run}, max length {max_length}")
    pipe = pipeline("text-classification", model=run, device=0 if torch.cuda.is_available() else -1)
    label_of = {name: i for i, name in enumerate(ref.labels)}

    def via_pipe(batch_size):
        def f(texts):
            out = pipe(texts, batch_size=batch_size, truncation=True, max_length=max_length)
            return np.array([label_of[o["label"]] for o in out])
        return f

    variants = {
        "pipeline (one at a time)": via_pipe(1),
        "pipeline batch_size=32": via_pipe(32),
        "textfit fp32": lambda t: ref.predict_proba(t).argmax(-1),
        "textfit default": (lambda c: lambda t: c.predict_proba(t).argmax(-1))(Classifier.load(run)),
        "textfit int8": (lambda c: lambda t: c.predict_proba(t).argmax(-1))(Classifier.load(run, quantize="int8")),
    }
    from textfit.predict.export import export_onnx

    export_onnx(run, quantize="int8")
    export_onnx(run, output=str(Path(run) / "onnx-dynamic"), quantize="int8-dynamic")
    variants["textfit onnx fp32"] = (lambda c: lambda t: c.predict_proba(t).argmax(-1))(Classifier.load(run, backend="onnx"))
    variants["textfit onnx int8"] = (lambda c: lambda t: c.predict_proba(t).argmax(-1))(Classifier.load(run, backend="onnx", quantize="int8"))
    dynamic = Classifier.load_onnx(run, quantize="int8-dynamic", folder=Path(run) / "onnx-dynamic")
    variants["textfit onnx int8-dynamic"] = (lambda c: lambda t: c.predict_proba(t).argmax(-1))(dynamic)
    default_dtype = Classifier.load(run).backend.dtype
    short = "a gripping , beautifully acted film ."
    rows = []
    for name in a.data.split(","):
        texts = texts_for(name, 0 if name == "sst2" else a.samples, a.seed)
        name = data_label(name)
        truth = ref.predict_proba(texts).argmax(-1)  # fp32 PyTorch labels
        for vname, fn in variants.items():
            fn(texts[:8])  # warm up
            t = time.perf_counter()
            labels = fn(texts)
            rate = len(texts) / (time.perf_counter() - t)
            lat = []
            for _ in range(a.latency_reps if name == "sst2" else 0):
                t1 = time.perf_counter()
                fn([short])
                lat.append(time.perf_counter() - t1)
            rows.append({"data": name, "variant": vname, "rate": rate, "latency": statistics.median(lat) * 1000 if lat else None,
                         "agree": float((labels == truth).mean()), "n": len(texts)})
            print(f"  done {name} / {vname}: {rate:.1f} texts/s", flush=True)

    from textfit.accel import fused_attention_unavailable as unavailable

    why_not = unavailable()
    print(f"\ntextfit default precision here: {default_dtype or 'fp32'}; fused AMX attention: "
          f"{'used' if why_not is None else 'not used (' + why_not + ')'}")
    w = max([5] + [len(r["data"]) for r in rows])
    head = f"{'data':<{w}} {'variant':<26} {'texts':>6} {'texts/s':>9} {'x pipeline':>10} {'x pipe b32':>10} {'latency ms':>10} {'agree fp32':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        base = next(x for x in rows if x["data"] == r["data"] and x["variant"] == "pipeline (one at a time)")
        b32 = next(x for x in rows if x["data"] == r["data"] and x["variant"] == "pipeline batch_size=32")
        lat = f"{r['latency']:.1f}" if r["latency"] is not None else "-"
        print(f"{r['data']:<{w}} {r['variant']:<26} {r['n']:>6} {r['rate']:>9.1f} {r['rate'] / base['rate']:>10.2f} {r['rate'] / b32['rate']:>10.2f} "
              f"{lat:>10} {100 * r['agree']:>9.2f}%")
    print("\nlatency: median time to classify one short text; agree fp32: share of labels equal to textfit fp32 (PyTorch fp32).")


if __name__ == "__main__":
    main()
