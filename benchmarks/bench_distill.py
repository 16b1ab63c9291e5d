"""Distillation against training directly (issue 28): teacher, student trained on the labels, student distilled.

    python benchmarks/bench_distill.py sst2 --teacher-model MPNET --teacher-rows 4000 --work /tmp/bd
    python benchmarks/bench_distill.py sst2 --layers 3 --work /tmp/bd3       # teacher: the packaged MiniLM, 6 layers
    python benchmarks/bench_distill.py mrpc --teacher-model MPNET --work /tmp/bdm
    python benchmarks/bench_distill.py sst2 --teacher-model MPNET --teacher-rows 20000 --imdb-sentences \
        --distill-flags "--epochs 2" --work /tmp/bds                       # + the IMDb sample's sentences, unlabelled
    python benchmarks/bench_distill.py sst2 --teacher-model MPNET --flags "--epochs 1" --imdb-sentences \
        --distill-flags "--epochs 2" --no-direct --repeats 1 --work /tmp/bdf  # a teacher on every row, one pass

Every step is a whole `textfit` process as a user runs it: `train` the teacher (--teacher-model, on a seeded
--teacher-rows sample when given), `train` the student directly (the packaged MiniLM, --layers K when given),
`distill` the student from the teacher with the same flags, then `eval` each on the GLUE dev file (never seen
in training; `bench_quality.prepare` gives the data) and `predict` the dev file to measure how often the
students decide as the teacher does. Prediction speed: `textfit predict RUN --input FILE` on --predict-rows
training texts, whole processes, best of --repeats, for the teacher and each student; --avx2 also times them
under ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 (the kernels of a CPU without AVX-512 or bf16).
--imdb-sentences cuts the shared IMDb sample's 3,180 reviews into sentences (`<br />` removed, split after `.`, `!`
or `?`, 4 to 50 words kept: 35,729) and gives them to every distilled student as `--unlabeled` texts for the teacher
to label (RESULTS.md, issue 28). A second --distill-flags variant reads the first's teacher predictions
(`--teacher-predictions`) unless its flags may change the texts or the split (--unlabeled, --seed, --split*,
--max-train-samples). Finished runs in --work are reused, so a stopped benchmark
goes on where it was.
Run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import SHARED, prepare  # noqa: E402
from userdata import machine_kind  # noqa: E402

AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def imdb_sentences(work: Path) -> Path:
    """The shared IMDb sample's reviews as sentences of 4 to 50 words, one per row (column `text`), unlabelled."""
    import re

    out = work / "imdb_sents.csv"
    if not out.is_file():
        found = [
            s.strip()
            for review in pd.read_csv(SHARED / "imdb/IMDB Dataset.csv")["review"]
            for s in re.split(r"(?<=[.!?])\s+", review.replace("<br />", " "))
            if 4 <= len(s.split()) <= 50
        ]
        pd.DataFrame({"text": found}).to_csv(out, index=False)
    return out


def textfit(*args: str, env: dict[str, str] | None = None) -> float:
    """Run one textfit command; its wall seconds."""
    t = time.time()
    r = subprocess.run(
        [sys.executable, "-m", "textfit", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if r.returncode:
        raise SystemExit(f"textfit {' '.join(args[:2])} failed:\n{r.stderr[-3000:]}")
    return time.time() - t


def columns(train: Path) -> list[str]:
    pair = "text_pair" in train.read_text(encoding="utf-8").split("\n")[0]
    return ["--text-column", "text", *(["--text-pair-column", "text_pair"] if pair else []), "--label-column", "label"]


def run_once(name: str, work: Path, command: list[str]) -> float:
    """The run `work/name` (reused when finished); its training wall seconds."""
    out = work / name
    timing = work / f"{name}.seconds"
    if (out / "textfit.json").is_file() and timing.is_file():
        return float(timing.read_text())
    seconds = textfit(*command, "--output", str(out), "--overwrite")
    timing.write_text(f"{seconds:.1f}")
    return seconds


def measure(run: Path, dev: Path, metric: str, work: Path) -> tuple[float, list[str]]:
    """The run's score on the dev file, and its predicted labels there."""
    textfit("eval", str(run), "--data", str(dev), "--output", str(work / f"{run.name}-eval"))
    score = json.loads((work / f"{run.name}-eval/metrics.json").read_text())[metric]
    out = work / f"{run.name}-dev.csv"
    textfit("predict", str(run), "--input", str(dev), "--output", str(out), "--overwrite", "--quiet")
    predicted = pd.read_csv(out)
    column = "predicted_label" if "predicted_label" in predicted else "label"  # the dev file's own label is kept
    return score, predicted[column].astype(str).tolist()


def speed(run: Path, texts: Path, rows: int, repeats: int, env: dict[str, str] | None) -> float:
    """Texts per second of `textfit predict RUN --input texts` (whole process), best of `repeats`."""
    best = min(
        textfit(
            "predict",
            str(run),
            "--input",
            str(texts),
            "--output",
            str(texts.with_suffix(".out.csv")),
            "--overwrite",
            "--quiet",
            env=env,
        )
        for _ in range(repeats)
    )
    return rows / best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data", choices=["sst2", "mrpc", "imdb", "chnsenticorp"])
    p.add_argument("--teacher-model", help="the teacher's checkpoint (default: the packaged MiniLM)")
    p.add_argument("--teacher-rows", type=int, help="train the teacher on a seeded sample of this many rows")
    p.add_argument("--layers", type=int, help="students of this many layers (default: the student model's own)")
    p.add_argument("--flags", default="", help="extra flags for every train and distill command")
    p.add_argument("--distill-flags", action="append", default=[], help="flags of a distilled variant; repeat")
    p.add_argument("--predict-rows", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--avx2", action="store_true", help="time prediction under the AVX2 kernels too")
    p.add_argument("--rows", type=int, help="students learn from a seeded sample of this many training rows")
    p.add_argument("--teacher-run", type=Path, help="a finished run to be the teacher (instead of training one)")
    p.add_argument("--direct-run", type=Path, help="a finished run to stand for the directly trained student")
    p.add_argument("--no-direct", action="store_true", help="no directly trained student (a sweep of distill flags)")
    p.add_argument("--imdb-sentences", action="store_true", help="the IMDb sample's sentences as --unlabeled texts")
    p.add_argument("--work", type=Path, required=True)
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine_kind()}", flush=True)
    train, dev, metric = prepare(a.data, a.rows, a.work)
    cols = columns(train)
    extra = a.flags.split()
    layers = ["--layers", str(a.layers)] if a.layers else []
    teacher_cmd = ["train", "--data", str(train), *cols, *extra]
    teacher_cmd += ["--model", a.teacher_model] if a.teacher_model else []
    teacher_cmd += ["--max-train-samples", str(a.teacher_rows)] if a.teacher_rows else []
    for name, given in (("direct", a.direct_run), ("teacher", a.teacher_run)):  # finished runs reused by link
        if given and not (a.work / name).exists():
            (a.work / name).symlink_to(given.resolve())
            (a.work / f"{name}.seconds").write_text((given.parent / f"{given.name}.seconds").read_text())
    rows = [("teacher", run_once("teacher", a.work, teacher_cmd))]
    if (a.teacher_model or a.layers) and not a.no_direct:  # else the direct student is the teacher itself
        rows.append(("direct", run_once("direct", a.work, ["train", "--data", str(train), *cols, *extra, *layers])))
    unlabeled = ["--unlabeled", str(imdb_sentences(a.work))] if a.imdb_sentences else []
    for i, flags in enumerate(a.distill_flags or [""]):
        name = f"distilled{i}" if len(a.distill_flags) > 1 else "distilled"
        cmd = ["distill", str(a.work / "teacher"), "--data", str(train), *cols, *extra, *layers, *unlabeled]
        first = a.work / "distilled0"  # later variants read the first's teacher predictions when they are the same:
        same_texts = not any(f in flags for f in ("--unlabeled", "--seed", "--split", "--max-train-samples"))
        if i and (first / "teacher_predictions.safetensors").is_file() and same_texts:  # else textfit refuses them
            cmd += ["--teacher-predictions", str(first)]
        cmd += flags.split()
        rows.append((name, run_once(name, a.work, cmd)))
    texts = a.work / "speed.csv"
    rows_read = pd.read_csv(train)
    sample = rows_read.sample(min(a.predict_rows, len(rows_read)), random_state=0)
    sample.drop(columns=["label"]).to_csv(texts, index=False)
    teacher_score, teacher_labels = measure(a.work / "teacher", dev, metric, a.work)
    table = []
    for name, seconds in rows:
        score, labels = (
            (teacher_score, teacher_labels) if name == "teacher" else measure(a.work / name, dev, metric, a.work)
        )
        agree = sum(x == y for x, y in zip(labels, teacher_labels)) / len(labels)
        manifest = json.loads((a.work / name / "textfit.json").read_text())
        config = json.loads((a.work / name / "config.json").read_text())
        rate = speed(a.work / name, texts, len(sample), a.repeats, None)
        rate2 = speed(a.work / name, texts, len(sample), a.repeats, AVX2) if a.avx2 else None
        table.append((name, config.get("num_hidden_layers"), score, agree, seconds, manifest["steps"], rate, rate2))
        print(f"  {name}: {metric} {score:.4f}, agreement {agree:.4f}, {seconds:.0f}s, {rate:.1f} texts/s", flush=True)
    base_rate = {n: r for n, *_, r, _ in table}["teacher"]
    print(
        f"\n{a.data}: teacher {a.teacher_model or 'packaged MiniLM'}{f' on {a.teacher_rows} rows' if a.teacher_rows else ''}; flags {a.flags or '(defaults)'}; distill {a.distill_flags or ['(defaults)']}{' + IMDb sentences' if unlabeled else ''}"
    )
    print(
        f"| run | layers | dev {metric} | agreement with the teacher | train wall s | steps | predict texts/s | x teacher |"
        + (" AVX2 texts/s |" if a.avx2 else "")
    )
    print("|---|---|---|---|---|---|---|---|" + ("---|" if a.avx2 else ""))
    for name, n_layers, score, agree, seconds, steps, rate, rate2 in table:
        avx2 = f" {rate2:.1f} |" if rate2 is not None else ""
        print(
            f"| {name} | {n_layers} | {score:.4f} | {agree:.4f} | {seconds:.0f} | {steps} | {rate:.1f} | {rate / base_rate:.2f} |{avx2}"
        )


if __name__ == "__main__":
    main()
