"""Sharing a machine: the same training alone, then 2 and 3 copies at once; how much slower each gets (issue 19).

    python benchmarks/bench_share.py                    # textfit, 1, 2 and 3 jobs at once
    python benchmarks/bench_share.py --who trainer      # the Trainer under the same conditions
    python benchmarks/bench_share.py --rows 512 --jobs 1,2,3 --env OMP_NUM_THREADS=1
    python benchmarks/bench_share.py --who predict --run RUN --rows 8000   # `textfit predict --input` jobs

Each job is a whole `textfit train` process (or a Trainer script) on the same SST-2 sample (1 epoch, batch 32,
max length 128, lr 1e-4); all jobs of a round start together. Reported per round: each job's training
samples/s (textfit: its train_stats; the Trainer: train_samples_per_second) and wall time, the slowdown of the
slowest job against the job alone, and the machine's total samples/s. The fair slowdown on C cores is
about jobs / min(jobs, C) (2 jobs on 2 cores: 1x to 2x). Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from userdata import machine_kind  # noqa: E402

TRAINER = """
import json, sys, tempfile, pandas as pd, datasets, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments
from transformers.utils import logging
from textfit.hub import resolve_model
logging.set_verbosity_error()
path = resolve_model(None)
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
df = pd.read_csv(sys.argv[1])
ds = datasets.Dataset.from_dict({"text": df.text.astype(str).tolist(), "label": df.label.tolist()})
ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=128), batched=True, remove_columns=["text"])
args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=32, learning_rate=1e-4,
                         num_train_epochs=1, save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True)
out = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tok)).train()
print(json.dumps({"samples_per_second": out.metrics["train_samples_per_second"]}))
"""


def start(who: str, data: Path, out: Path, env: dict[str, str], run: str | None = None) -> subprocess.Popen:
    if who == "predict":
        cmd = [
            sys.executable,
            "-m",
            "textfit",
            "predict",
            str(run),
            "--input",
            str(data),
            "--output",
            str(out) + ".csv",
        ]
    elif who == "trainer":
        cmd = [sys.executable, "-c", TRAINER, str(data)]
    else:
        cmd = [
            sys.executable,
            "-m",
            "textfit",
            "train",
            "--data",
            str(data),
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--max-length",
            "128",
            "--learning-rate",
            "1e-4",
            "--split",
            "90,10,0",
            "--output",
            str(out),
            "--overwrite",
        ]
    # Output to files, not pipes: a job is never blocked on a full pipe while another is waited for.
    logs = open(str(out) + ".out", "w"), open(str(out) + ".err", "w")  # noqa: SIM115
    return subprocess.Popen(cmd, stdout=logs[0], stderr=logs[1], text=True, env={**os.environ, **env})


def result(who: str, proc: subprocess.Popen, out: Path, wall: float, rows: int) -> float:
    stdout = Path(str(out) + ".out").read_text()
    if proc.returncode:
        raise SystemExit(f"a job failed:\n{Path(str(out) + '.err').read_text()[-2000:]}")
    if who == "predict":  # texts a second over the whole process (loading included)
        return rows / wall
    if who == "trainer":
        return float(json.loads(stdout.strip().splitlines()[-1])["samples_per_second"])
    return float(json.loads((out / "textfit.json").read_text())["train_stats"]["samples_per_second"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--who", choices=["textfit", "trainer", "predict"], default="textfit")
    p.add_argument("--run", help="--who predict: the run folder to predict with")
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--jobs", default="1,2,3")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for every job, e.g. OMP_NUM_THREADS=1")
    a = p.parse_args()
    import pandas as pd

    env = dict(kv.split("=", 1) for kv in a.env)
    print(f"machine: {machine_kind()}, {os.cpu_count()} cores; {a.who}, {a.rows} SST-2 rows, env {env or 'as is'}")
    alone = None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = folder / "sst2.csv"
        df = pd.read_csv(SHARED / "sst2/train.tsv", sep="\t", quoting=3).sample(a.rows, random_state=0)
        df.rename(columns={"sentence": "text"}).to_csv(data, index=False)
        print(f"{'jobs':>4}  {'samples/s each':<28} {'wall s each':<24} {'slowdown':>8} {'total samples/s':>15}")
        for n in map(int, a.jobs.split(",")):
            t = time.time()
            outs = [folder / f"run-{n}-{i}" for i in range(n)]
            procs = [start(a.who, data, out, env, a.run) for out in outs]
            ended: dict[int, float] = {}
            while len(ended) < n:  # each job's own end time
                for i, proc in enumerate(procs):
                    if i not in ended and proc.poll() is not None:
                        ended[i] = time.time() - t
                time.sleep(0.05)
            walls = [ended[i] for i in range(n)]
            rates = [result(a.who, proc, out, w, a.rows) for proc, out, w in zip(procs, outs, walls)]
            alone = alone or rates[0]
            print(
                f"{n:>4}  {', '.join(f'{r:.1f}' for r in rates):<28} {', '.join(f'{w:.0f}' for w in walls):<24} "
                f"{alone / min(rates):>7.2f}x {sum(rates):>15.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
