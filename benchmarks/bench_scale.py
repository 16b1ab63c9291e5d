"""Predicting large tables (issue 30): peak memory and rows/s of `textfit predict --input` at 10k, 100k and
1M rows, against the in-memory path it replaced and transformers.pipeline; kill -9 + --resume; Ray Data.

    python benchmarks/bench_scale.py RUN                 # RUN: a textfit run (e.g. runs/demo from 'make demo')
    python benchmarks/bench_scale.py RUN --sizes 10000 100000 --no-ray

Every figure is a whole process (`textfit predict ... --quiet`, or a `python -c` for the references), its
peak resident memory read by the parent from the kernel (`os.wait4`'s ru_maxrss: the child alone). The
input: SST-2 train sentences repeated with an id and a source column (`id,text,source`), as a user's table.
rows/s is rows over wall time; "marginal" leaves out the start-up (the same command on 1 row). Run alone.

`--rounds N` (default 1) measures the start-up and the 10,000-row lines N times, half of the rounds before the
larger sizes and half after them, and prints their medians: a 10,000-row line is about 10 s of work after a 6 s
start-up, so one reading of either moves the marginal rate by 10%, and a 20-minute 1M-row run drifts with the
machine; the rounds on both sides of it even that out.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from userdata import machine_kind  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TEXTFIT = [sys.executable, "-m", "textfit"]

IN_MEMORY = """
import csv, sys
from textfit.data import read_for_run
from textfit.predict import Classifier
from textfit.run import RunManifest
run, src, dst = sys.argv[1:4]
clf = Classifier.load(run, backend="auto")
split = read_for_run(src, RunManifest.read(run), labels=False)
preds = clf.predict(split.texts, None, 64)
rows = [{"text": t, **{k: v for k, v in p.as_dict().items() if k != "probabilities"},
         **{f"prob_{n}": s for n, s in p.scores.items()}} for t, p in zip(split.texts, preds)]
with open(dst, "w", newline="", encoding="utf-8") as fh:
    w = csv.DictWriter(fh, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)
"""

PIPELINE = """
import csv, sys
from transformers import pipeline
run, src, dst = sys.argv[1:4]
texts = [r["text"] for r in csv.DictReader(open(src, encoding="utf-8"))]
clf = pipeline("text-classification", model=run, device="cpu")
out = clf(texts, batch_size=64, truncation=True)
with open(dst, "w", newline="", encoding="utf-8") as fh:
    w = csv.writer(fh); w.writerow(["text", "label", "score"])
    w.writerows([t, o["label"], o["score"]] for t, o in zip(texts, out))
"""


def make_table(path: Path, n: int) -> Path:
    texts = [r[0] for r in csv.reader(open(SHARED / "sst2" / "train.tsv", encoding="utf-8"), delimiter="\t")][1:]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "source"])
        for i in range(n):
            w.writerow([f"r{i:07d}", texts[i % len(texts)], "sst2-train" if i % 3 else "web"])
    return path


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) of the child alone, exit status."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        print(err[-2000:], file=sys.stderr)
    return wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def finished(work: Path) -> int:
    """Finished parts: a part being written has a .tmp suffix until it is renamed."""
    return sum(1 for p in work.glob("part-*") if "." not in p.name)


def kill_and_resume(run: str, src: Path, work: Path, n: int, chunk: int) -> dict:
    """Kill -9 at about half-way (by finished parts), resume, compare with an uninterrupted run's bytes."""
    from textfit.predict.files import work_folder

    whole, out = work / "whole.csv", work / "killed.csv"
    base = [*TEXTFIT, "predict", run, "--input", str(src), "--chunk-rows", str(chunk), "--quiet"]
    t_whole, _, rc = timed([*base, "--output", str(whole)])
    assert rc == 0
    proc = subprocess.Popen([*base, "--output", str(out)], stderr=subprocess.DEVNULL)
    parts, total = work_folder(str(out)), -(-n // chunk)
    t0 = time.perf_counter()
    while finished(parts) < total // 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t_first = time.perf_counter() - t0
    done = finished(parts)
    t_resume, _, rc = timed([*base, "--output", str(out), "--resume"])
    assert rc == 0
    return {
        "chunks": total,
        "done_at_kill": done,
        "identical": digest(out) == digest(whole),
        "uninterrupted_s": t_whole,
        "killed_plus_resumed_s": t_first + t_resume,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--chunk-rows", type=int, default=10_000)
    ap.add_argument("--resume-rows", type=int, default=100_000, help="0: no kill and resume")
    ap.add_argument("--ray-rows", type=int, default=100_000, help="0: no Ray")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--no-refs", action="store_true", help="leave out the pipeline and in-memory rows")
    ap.add_argument("--rounds", type=int, default=1, help="start-up and 10,000-row lines, half before, half after")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    print(f"machine: {machine_kind()}; run: {args.run}; chunk rows {args.chunk_rows}")
    one = make_table(work / "one.csv", 1)
    small = make_table(work / "in-10000.csv", 10_000)
    refs = (
        ()
        if args.no_refs
        else (("transformers.pipeline (in memory)", PIPELINE), ("textfit 0.2 path (in memory)", IN_MEMORY))
    )
    start_up: list[float] = []
    readings: dict[tuple[str, int], list[tuple[float, float, int]]] = {}

    def stream(src: Path, n: int) -> tuple[float, float, int]:
        out = work / f"out-{n}.csv"
        cmd = [*TEXTFIT, "predict", args.run, "--input", str(src), "--output", str(out), "--quiet"]
        reading = timed([*cmd, "--chunk-rows", str(args.chunk_rows)])
        out.unlink(missing_ok=True)
        return reading

    def small_round() -> None:
        wall, _, rc = stream(one, 1)
        assert rc == 0, "the 1-row start-up probe failed"
        start_up.append(wall)
        for name, code in refs:
            if name.startswith("transformers") and len(start_up) > 1:
                continue  # the slow reference once: it is not what the rounds compare
            reading = timed([sys.executable, "-c", code, args.run, str(small), str(work / "ref.csv")])
            readings.setdefault((name, 10_000), []).append(reading)
        if 10_000 in args.sizes:
            readings.setdefault(("textfit predict (streaming)", 10_000), []).append(stream(small, 10_000))

    before = (args.rounds + 1) // 2
    for _ in range(before):
        small_round()
    for n in (n for n in args.sizes if n != 10_000):
        src = make_table(work / f"in-{n}.csv", n)
        readings[("textfit predict (streaming)", n)] = [stream(src, n)]
        src.unlink()
    for _ in range(args.rounds - before):
        small_round()
    start_s = statistics.median(start_up)
    rows = [  # medians of wall and peak; the exit status of the first reading that failed, else 0
        (name, n, *(statistics.median(r[k] for r in got) for k in (0, 1)), next((r[2] for r in got if r[2]), 0))
        for (name, n), got in readings.items()
    ]
    if args.rounds > 1:
        print(f"\n{args.rounds} rounds of the 10,000-row lines ({before} before the larger sizes): wall s each")
        print(f"  start-up (1 row): {' '.join(f'{t:.1f}' for t in start_up)}")
        for (name, n), got in readings.items():
            if len(got) > 1:
                print(f"  {name} {n:,}: {' '.join(f'{r[0]:.1f}' for r in got)}")
    what = "median of the rounds" if args.rounds > 1 else "whole process"
    print(f"\nstart-up (1 row, {what}): {start_s:.1f} s; the 10,000-row lines' wall s and peak: {what}")
    print(f"{'path':38s} {'rows':>9s} {'wall s':>8s} {'rows/s':>8s} {'marginal rows/s':>16s} {'peak RSS MB':>12s}")
    for name, n, wall, rss, rc in rows:
        marginal = n / max(1e-9, wall - start_s)
        flag = "" if rc == 0 else f"  (exit {rc})"
        print(f"{name:38s} {n:>9,d} {wall:>8.1f} {n / wall:>8.0f} {marginal:>16.0f} {rss:>12.0f}{flag}")

    if args.resume_rows:
        src = make_table(work / "resume.csv", args.resume_rows)
        r = kill_and_resume(args.run, src, work, args.resume_rows, args.chunk_rows)
        print(
            f"\nkill -9 at {r['done_at_kill']}/{r['chunks']} chunks of {args.resume_rows:,} rows, then --resume: "
            f"identical output {r['identical']}; uninterrupted {r['uninterrupted_s']:.1f} s, killed + resumed "
            f"{r['killed_plus_resumed_s']:.1f} s (the chunk in progress at the kill is predicted again)"
        )
    if args.ray_rows and not args.no_ray:
        src = make_table(work / "ray.csv", args.ray_rows)
        local = [*TEXTFIT, "predict", args.run, "--input", str(src), "--quiet", "--chunk-rows", str(args.chunk_rows)]
        t_local, rss_local, _ = timed([*local, "--output", str(work / "local.csv")])
        t_ray, rss_ray, rc = timed([*local, "--output", str(work / "ray-out.csv"), "--engine", "ray"])
        same = rc == 0 and digest(work / "local.csv") == digest(work / "ray-out.csv")
        print(
            f"\nRay Data, local cluster ({os.cpu_count()} CPUs, one actor per CPU, 1 thread each), {args.ray_rows:,} "
            f"rows: {t_ray:.1f} s ({args.ray_rows / t_ray:.0f} rows/s) against the local engine's {t_local:.1f} s "
            f"({args.ray_rows / t_local:.0f} rows/s): {t_local / t_ray:.2f}x; identical file: {same}; "
            f"driver peak RSS {rss_ray:.0f} MB (local {rss_local:.0f} MB)"
        )
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
