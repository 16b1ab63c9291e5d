"""How far to trust a prediction, measured on SST-2 (issue 17): calibration, label errors, explanations.

    python benchmarks/bench_trust.py calibration   # train on 4000 SST-2 rows, test on dev: ECE, Brier, NLL before/after
    python benchmarks/bench_trust.py labels        # textfit cv --folds 3 on SST-2 rows with 5% of labels flipped
    python benchmarks/bench_trust.py explain RUN   # integrated gradients on SST-2 dev sentences: time, delta, steps
    python benchmarks/bench_trust.py all

--rows N sets the sample size (calibration 4000, labels 4000 by default). The reference for calibration is the
same run's uncalibrated probabilities (what the Trainer and `pipeline` give); for label errors, the share of
the flipped rows among the top k rows of label_issues.csv (k = the number flipped) against the share a random
ranking would give (5%).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from userdata import machine_kind  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def textfit(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "textfit", *args], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout[-2000:], r.stderr[-2000:])
        raise SystemExit(f"textfit {' '.join(args)} failed ({r.returncode})")


def sst2(n: int, seed: int):
    import pandas as pd

    return (
        pd.read_csv(SHARED / "sst2/train.tsv", sep="\t", quoting=3).sample(n, random_state=seed).reset_index(drop=True)
    )


def calibration(rows: int, folder: Path) -> None:
    sst2(rows, 5).to_csv(folder / "train.csv", index=False)
    t = time.time()
    textfit(
        "train",
        "--train",
        str(folder / "train.csv"),
        "--test",
        str(SHARED / "sst2/dev.tsv"),
        "--output",
        str(folder / "cal"),
        "--overwrite",
    )
    metrics = json.loads((folder / "cal/metrics.json").read_text())
    print(
        f"\ncalibration: SST-2, {rows} training rows (10% of them validation), dev (872) as test; {time.time() - t:.0f} s"
    )
    print(
        f"{'split':<11} {'T':>6} {'accuracy':>9} {'ECE before':>11} {'ECE after':>10} {'Brier before':>13} "
        f"{'Brier after':>12} {'NLL before':>11} {'NLL after':>10}"
    )
    for split in ("validation", "test"):
        m = metrics[split]
        c = m["calibration"]
        print(
            f"{split:<11} {c['temperature']:>6.3f} {m['accuracy']:>9.4f} {c['before']['ece']:>11.4f} {c['after']['ece']:>10.4f} "
            f"{c['before']['brier']:>13.4f} {c['after']['brier']:>12.4f} {c['before']['nll']:>11.4f} {c['after']['nll']:>10.4f}"
        )
    print(f"reliability diagram: {folder / 'cal/reliability.png'}")


def labels(rows: int, folder: Path) -> None:
    import numpy as np
    import pandas as pd

    df = sst2(rows, 0)
    flip = np.random.default_rng(1).choice(len(df), rows // 20, replace=False)
    df.loc[flip, "label"] = 1 - df.loc[flip, "label"]
    df.to_csv(folder / "noisy.csv", index=False)
    t = time.time()
    textfit("cv", "--data", str(folder / "noisy.csv"), "--folds", "3", "--output", str(folder / "cv"), "--overwrite")
    issues = pd.read_csv(folder / "cv/label_issues.csv")
    ranked = issues[issues.reason.str.startswith("cleanlab")]
    flipped = set((flip + 2).tolist())  # file lines: the header is line 1
    k = len(flipped)
    hit_k = int(ranked.row.head(k).isin(flipped).sum())
    hit_all = int(ranked.row.isin(flipped).sum())
    oof = json.loads((folder / "cv/cv.json").read_text())["out_of_fold"]
    print(f"\nlabel errors: SST-2, {rows} rows, {k} labels flipped (5%), textfit cv --folds 3; {time.time() - t:.0f} s")
    print(f"out-of-fold accuracy against the given labels {oof['accuracy']:.4f}")
    print(f"top {k} of label_issues.csv: {hit_k} flipped ({hit_k / k:.1%}; a random ranking: 5%)")
    print(
        f"all {len(ranked)} rows cleanlab flags: {hit_all} flipped (recall {hit_all / k:.1%}, precision {hit_all / max(1, len(ranked)):.1%})"
    )


def explain(run: str) -> None:
    import numpy as np
    import pandas as pd

    from textfit.predict.explain import Explainer

    texts = pd.read_csv(SHARED / "sst2/dev.tsv", sep="\t", quoting=3).sentence.tolist()[:40]
    ex = Explainer.load(run)
    ex.explain(texts[0])
    rows = []
    for text in texts:
        t = time.time()
        e = ex.explain(text)
        change = sum(w["attribution"] for w in e.words) - e.convergence_delta
        rows.append(
            (time.time() - t, e.convergence_delta, abs(change), int(e.method.split("(")[1].split()[0]), len(e.words))
        )
    a = np.array(rows)
    print(f"\nexplanations: {len(texts)} SST-2 dev sentences ({a[:, 4].mean():.0f} words on average), run {run}")
    print(f"seconds a sentence: median {np.median(a[:, 0]):.2f}, max {a[:, 0].max():.2f}")
    print(
        f"convergence delta: median {np.median(a[:, 1]):.4f}, max {a[:, 1].max():.4f} "
        f"(output change median {np.median(a[:, 2]):.3f})"
    )
    steps, counts = np.unique(a[:, 3].astype(int), return_counts=True)
    print(
        "integration steps used: " + ", ".join(f"{int(n)} steps for {int(c)} sentences" for n, c in zip(steps, counts))
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["calibration", "labels", "explain", "all"])
    p.add_argument("run", nargs="?", help="explain: a run folder (default: the calibration run of 'all')")
    p.add_argument("--rows", type=int, default=4000)
    args = p.parse_args()
    print(f"machine: {machine_kind()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.what in ("calibration", "all"):
            calibration(args.rows, folder)
        if args.what in ("labels", "all"):
            labels(args.rows, folder)
        if args.what == "explain" or (args.what == "all" and args.run):
            explain(args.run)
        elif args.what == "all":
            explain(str(folder / "cal"))


if __name__ == "__main__":
    main()
