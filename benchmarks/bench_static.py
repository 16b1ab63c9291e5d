"""Static students (issue 33): the teacher, its static student, model2vec's own classifier, TF-IDF + LR.

    python benchmarks/bench_static.py sst2 --teacher-run /tmp/bd3/teacher --work /tmp/bst --avx2 --million
    python benchmarks/bench_static.py imdb --work /tmp/bsti            # trains the teacher (the packaged MiniLM)

textfit steps are whole processes as a user runs them (bench_distill's helpers): `train` the teacher (unless
--teacher-run), `distill TEACHER --student static` on the training file (its texts are the unlabelled input:
no other data), `train --student static` (the same student from the labels alone), `eval` on the GLUE dev file
(never seen in training) and `predict` it for the agreement with the teacher. Baselines on the same files:
model2vec's StaticModelForClassification on model2vec's distillation of the packaged MiniLM (its defaults,
PCA 256) and scikit-learn's TF-IDF (word 1-2 grams) + logistic regression, each in a fresh process, timed
inside it (fit; predict over the dev texts repeated to --predict-rows). Prediction speed of the textfit runs:
`textfit predict RUN --input FILE`, whole processes, best of --repeats: the teacher on --teacher-rows texts,
the students on --predict-rows (a rate is texts over wall seconds, start-up included); --avx2 again under
ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2; --million scores 1,000,000 rows of training texts through
the streaming path once. Finished runs in --work are reused. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_distill import AVX2, columns, measure, run_once, speed, textfit  # noqa: E402
from bench_quality import prepare  # noqa: E402
from userdata import machine_kind  # noqa: E402

BASELINE = r"""
import json, sys, time
import numpy as np, pandas as pd
kind, train, dev, rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tr, dv = pd.read_csv(train), pd.read_csv(dev)
X, y, Xd = tr.text.astype(str).tolist(), tr.label.to_numpy(), dv.text.astype(str).tolist()
many = (Xd * (rows // len(Xd) + 1))[:rows]
t = time.time()
if kind == "model2vec":
    from model2vec.distill import distill
    from model2vec.train import StaticModelForClassification
    from textfit.hub import default_model_path
    body = distill(default_model_path(), pca_dims=256)
    clf = StaticModelForClassification.from_static_model(model=body).fit(X, [str(v) for v in y])
    fit = time.time() - t
    predict = lambda texts: np.array([int(v) for v in clf.predict(texts)])
else:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    clf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True), LogisticRegression(C=4, max_iter=2000))
    clf.fit(X, y)
    fit = time.time() - t
    predict = clf.predict
acc = float((predict(Xd) == dv.label.to_numpy()).mean())
t = time.time(); predict(many); rate = rows / (time.time() - t)
print(json.dumps({"accuracy": acc, "fit_seconds": fit, "texts_per_second": rate}))
"""


def baseline(kind: str, train: Path, dev: Path, rows: int, work: Path) -> dict[str, float]:
    """A baseline's dev accuracy, fit seconds and in-process texts/s (cached in work/baseline-KIND.json)."""
    cache = work / f"baseline-{kind}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    r = subprocess.run([sys.executable, "-c", BASELINE, kind, str(train), str(dev), str(rows)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"baseline {kind} failed:\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    cache.write_text(json.dumps(out))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data", choices=["sst2", "imdb"])
    p.add_argument("--teacher-run", type=Path, help="a finished run to be the teacher (instead of training one)")
    p.add_argument("--teacher-rows", type=int, default=5000, help="texts the teacher predicts for its speed")
    p.add_argument("--predict-rows", type=int, default=200_000, help="texts a static student predicts for its speed")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--avx2", action="store_true", help="time prediction under the AVX2 kernels too")
    p.add_argument("--million", action="store_true", help="score 1,000,000 rows with the static student once")
    p.add_argument("--flags", default="", help="extra flags for the static students")
    p.add_argument("--work", type=Path, required=True)
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine_kind()}", flush=True)
    train, dev, metric = prepare(a.data, None, a.work)
    cols = columns(train)
    if a.teacher_run and not (a.work / "teacher").exists():
        (a.work / "teacher").symlink_to(a.teacher_run.resolve())
        (a.work / "teacher.seconds").write_text((a.teacher_run.parent / f"{a.teacher_run.name}.seconds").read_text())
    extra = a.flags.split()
    rows = [
        ("teacher", run_once("teacher", a.work, ["train", "--data", str(train), *cols])),
        ("static", run_once("static", a.work, ["distill", str(a.work / "teacher"), "--student", "static", "--data", str(train), *cols, *extra])),
        ("static-labels", run_once("static-labels", a.work, ["train", "--student", "static", "--data", str(train), *cols, *extra])),
    ]
    texts = pd.read_csv(train)["text"].astype(str)
    for name, n in (("teacher-texts.csv", a.teacher_rows), ("static-texts.csv", a.predict_rows), ("million.csv", 1_000_000)):
        path = a.work / name
        if not path.is_file() and (name != "million.csv" or a.million):
            many = pd.concat([texts] * (n // len(texts) + 1), ignore_index=True)[:n]
            pd.DataFrame({"id": range(n), "text": many}).to_csv(path, index=False)
    teacher_score, teacher_labels = measure(a.work / "teacher", dev, metric, a.work)
    table = []
    for name, seconds in rows:
        score, labels = (teacher_score, teacher_labels) if name == "teacher" else measure(a.work / name, dev, metric, a.work)
        agree = sum(x == y for x, y in zip(labels, teacher_labels)) / len(labels)
        file, n = (a.work / "teacher-texts.csv", a.teacher_rows) if name == "teacher" else (a.work / "static-texts.csv", a.predict_rows)
        rate = speed(a.work / name, file, n, a.repeats, None)
        rate2 = speed(a.work / name, file, n, a.repeats, AVX2) if a.avx2 else None
        table.append((name, score, agree, seconds, rate, rate2))
        print(f"  {name}: {metric} {score:.4f}, agreement {agree:.4f}, {seconds:.0f}s, {rate:.0f} texts/s {rate2 or ''}", flush=True)
    base = {n: (r, r2) for n, _, _, _, r, r2 in table}["teacher"]
    print(f"\n{a.data}: static students of {a.work / 'teacher'} ({machine_kind()})")
    print("| model | dev accuracy | agreement with the teacher | train wall s | predict texts/s (whole process) | x teacher |" + (" AVX2 texts/s | x teacher |" if a.avx2 else ""))
    print("|---|---|---|---|---|---|" + ("---|---|" if a.avx2 else ""))
    for name, score, agree, seconds, rate, rate2 in table:
        avx2 = f" {rate2:.0f} | {rate2 / base[1]:.1f} |" if rate2 is not None else ""
        print(f"| textfit {name} | {score:.4f} | {agree:.4f} | {seconds:.0f} | {rate:.0f} | {rate / base[0]:.1f} |{avx2}")
    for kind in ("model2vec", "tfidf"):
        b = baseline(kind, train, dev, a.predict_rows, a.work)
        print(f"| {kind} (in-process) | {b['accuracy']:.4f} | | {b['fit_seconds']:.0f} | {b['texts_per_second']:.0f} (in-process) | |")
    if a.million:
        t = time.time()
        textfit("predict", str(a.work / "static"), "--input", str(a.work / "million.csv"), "--output", str(a.work / "million.out.csv"), "--overwrite", "--quiet")
        print(f"\n1,000,000 rows through `textfit predict` (streaming) with the static student: {time.time() - t:.1f} s")


if __name__ == "__main__":
    main()
