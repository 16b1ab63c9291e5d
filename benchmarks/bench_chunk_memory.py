"""Resident memory after each chunk of a streamed prediction, in one process (issue 30).

    python benchmarks/bench_chunk_memory.py RUN [--chunks 10] [--chunk-rows 10000] [--batch-tokens 2048]

RUN predicts SST-2 training texts (repeated as needed) chunk by chunk through `Classifier.predict_logits`, as
`textfit predict --input` does, and the resident MB after each chunk is printed on one line: a line that
keeps rising means each chunk brings state the earlier ones did not (new kernel shapes). Run it alone.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from userdata import machine_kind  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def rss_mb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
    return 0


def main() -> None:
    from textfit.predict import Classifier

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--chunks", type=int, default=10)
    p.add_argument("--chunk-rows", type=int, default=10_000)
    p.add_argument("--batch-tokens", type=int, help="padded tokens a CPU batch (textfit.predict.CPU_BATCH_TOKENS)")
    a = p.parse_args()
    if a.batch_tokens:
        import textfit.predict

        textfit.predict.CPU_BATCH_TOKENS = a.batch_tokens
    texts = [r[0] for r in csv.reader(open(SHARED / "sst2" / "train.tsv", encoding="utf-8"), delimiter="\t")][1:]
    need = a.chunks * a.chunk_rows
    texts = (texts * (need // len(texts) + 1))[:need]
    clf = Classifier.load(a.run, backend="auto")
    print(f"machine: {machine_kind()}; run: {a.run}")
    t0, after = time.time(), []
    for s in range(0, need, a.chunk_rows):
        clf.predict_logits(texts[s : s + a.chunk_rows])
        after.append(rss_mb())
    print("resident MB after each chunk:", " ".join(map(str, after)), f"({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    main()
