"""The options of issue 7, measured on real data: what each one changes, in one table per experiment.

    python benchmarks/bench_options.py long        # IMDb: head vs tail vs head+tail vs window
    python benchmarks/bench_options.py weights     # SST-2 made 1:9 imbalanced: class weights, tuned threshold
    python benchmarks/bench_options.py lora        # SST-2: LoRA against full fine-tuning (accuracy, memory, speed)
    python benchmarks/bench_options.py seeds       # MRPC: --seeds 1,2,3, mean and standard deviation
    python benchmarks/bench_options.py all

Every configuration is a `python -m textfit train` process of its own on the same files
(written here from ../shared/data with a fixed seed), so its peak memory is its own
(os.wait4's rusage). The numbers reported are the run's own metrics.json.
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


def run(args: list[str], out: Path) -> dict:
    """Train in a child process; its metrics, manifest, wall time and peak RSS."""
    t = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "textfit", "train", *args, "--output", str(out), "--overwrite"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        print(log[-3000:])
        raise SystemExit(f"textfit train {' '.join(args)} failed ({proc.returncode})")
    seeds = out / "seeds.json"
    result = {"seconds": time.time() - t, "peak_rss_gb": usage.ru_maxrss / 2**20, "log": log}
    if seeds.exists():
        return {**result, "seeds": json.loads(seeds.read_text())}
    return {**result, "metrics": json.loads((out / "metrics.json").read_text()), "manifest": json.loads((out / "textfit.json").read_text())}


def table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n{title}")
    widths = [max(len(str(h)), *(len(f"{r[i]:.4f}" if isinstance(r[i], float) else str(r[i])) for r in rows)) for i, h in enumerate(header)]
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    print("  ".join(f"{h:>{w}}" for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(f"{fmt(v):>{w}}" for v, w in zip(r, widths)))
    sys.stdout.flush()


def imdb_files(folder: Path, n_train: int, n_eval: int, seed: int = 0) -> dict[str, str]:
    import pandas as pd

    df = pd.read_csv(SHARED / "imdb/IMDB Dataset.csv").sample(frac=1.0, random_state=seed)
    va, te, tr = df.iloc[:n_eval], df.iloc[n_eval : 2 * n_eval], df.iloc[2 * n_eval : 2 * n_eval + n_train]
    out = {}
    for name, part in (("train", tr), ("validation", va), ("test", te)):
        out[name] = str(folder / f"imdb-{name}.csv")
        part.to_csv(out[name], index=False)
    return out


def bench_long(folder: Path, a: argparse.Namespace) -> None:
    files = imdb_files(folder, a.imdb_train, a.imdb_eval)
    common = ["--train", files["train"], "--validation", files["validation"], "--test", files["test"], "--epochs", "1",
              "--max-length", str(a.max_length), "--seed", "42"]
    configs = {
        "head": [],
        "tail": ["--truncation", "tail"],
        "head+tail": ["--truncation", "head+tail"],
        "window mean": ["--long-text", "window"],
    }
    if a.window_max:
        configs["window max"] = ["--long-text", "window", "--window-pool", "max"]
    rows = []
    for name, flags in configs.items():
        r = run(common + flags, folder / f"long-{name.replace(' ', '-').replace('+', '-')}")
        m = r["metrics"]
        examples = r["manifest"]["train_stats"]["samples"]
        rows.append([name, m["validation"]["accuracy"], m["test"]["accuracy"], m["test"]["f1"], examples, round(r["seconds"])])
    table(f"IMDb sample: {a.imdb_train} training reviews, {a.imdb_eval} validation, {a.imdb_eval} test; MiniLM, --max-length {a.max_length}, 1 epoch",
          ["truncation", "val acc", "test acc", "test f1", "train examples", "seconds"], rows)


def sst2_files(folder: Path, n_train: int, minority_share: float | None, seed: int = 0) -> dict[str, str]:
    import pandas as pd

    tr = pd.read_csv(SHARED / "sst2/train.tsv", sep="\t", quoting=3).sample(frac=1.0, random_state=seed)
    if minority_share is not None:  # negatives become the minority class
        n_neg = round(n_train * minority_share)
        tr = pd.concat([tr[tr.label == 0].iloc[:n_neg], tr[tr.label == 1].iloc[: n_train - n_neg]]).sample(frac=1.0, random_state=seed)
    else:
        tr = tr.iloc[:n_train]
    dev = pd.read_csv(SHARED / "sst2/dev.tsv", sep="\t", quoting=3)
    # Validation is carved from the (imbalanced) training distribution; the test is SST-2 dev (balanced).
    out = {"train": str(folder / f"sst2-train-{minority_share}.csv"), "test": str(folder / "sst2-dev.csv")}
    tr.to_csv(out["train"], index=False)
    dev.to_csv(out["test"], index=False)
    return out


def bench_weights(folder: Path, a: argparse.Namespace) -> None:
    files = sst2_files(folder, a.sst2_train, a.minority)
    configs = {
        "none": [],
        "auto": ["--class-weights", "auto"],
        "threshold": ["--tune-threshold", "--metric-for-best-model", "f1_macro"],
        "auto+threshold": ["--class-weights", "auto", "--tune-threshold", "--metric-for-best-model", "f1_macro"],
    }
    rows = []
    for seed in a.seeds:
        for name, flags in configs.items():
            r = run(["--train", files["train"], "--test", files["test"], "--split", "85,15,0", "--epochs", "1", "--seed", str(seed), *flags],
                    folder / f"w-{name}-{seed}")
            t = r["metrics"]["test"]
            rows.append([seed, name, t["accuracy"], t["f1_macro"], t["per_class"]["0"]["recall"], t["per_class"]["1"]["recall"],
                         r["manifest"]["threshold"] if r["manifest"]["threshold"] is not None else "-"])
    table(f"SST-2: {a.sst2_train} training sentences, {100 * a.minority:.0f}% negative; test on the balanced dev set (872); MiniLM, 1 epoch",
          ["seed", "loss", "accuracy", "f1_macro", "recall neg", "recall pos", "threshold"], rows)


def bench_lora(folder: Path, a: argparse.Namespace) -> None:
    files = sst2_files(folder, a.sst2_train, None)
    common = ["--train", files["train"], "--test", files["test"], "--split", "90,10,0", "--epochs", "1", "--seed", "42"]
    configs = {
        "full fine-tuning": [],
        "lora r=8, lr 1.5e-4": ["--lora", "8", "--learning-rate", "1.5e-4"],
        "lora r=8, lr 1e-3": ["--lora", "8", "--learning-rate", "1e-3"],
        "lora r=8 (default lr 2e-3)": ["--lora", "8"],
        "lora r=16 (default lr 2e-3)": ["--lora", "16"],
    }
    if a.model:
        common += ["--model", a.model]
    if a.lora_samples:
        common += ["--max-train-samples", str(a.lora_samples)]
    rows = []
    for name, flags in configs.items():
        r = run(common + flags, folder / f"lora-{len(rows)}")
        trainable = next((line.split("parameters: ")[1].split(" of")[0] for line in r["log"].splitlines() if "trainable parameters" in line), "-")
        stats = r["manifest"]["train_stats"]
        size = sum(f.stat().st_size for f in (folder / f"lora-{len(rows)}" / "adapter").glob("*")) / 2**20 if "lora" in name else None
        rows.append([name, r["metrics"]["test"]["accuracy"], round(stats["samples_per_second"], 1), round(r["peak_rss_gb"], 2), trainable,
                     f"{size:.1f} MiB" if size else "-"])
    table(f"SST-2: {a.lora_samples or a.sst2_train} training sentences, test on dev (872); {a.model or 'MiniLM'}, 1 epoch",
          ["training", "test acc", "samples/s", "peak RSS GiB", "trainable", "adapter"], rows)


def random_bert_base(folder: Path) -> str:
    """BERT-base's shape (12 layers, hidden 768) with random weights and MiniLM's tokenizer (the same
    30,522-token uncased vocabulary): the memory and speed of a larger model, offline."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    sys.path.insert(0, str(ROOT / "src"))
    from textfit.hub import default_model_path

    torch.manual_seed(0)
    BertModel(BertConfig()).save_pretrained(folder)
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(folder)
    return str(folder)


def bench_seeds(folder: Path, a: argparse.Namespace) -> None:
    r = run(["--train", str(SHARED / "mrpc/train.tsv"), "--validation", str(SHARED / "mrpc/dev.tsv"), "--epochs", str(a.mrpc_epochs),
             "--seeds", "1,2,3"], folder / "seeds")
    s = r["seeds"]["metrics"]["validation"]
    rows = [[k, s[k]["mean"], s[k]["std"], " ".join(f"{v:.4f}" for v in s[k]["values"])] for k in ("accuracy", "f1", "f1_macro", "loss")]
    table(f"MRPC train -> dev (408), MiniLM, {a.mrpc_epochs} epoch(s), --seeds 1,2,3 ({r['seconds']:.0f}s)", ["metric", "mean", "std", "per seed"], rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=["long", "weights", "lora", "seeds", "all"])
    p.add_argument("--imdb-train", type=int, default=1500)
    p.add_argument("--window-max", action="store_true", help="also train windows pooled by max")
    p.add_argument("--imdb-eval", type=int, default=500)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--sst2-train", type=int, default=2000)
    p.add_argument("--minority", type=float, default=0.1, help="share of negatives in the imbalanced SST-2 sample")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    p.add_argument("--mrpc-epochs", type=float, default=1)
    p.add_argument("--model", help="model for the LoRA experiment (default: the packaged MiniLM); 'random-bert-base' builds a "
                   "randomly initialised BERT-base (110M parameters, MiniLM's vocabulary) to measure memory and speed, not accuracy")
    p.add_argument("--lora-samples", type=int, help="train the LoRA experiment on this many sentences")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = Path(tempfile.mkdtemp(prefix="textfit-bench-"))
    if a.model == "random-bert-base":
        a.model = random_bert_base(folder / "random-bert-base")
    for name in (["long", "weights", "lora", "seeds"] if a.experiment == "all" else [a.experiment]):
        {"long": bench_long, "weights": bench_weights, "lora": bench_lora, "seeds": bench_seeds}[name](folder, a)


if __name__ == "__main__":
    main()
