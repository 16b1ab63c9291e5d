"""The sha256 of model.safetensors for each training method on the demo data, packaged MiniLM, fixed seed.

    python benchmarks/method_hashes.py OUT_FOLDER      # prints one line per method: method, hash, seconds

Run it before and after a change that must not change the models (the spine refactor of issue 56): the same
data, flags and seed must give a bit-identical model. Each method is trained through the CLI, in its own process.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo" / "reviews.csv"
DESCRIPTIONS = ["--label-description", "negative=a negative review", "--label-description", "positive=a positive review"]


def commands(out: Path) -> dict[str, list[str]]:
    data = ["--data", str(DEMO), "--overwrite", "--quiet"]
    return {
        "finetune": ["train", *data, "--method", "finetune", "--epochs", "1", "--output", str(out / "finetune")],
        "contrastive": ["train", *data, "--method", "contrastive", "--output", str(out / "contrastive")],
        "zero-shot": ["train", *data, "--zero-shot", *DESCRIPTIONS, "--output", str(out / "zero-shot")],
        "distill": ["distill", str(out / "finetune"), *data, "--layers", "3", "--epochs", "1",
                    "--output", str(out / "distill")],
        "static": ["train", *data, "--model", "static", "--epochs", "2", "--output", str(out / "static")],
    }


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/hashes")
    only = sys.argv[2].split(",") if len(sys.argv) > 2 else None
    for name, args in commands(out).items():
        if only and name not in only:
            continue
        t = time.time()
        r = subprocess.run([sys.executable, "-m", "textfit", *args], capture_output=True, text=True)
        if r.returncode:
            print(f"{name:12s} FAILED {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")
            continue
        digest = hashlib.sha256()
        weights = [out / name / "model.safetensors"]
        if not weights[0].is_file():  # a static student: its head and static/ vectors
            weights = sorted((out / name).rglob("*.safetensors"))
        for f in weights:
            digest.update(f.read_bytes())
        digest = digest.hexdigest()
        print(f"{name:12s} {digest} {time.time() - t:6.1f}s", flush=True)


if __name__ == "__main__":
    main()
