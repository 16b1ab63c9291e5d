"""Resident memory after each chunk of a streamed prediction, in one process (issue 30).

    python benchmarks/bench_chunk_memory.py RUN [--chunks 10] [--chunk-rows 10000] [--batch-tokens 2048]
                                                [--allocator kept|stream]

RUN predicts SST-2 training texts (repeated as needed) chunk by chunk through `Classifier.predict_logits`, as
`textfit predict --input` does (trimmed after each chunk), and the resident and peak MB after each chunk are
printed: a line that keeps rising means each chunk brings state the earlier ones did not (new kernel shapes, a
heap fragmented by new batch shapes). Run it alone.

`--allocator stream` is an experiment kept for the record (RESULTS.md, issue 30, 2026-12-05): on top of textfit's
kept heap, blocks of 4 MiB and more get a mapping of their own again (glibc's M_MMAP_THRESHOLD and M_MMAP_MAX).
It lowered the peak's rise but slowed long texts by 11%, so textfit does not do it.
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


def status_mb(key: str = "VmRSS") -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) // 1024
    return 0


def main() -> None:
    from textfit.predict.classifier import Classifier

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--chunks", type=int, default=10)
    p.add_argument("--chunk-rows", type=int, default=10_000)
    p.add_argument("--batch-tokens", type=int, help="padded tokens a CPU batch (textfit.predict.classifier.CPU_BATCH_TOKENS)")
    p.add_argument("--allocator", choices=["kept", "stream"], default="kept")
    a = p.parse_args()
    import ctypes

    from textfit import accel

    if a.batch_tokens:
        import textfit.predict.classifier

        textfit.predict.classifier.CPU_BATCH_TOKENS = a.batch_tokens
    texts = [r[0] for r in csv.reader(open(SHARED / "sst2" / "train.tsv", encoding="utf-8"), delimiter="\t")][1:]
    need = a.chunks * a.chunk_rows
    texts = (texts * (need // len(texts) + 1))[:need]
    clf = Classifier.load(a.run, backend="auto")
    if a.allocator == "stream" and accel.tune_allocator():
        mallopt = ctypes.CDLL(None).mallopt
        mallopt(-4, 65536)  # M_MMAP_MAX: mappings allowed again (tune_allocator sets 0)
        mallopt(-3, 4 << 20)  # M_MMAP_THRESHOLD: blocks of 4 MiB and more mapped apart, unmapped when freed
    print(f"machine: {machine_kind()}; run: {a.run}; allocator: {a.allocator}")
    t0, after, peak = time.time(), [], []
    for s in range(0, need, a.chunk_rows):
        clf.predict_logits(texts[s : s + a.chunk_rows])
        accel.trim_allocator()
        after.append(status_mb())
        peak.append(status_mb("VmHWM"))
    print("resident MB after each chunk:", " ".join(map(str, after)), f"({time.time() - t0:.1f} s)")
    print("peak MB after each chunk:    ", " ".join(map(str, peak)))


if __name__ == "__main__":
    main()
