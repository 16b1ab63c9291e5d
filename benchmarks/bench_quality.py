"""Quality against time: textfit's defaults against the Trainer's tutorial recipe, same model, same data (issue 18).

    python benchmarks/bench_quality.py mrpc                 # GLUE MRPC: train.tsv -> dev.tsv (F1 of "equivalent")
    python benchmarks/bench_quality.py sst2                 # GLUE SST-2: all 67,349 rows -> dev.tsv (accuracy)
    python benchmarks/bench_quality.py sst2 --rows 20000    # a seeded sample of the training rows
    python benchmarks/bench_quality.py imdb chnsenticorp    # the samples: a seeded 80/20 split of the file
    python benchmarks/bench_quality.py mrpc --textfit-args "--epochs 5"   # another textfit recipe, same table

Each side is used as its user would: textfit with its defaults (`textfit train --data TRAIN`, which carves its
own validation split from the training rows for the best weights and calibration, then `textfit eval RUN
--data DEV`); the Trainer with the tutorial's recipe (MRPC: the course's `TrainingArguments` defaults, 3 epochs,
batch 8, lr 5e-5; SST-2 and the others: 1 epoch, batch 32, lr 5e-5, as in the text-classification tutorial),
dynamic padding, trained on every training row. Dev is never seen by either while training. Reported: dev
score, wall time of the whole process (loading, training, evaluation), and score per minute; one process at a
time, nothing else running. Machine kind printed first.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from userdata import machine_kind  # noqa: E402

TRAINER_RECIPES = {
    "mrpc": {"epochs": 3, "batch_size": 8, "lr": 5e-5},
    "default": {"epochs": 1, "batch_size": 32, "lr": 5e-5},
}


def prepare(name: str, rows: int | None, folder: Path) -> tuple[Path, Path, str]:
    """train.csv and dev.csv (text[, text_pair], label as 0/1) and the metric that matters."""
    import pandas as pd

    if name == "sst2":
        tr = pd.read_csv(SHARED / "sst2/train.tsv", sep="\t", quoting=3).rename(columns={"sentence": "text"})
        dev = pd.read_csv(SHARED / "sst2/dev.tsv", sep="\t", quoting=3).rename(columns={"sentence": "text"})
        metric = "accuracy"
    elif name == "mrpc":
        cols = {"#1 String": "text", "#2 String": "text_pair", "Quality": "label"}
        tr, dev = (
            pd.read_csv(SHARED / f"mrpc/{f}.tsv", sep="\t", quoting=3, encoding="utf-8-sig")[list(cols)].rename(
                columns=cols
            )
            for f in ("train", "dev")
        )
        metric = "f1"
    elif name == "imdb":
        df = pd.read_csv(SHARED / "imdb/IMDB Dataset.csv").rename(columns={"review": "text", "sentiment": "label"})
        df["label"] = (df["label"] == "positive").astype(int)
        df = df.sample(frac=1.0, random_state=0)
        dev, tr = df.iloc[: len(df) // 5], df.iloc[len(df) // 5 :]
        metric = "accuracy"
    elif name == "chnsenticorp":
        df = pd.read_csv(SHARED / "chnsenticorp/ChnSentiCorp_htl_all.csv", header=None, names=["label", "text"])
        df = df.dropna().sample(frac=1.0, random_state=0)[["text", "label"]]
        dev, tr = df.iloc[: len(df) // 5], df.iloc[len(df) // 5 :]
        metric = "accuracy"
    else:
        raise SystemExit(f"{name}: expected sst2, mrpc, imdb or chnsenticorp")
    if rows and rows < len(tr):
        tr = tr.sample(rows, random_state=0)
    paths = folder / f"{name}-train.csv", folder / f"{name}-dev.csv"
    tr.to_csv(paths[0], index=False)
    dev.to_csv(paths[1], index=False)
    return paths[0], paths[1], metric


def run_textfit(train: Path, dev: Path, metric: str, folder: Path, extra: str) -> dict:
    out = folder / "textfit-run"
    pair = (
        ["--text-pair-column", "text_pair"] if "text_pair" in train.read_text(encoding="utf-8").split("\n")[0] else []
    )
    t = time.time()
    cmd = [
        sys.executable,
        "-m",
        "textfit",
        "train",
        "--data",
        str(train),
        "--text-column",
        "text",
        *pair,
        "--label-column",
        "label",
        "--output",
        str(out),
        "--overwrite",
        *shlex.split(extra),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"textfit train failed:\n{r.stderr[-3000:]}")
    ev = subprocess.run(
        [
            sys.executable,
            "-m",
            "textfit",
            "eval",
            str(out),
            "--data",
            str(dev),
            "--output",
            str(folder / "textfit-eval"),
        ],
        capture_output=True,
        text=True,
    )
    if ev.returncode:
        raise SystemExit(f"textfit eval failed:\n{ev.stderr[-3000:]}")
    seconds = time.time() - t
    m = json.loads((folder / "textfit-eval/metrics.json").read_text())
    cfg = json.loads((out / "textfit.json").read_text())
    return {"score": m[metric], "seconds": seconds, "steps": cfg["steps"], "collapsed": m.get("collapsed")}


def trainer_worker(train: str, dev: str, metric: str, recipe: dict) -> None:
    """The tutorial: tokenize with truncation, DataCollatorWithPadding, Trainer, predict dev."""
    import datasets
    import numpy as np
    import pandas as pd
    import torch
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging

    from textfit.hub import resolve_model

    logging.set_verbosity_error()
    t = time.time()
    path = resolve_model(None)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)

    def load(p: str) -> datasets.Dataset:
        df = pd.read_csv(p, keep_default_na=False)
        cols = {c: df[c].astype(str).tolist() for c in ("text", "text_pair") if c in df}
        ds = datasets.Dataset.from_dict({**cols, "label": df["label"].astype(int).tolist()})
        return ds.map(
            lambda b: tok(b["text"], b.get("text_pair"), truncation=True), batched=True, remove_columns=list(cols)
        )

    train_ds, dev_ds = load(train), load(dev)
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=recipe["batch_size"],
        learning_rate=recipe["lr"],
        num_train_epochs=recipe["epochs"],
        seed=42,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=DataCollatorWithPadding(tok))
    trainer.train()
    pred = np.asarray(trainer.predict(dev_ds).predictions).argmax(-1)
    gold = np.asarray(dev_ds["label"])
    score = float(f1_score(gold, pred) if metric == "f1" else accuracy_score(gold, pred))
    print(json.dumps({"score": score, "seconds": time.time() - t}))


def run_trainer(train: Path, dev: Path, metric: str, recipe: dict) -> dict:
    t = time.time()
    r = subprocess.run(
        [sys.executable, __file__, "--worker", str(train), str(dev), metric, json.dumps(recipe)],
        capture_output=True,
        text=True,
    )
    if r.returncode:
        raise SystemExit(f"Trainer failed:\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return {**out, "seconds": time.time() - t}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        trainer_worker(sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5]))
        return
    p = argparse.ArgumentParser()
    p.add_argument("data", nargs="+", choices=["sst2", "mrpc", "imdb", "chnsenticorp"])
    p.add_argument("--rows", type=int, help="a seeded sample of this many training rows")
    p.add_argument("--textfit-args", default="", help="extra flags for textfit train (default: none, the defaults)")
    p.add_argument("--skip-trainer", action="store_true", help="only textfit (the Trainer's row from an earlier table)")
    a = p.parse_args()
    print(f"machine: {machine_kind()}")
    print(f"{'data':<13} {'who':<28} {'dev score':>9} {'wall s':>8} {'score/min':>9}  notes")
    for name in a.data:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            train, dev, metric = prepare(name, a.rows, folder)
            rows = []
            if not a.skip_trainer:
                recipe = TRAINER_RECIPES.get(name, TRAINER_RECIPES["default"])
                who = f"Trainer {recipe['epochs']} ep b{recipe['batch_size']} lr {recipe['lr']:g}"
                rows.append((who, run_trainer(train, dev, metric, recipe)))
            rows.append(
                (
                    f"textfit {a.textfit_args or 'defaults'}"[:28],
                    run_textfit(train, dev, metric, folder, a.textfit_args),
                )
            )
            for who, r in rows:
                note = f"{r.get('steps', '')} steps" if "steps" in r else ""
                if r.get("collapsed"):
                    note += " COLLAPSED"
                print(
                    f"{name:<13} {who:<28} {r['score']:>9.4f} {r['seconds']:>8.0f} {60 * r['score'] / r['seconds']:>9.4f}  "
                    f"{metric} {note}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
