"""--seeds: one run per seed into OUTPUT/seed-N, all on the same data split, and their summary.

family = train_seeds(TrainConfig(data="reviews.csv", seeds="1,2,3", output="runs/r"), train)
family.metrics["test"]["accuracy"]["mean"], [r.folder for r in family.runs]
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from typing import Any

import numpy as np

from textfit.config import TrainConfig, parse_seeds
from textfit.errors import UsageError
from textfit.run import write_json
from textfit.train.folder import output_folder
from textfit.train.result import TrainResult

SHOWN = ("accuracy", "f1", "f1_micro", "f1_macro", "pearson", "spearman", "loss")


def train_seeds(cfg: TrainConfig, train: Callable[[TrainConfig], TrainResult]) -> TrainResult:
    """Writes OUTPUT/seeds.json with each metric's mean and standard deviation over the seeds
    (the data split uses --split-seed, default the first seed); `train` trains one run."""
    seeds = parse_seeds(cfg.seeds)
    base = output_folder(dataclasses.replace(cfg, seeds=None))
    if cfg.resume is not None:
        raise UsageError("--resume with --seeds: resume one seed's run with --output OUTPUT/seed-N --seed N")
    if base.exists() and cfg.overwrite and any(base.iterdir()):
        shutil.rmtree(base)  # output_folder checked that it is textfit's
    runs: list[TrainResult] = []
    for seed in seeds:
        print(f"textfit: seed {seed} ({len(runs) + 1} of {len(seeds)})", flush=True)
        split_seed = cfg.split_seed if cfg.split_seed is not None else seeds[0]
        sub = dataclasses.replace(cfg, seed=seed, seeds=None, split_seed=split_seed, output=str(base / f"seed-{seed}"))
        runs.append(train(sub))
    summary: dict[str, Any] = {"seeds": seeds, "runs": [r.folder for r in runs], "metrics": {}}
    lines = [f"\n{len(seeds)} seeds ({', '.join(map(str, seeds))}): mean ± standard deviation"]
    for split in runs[0].metrics:
        if split.endswith("_untuned"):
            continue
        rows = mean_and_std([r.metrics[split] for r in runs])
        summary["metrics"][split] = rows
        lines.append(summary_line(split, rows))
    write_json(base / "seeds.json", summary)
    print("\n".join(lines))
    print(f"textfit: wrote {base / 'seeds.json'}")
    return TrainResult(folder=str(base), metrics=summary["metrics"], seeds=seeds, runs=runs)


def summary_line(split: str, rows: dict[str, dict[str, Any]]) -> str:
    """One split's headline metrics as mean ± standard deviation, on one line."""
    return f"{split:<11} " + "  ".join(f"{k} {rows[k]['mean']:.4f} ± {rows[k]['std']:.4f}" for k in SHOWN if k in rows)


def mean_and_std(metrics: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each numeric metric's mean, sample standard deviation and values over several runs' metrics."""
    rows = {}
    for key, value in metrics[0].items():
        if key in ("n", "per_class") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        values = [float(m[key]) for m in metrics]
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        rows[key] = {"mean": float(np.mean(values)), "std": std, "values": values}
    return rows
