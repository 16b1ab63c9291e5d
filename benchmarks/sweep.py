"""Recipe sweeps behind textfit's defaults (issue 18): several textfit recipes, several seeds, one data set.

    python benchmarks/sweep.py mrpc --seeds 1,2,3 --recipe "" --recipe "--learning-rate 1e-4 --epochs 5"
    python benchmarks/sweep.py sst2 --rows 8000 --seeds 1,2 --recipe "" --recipe "--layer-lr-decay 0.8"

Each run is `textfit train --data TRAIN --seed S RECIPE` as a user runs it (textfit carves its own validation
split from the training rows), then `textfit eval RUN --data DEV`: the dev rows are never seen while training.
The data come from `bench_quality.prepare` (GLUE dev files for SST-2 and MRPC, a seeded 20% of the IMDb and
ChnSentiCorp samples). Every run is appended as one JSON line to --log (default benchmarks/sweeps/DATA.jsonl)
as it finishes, so a long sweep can be stopped and read; the table at the end gives each recipe's mean and
standard deviation over the seeds, wall time per run, and collapsed runs. One run at a time; run it alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import prepare, run_textfit  # noqa: E402
from userdata import machine_kind  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data", choices=["sst2", "mrpc", "imdb", "chnsenticorp"])
    p.add_argument("--rows", type=int, help="a seeded sample of this many training rows")
    p.add_argument("--seeds", default="1,2,3", help="textfit --seed values, comma-separated")
    p.add_argument("--recipe", action="append", default=[], help="textfit train flags ('' = the defaults); repeat")
    p.add_argument("--log", type=Path, help="JSON lines file the runs are appended to")
    a = p.parse_args()
    recipes = a.recipe or [""]
    seeds = [int(s) for s in a.seeds.split(",")]
    log = a.log or Path(__file__).resolve().parent / "sweeps" / f"{a.data}{'-' + str(a.rows) if a.rows else ''}.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    machine = machine_kind()
    print(f"machine: {machine}", flush=True)
    results: dict[str, list[dict]] = {r: [] for r in recipes}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train, dev, metric = prepare(a.data, a.rows, folder)
        for recipe in recipes:
            for seed in seeds:
                t = time.time()
                r = run_textfit(train, dev, metric, folder, f"--seed {seed} {recipe}")
                row = {
                    "data": a.data,
                    "rows": a.rows,
                    "recipe": recipe,
                    "seed": seed,
                    "metric": metric,
                    **r,
                    "machine": machine,
                    "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)),
                }
                results[recipe].append(row)
                with log.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                flag = " COLLAPSED" if r.get("collapsed") else ""
                print(f"  {recipe or 'defaults'} seed {seed}: {metric} {r['score']:.4f} in {r['seconds']:.0f}s{flag}", flush=True)
    print(f"\n| recipe | {metric} mean | std | runs | wall s per run | steps |")
    print("|---|---|---|---|---|---|")
    for recipe, rows in results.items():
        scores = [r["score"] for r in rows]
        std = statistics.stdev(scores) if len(scores) > 1 else 0.0
        wall = statistics.mean(r["seconds"] for r in rows)
        collapsed = sum(bool(r.get("collapsed")) for r in rows)
        note = f" ({collapsed} collapsed)" if collapsed else ""
        print(
            f"| `{recipe or 'defaults'}` | {statistics.mean(scores):.4f} | {std:.4f} | {len(rows)}{note} | {wall:.0f} "
            f"| {rows[0]['steps']} |"
        )


if __name__ == "__main__":
    main()
