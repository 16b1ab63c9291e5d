"""Training speed: textfit's defaults against the Hugging Face Trainer, in one run, same data and seed.

    python benchmarks/bench_train.py                      # SST-2 sample and IMDb sample, packaged MiniLM
    python benchmarks/bench_train.py --data sst2 --sst2-samples 1000 --model path/to/model
    python benchmarks/bench_train.py --data path/to/your.csv   # any file textfit reads, single-label

`--data` takes `sst2` and `imdb` (the samples from ../shared/data) and paths to your own data: any
file textfit reads (CSV, TSV, JSON, JSONL, Parquet; columns detected, a second text column for
sentence pairs), split by textfit into training and validation rows, then sampled like IMDb.

Variants, each in its own process (clean peak memory):
  trainer  the Trainer with DataCollatorWithPadding (the tutorials' recommended recipe)
  fixed    the Trainer with every text padded to --max-length (the tutorials' other recipe)
  textfit  textfit's defaults (length-grouped batches, bf16 autocast where supported)
Same model, rows, hyperparameters (learning rate, warmup, weight decay, batch, epochs) and seed.
Reported: samples/s, real (non-pad) tokens/s, padding share, peak memory, dev accuracy, the
ratio to `trainer`, and the achieved training FLOP rate against the matmul peak measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
VARIANTS = ["trainer", "fixed", "textfit"]
sys.path.insert(0, str(ROOT / "src"))


from userdata import data_label, machine_kind, read_user_data  # noqa: E402


def prepare(name: str, n_train: int, n_eval: int, seed: int, folder: Path) -> dict:
    """Seeded samples written as train/eval CSVs (text,label) that every variant reads."""
    import pandas as pd

    if name == "sst2":
        tr = pd.read_csv(SHARED / "sst2/train.tsv", sep="\t", quoting=3)
        ev = pd.read_csv(SHARED / "sst2/dev.tsv", sep="\t", quoting=3)
        tr, ev = tr.rename(columns={"sentence": "text"}), ev.rename(columns={"sentence": "text"})
        tr = tr.sample(n=min(n_train, len(tr)), random_state=seed)
        ev = ev.iloc[: n_eval or len(ev)]
    elif name == "imdb":
        df = pd.read_csv(SHARED / "imdb/IMDB Dataset.csv").rename(columns={"review": "text", "sentiment": "label"})
        df["label"] = (df["label"] == "positive").astype(int)
        df = df.sample(frac=1.0, random_state=seed)
        ev, tr = df.iloc[: n_eval], df.iloc[n_eval : n_eval + n_train]
    else:
        tr, ev = read_user_data(name, seed)
        tr = tr.sample(n=min(n_train, len(tr)), random_state=seed)
        ev = ev.sample(n=min(n_eval or 1000, len(ev)), random_state=seed)
    stem = data_label(name)
    paths = {"train": folder / f"{stem}-train.csv", "eval": folder / f"{stem}-eval.csv"}
    columns = ["text", "text_pair", "label"] if "text_pair" in tr else ["text", "label"]
    tr[columns].to_csv(paths["train"], index=False)
    ev[columns].to_csv(paths["eval"], index=False)
    return {k: str(v) for k, v in paths.items()} | {"num_labels": int(max(tr["label"].max(), ev["label"].max())) + 1,
                                                  "median_chars": float(tr["text"].astype(str).str.len().median())}


def matmul_peak(dtype_name: str, n: int = 2048, reps: int = 10) -> float:
    """Dense matmul TFLOP/s on this machine: the physical limit the loop is measured against."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def model_flops(model_path: str, train_csv: str, max_length: int, epochs: float) -> tuple[float, dict]:
    """Useful training FLOPs: 6 x non-embedding parameters x real tokens, plus attention
    (12 x layers x hidden x sum of squared sequence lengths, forward and backward). The whole model's
    work for every variant: textfit's last layer computes the first token alone (`accel.first_token`) and its
    lowest layers take no backward (--freeze-layers, 2 of MiniLM's 6 by default), so its TFLOP/s counts about
    a third of MiniLM's training products that it does not run, and "of peak" can pass 100%."""
    import pandas as pd
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    cfg = AutoConfig.from_pretrained(model_path)
    model = AutoModel.from_pretrained(model_path)
    emb = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    non_emb = sum(p.numel() for p in model.parameters()) - emb
    df = pd.read_csv(train_csv)
    pairs = df["text_pair"].astype(str).tolist() if "text_pair" in df else None
    lengths = [len(x) for x in tok(df["text"].astype(str).tolist(), pairs, truncation=True, max_length=max_length)["input_ids"]]
    tokens = sum(lengths) * epochs
    attn = 12 * cfg.num_hidden_layers * cfg.hidden_size * sum(s * s for s in lengths) * epochs
    return 6 * non_emb * tokens + attn, {"non_embedding_params": non_emb, "real_tokens": tokens}


# ---------------------------------------------------------------- workers (one process each)


def _accuracy(pred, gold) -> float:
    import numpy as np

    return float((np.asarray(pred) == np.asarray(gold)).mean())


def worker_trainer(a: argparse.Namespace, fixed: bool) -> dict:
    import datasets
    import pandas as pd
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )
    from transformers.utils import logging

    logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=a.num_labels)
    pad = "max_length" if fixed else False

    def load(p: str) -> datasets.Dataset:
        df = pd.read_csv(p)
        cols = {c: df[c].astype(str).tolist() for c in ("text", "text_pair") if c in df}
        ds = datasets.Dataset.from_dict({**cols, "label": df["label"].astype(int).tolist()})
        return ds.map(lambda b: tok(b["text"], b.get("text_pair"), truncation=True, max_length=a.max_length, padding=pad), batched=True,
                      remove_columns=list(cols))

    train_ds, eval_ds = load(a.train), load(a.eval)
    base = default_data_collator if fixed else DataCollatorWithPadding(tok)
    counts = {"real": 0, "padded": 0}

    def collate(features):
        batch = base(features)
        counts["real"] += int(batch["attention_mask"].sum())
        counts["padded"] += batch["input_ids"].numel()
        return batch

    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=a.batch_size, per_device_eval_batch_size=64,
                             learning_rate=a.lr, num_train_epochs=a.epochs, warmup_steps=0.1, weight_decay=0.01, seed=a.seed,
                             eval_strategy="no", save_strategy="no", report_to="none", logging_steps=50, disable_tqdm=True, use_cpu=not torch.cuda.is_available())
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=collate)
    out = trainer.train()
    real, padded = counts["real"], counts["padded"]
    seconds = out.metrics["train_runtime"]
    pred = trainer.predict(eval_ds)
    return {"seconds": seconds, "samples": len(train_ds) * a.epochs, "real_tokens": real, "padded_tokens": padded,
            "accuracy": _accuracy(pred.predictions.argmax(-1), eval_ds["label"]), "precision": "fp32"}


def worker_textfit(a: argparse.Namespace) -> dict:
    from textfit import TrainConfig, train

    pairs = "text_pair" in open(a.train, encoding="utf-8").readline().strip().split(",")
    r = train(TrainConfig(train=a.train, validation=a.eval, text_column="text", text_pair_column="text_pair" if pairs else None,
                          label_column="label", model=a.model, max_length=a.max_length, batch_size=a.batch_size,
                          learning_rate=a.lr, epochs=a.epochs, warmup_ratio=0.1, weight_decay=0.01, seed=a.seed,
                          output=tempfile.mkdtemp() + "/run", eval_batch_size=64,
                          # the fine-tuning loop is what the Trainer is measured against: --method auto would
                          # take the contrastive pass below 1,000 training rows (the IMDb sample's 1,000 and fewer)
                          method="finetune", freeze_layers=a.freeze_layers))
    st = r["train_stats"]
    manifest = json.loads((Path(r["folder"]) / "textfit.json").read_text())
    return {"seconds": st["seconds"], "samples": st["samples"], "real_tokens": st["real_tokens"], "padded_tokens": st["padded_tokens"],
            "accuracy": r["metrics"]["validation"]["accuracy"], "precision": manifest["precision"]}


# ---------------------------------------------------------------- the table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="sst2,imdb", help="sst2, imdb and/or paths of data files, comma-separated")
    p.add_argument("--model", default=None, help="default: the packaged all-MiniLM-L6-v2")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--sst2-samples", type=int, default=2000)
    p.add_argument("--imdb-samples", type=int, default=1000)
    p.add_argument("--eval-samples", type=int, default=0, help="SST-2: first N dev rows (0: all 872); IMDb: 300 held-out reviews unless set")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=0, help="default: 32 for SST-2, 16 for IMDb")
    p.add_argument("--lr", type=float, default=0, help="default: 1e-4 for SST-2, 2e-4 for IMDb")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--freeze-layers", type=int, default=None, help="textfit's --freeze-layers (default: textfit's own)")
    p.add_argument("--max-length", type=int, default=0, help="default: 128 for SST-2, 256 for IMDb")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--train", default=None, help=argparse.SUPPRESS)
    p.add_argument("--eval", default=None, help=argparse.SUPPRESS)
    p.add_argument("--num-labels", type=int, default=2, help=argparse.SUPPRESS)
    a = p.parse_args()

    if a.worker:
        res = worker_textfit(a) if a.worker == "textfit" else worker_trainer(a, fixed=a.worker == "fixed")
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(res), flush=True)
        return

    if a.model is None:
        from textfit.hub import default_model_path

        a.model = default_model_path()
    import torch

    from textfit.accel import cpu

    # bf16 emulated on a CPU without it (or under ONEDNN_MAX_CPU_ISA=AVX2) takes minutes and trains nothing here
    bf16 = torch.cuda.is_available() or cpu.kind().bf16
    peaks = {"fp32": matmul_peak("fp32"), "bf16": matmul_peak("bf16") if bf16 else float("nan")}
    print(f"machine: {machine_kind()}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"matmul peak here: fp32 {peaks['fp32']:.2f} TFLOP/s, bf16 {peaks['bf16']:.2f} TFLOP/s")
    tmp = Path(tempfile.mkdtemp())
    rows = []
    for name in a.data.split(","):
        n_train = a.sst2_samples if name == "sst2" else a.imdb_samples
        n_eval = a.eval_samples or (0 if name == "sst2" else 300)
        paths = prepare(name, n_train, n_eval, a.seed, tmp)
        # SST-2's settings for short texts, IMDb's for documents (your data: by its median length)
        short = name == "sst2" or (name != "imdb" and paths["median_chars"] < 400)
        max_length = a.max_length or (128 if short else 256)
        batch_size = a.batch_size or (32 if short else 16)
        lr = a.lr or (1e-4 if short else 2e-4)
        name = data_label(name)
        flops, fl = model_flops(a.model, paths["train"], max_length, a.epochs)
        for variant in a.variants.split(","):
            cmd = [sys.executable, __file__, "--worker", variant, "--train", paths["train"], "--eval", paths["eval"], "--model", a.model,
                   "--max-length", str(max_length), "--batch-size", str(batch_size), "--lr", str(lr), "--epochs", str(a.epochs), "--seed", str(a.seed), "--num-labels", str(paths["num_labels"])]
            cmd += ["--freeze-layers", str(a.freeze_layers)] if a.freeze_layers is not None else []
            t = time.time()
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"})
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"{name}/{variant} failed")
            r = json.loads(line[7:])
            r.update(data=name, variant=variant, wall=time.time() - t, max_length=max_length)
            r["samples_per_second"] = r["samples"] / r["seconds"]
            r["tokens_per_second"] = r["real_tokens"] / r["seconds"]
            r["padding"] = 1 - r["real_tokens"] / r["padded_tokens"]
            r["tflops"] = flops / r["seconds"] / 1e12
            r["peak_share"] = r["tflops"] / peaks["bf16" if r["precision"] == "bf16" else "fp32"]
            rows.append(r)
            print(f"  done {name}/{variant}: {r['samples_per_second']:.1f} samples/s, accuracy {r['accuracy']:.4f} ({r['wall']:.0f}s)", flush=True)
        print(f"{name}: {n_train} train rows, {n_eval or 'all'} eval rows, batch {batch_size}, lr {lr:g}, {a.epochs:g} epoch(s), max length {max_length}, "
              f"{fl['non_embedding_params'] / 1e6:.1f}M non-embedding params, "
              f"{fl['real_tokens']:.0f} real tokens per run")

    print()
    w = max([5] + [len(r["data"]) for r in rows])
    head = f"{'data':<{w}} {'variant':<8} {'prec':<5} {'samples/s':>9} {'tokens/s':>9} {'padding':>8} {'peak MB':>8} {'dev acc':>8} {'x trainer':>9} {'TFLOP/s':>8} {'of peak':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        ref = next((x for x in rows if x["data"] == r["data"] and x["variant"] == "trainer"), None)
        ratio = f"{r['samples_per_second'] / ref['samples_per_second']:.2f}" if ref else "-"
        print(f"{r['data']:<{w}} {r['variant']:<8} {r['precision']:<5} {r['samples_per_second']:>9.1f} {r['tokens_per_second']:>9.0f} "
              f"{100 * r['padding']:>7.1f}% {r['peak_rss_mb']:>8.0f} {r['accuracy']:>8.4f} {ratio:>9} {r['tflops']:>8.3f} {100 * r['peak_share']:>7.1f}%")
    print("\nOf peak: the useful FLOP rate against this machine's dense matmul peak in the variant's precision.")


if __name__ == "__main__":
    main()
