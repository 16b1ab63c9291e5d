"""Few labels and none (issue 29): textfit `auto` / `finetune` against the setfit library, and zero-shot.

    python benchmarks/bench_fewshot.py --sets sst2 --shots 8,64 --draws 3 --out /tmp/bfs/results.jsonl
    python benchmarks/bench_fewshot.py --sets sst2,imdb --shots 8,16,32,64 --draws 5 --rows400 --zero-shot
    python benchmarks/bench_fewshot.py --shots 8 --draws 3 --methods auto,setfit --model MPNET --out /tmp/bfm/r.jsonl

Each draw takes k rows of every class from the training data with a seeded sample (pandas, random_state = the
draw), the same draws for every method. SST-2 is scored on the GLUE dev file (872 rows), the IMDb sample on a
fixed 1,000 of its reviews (`<br />` removed), the draws coming from the other 2,180. Methods, each in a fresh
process on the packaged all-MiniLM-L6-v2 (or --model, a sentence-transformers folder such as all-mpnet-base-v2
assembled as RESULTS.md shows) and timed inside it (model load and training, not the evaluation, nor the
libraries' imports: setfit's happen at `from setfit import`, textfit's are made before its clock starts):
textfit `train` with the defaults (`--method auto`) but `--split 100,0,0` (every drawn row trains, as in setfit),
textfit `--method finetune` (the same), and setfit 1.2's `Trainer`
with its default `TrainingArguments` (seeded with the draw). `--rows400`: 400 training rows drawn at random
(not per class), one epoch (`--epochs 1`), the issue's case, for each of --methods. `--zero-shot`: textfit
`--zero-shot` with two descriptions, no validation split (the measured default scale), and with the dev file as validation (the
fitted scale), and `--self-train` on 4,000 texts of the training data without their labels (the 2,180 others of the
IMDb sample); each of three description pairs (PAIRS) is a "draw" of the zero-shot rows (seed = its index). Results are appended to --out as JSON lines (a finished job is not run again) and summarised as
a table of mean and spread. Run it alone: training times are compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PAIRS = [("a negative movie review", "a positive movie review"), ("a bad movie", "a good movie"),
         ("This movie is bad.", "This movie is great.")]  # zero-shot descriptions, each pair reported
NAMES = {"sst2": ("0", "1"), "imdb": ("negative", "positive")}
POOL = 4000  # --self-train: texts of the training data, labels dropped (SST-2: a seeded sample; IMDb: its 2,180)


def descriptions(name: str, d: int) -> list[str]:
    return [f"{label}={text}" for label, text in zip(NAMES[name], PAIRS[d])]


def load(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, evaluation) frames with columns text, label."""
    if name == "sst2":
        tr = pd.read_csv(SHARED / "sst2/train.tsv", sep="\t", quoting=3)
        dv = pd.read_csv(SHARED / "sst2/dev.tsv", sep="\t", quoting=3)
        return tr.rename(columns={"sentence": "text"}), dv.rename(columns={"sentence": "text"})
    df = pd.read_csv(SHARED / "imdb/IMDB Dataset.csv").rename(columns={"review": "text", "sentiment": "label"})
    df["text"] = df.text.str.replace("<br />", " ", regex=False)
    dv = df.sample(1000, random_state=1234)
    return df.drop(dv.index), dv


def draw(train: pd.DataFrame, k: int | None, seed: int, rows: int | None = None) -> pd.DataFrame:
    if rows is not None:
        return train.sample(rows, random_state=seed)
    return pd.concat([g.sample(k, random_state=seed) for _, g in train.groupby("label")])


def one(job: dict) -> dict:
    """Run one job in this process; the result's accuracy is on the evaluation rows."""
    import numpy as np

    work = Path(job["work"])
    work.mkdir(parents=True, exist_ok=True)
    train, dev = load(job["set"])
    dev_file = work / "dev.csv"
    dev.to_csv(dev_file, index=False)
    if job["method"].startswith("zero-shot"):
        from textfit import TrainConfig
        from textfit import train as textfit_train

        extra: dict = {"validation": str(dev_file)} if job["method"] == "zero-shot+validation" else {}
        if job["method"] == "zero-shot+self-train":
            pool = train.sample(min(POOL, len(train)), random_state=0)[["text"]]
            pool.to_csv(work / "pool.csv", index=False)
            extra = {"self_train": True, "data": str(work / "pool.csv")}
        t = time.time()
        cfg = TrainConfig(zero_shot=True, label_description=descriptions(job["set"], job["seed"]),
                          output=str(work / "run"), overwrite=True, **extra, **_model(job))
        textfit_train(cfg)
        seconds = time.time() - t
        return {**job, "accuracy": _textfit_accuracy(work / "run", dev), "seconds": round(seconds, 1)}
    sample = draw(train, job.get("k"), job["seed"], job.get("rows"))
    if job["method"] == "setfit":
        from datasets import Dataset
        from setfit import SetFitModel, Trainer, TrainingArguments

        from textfit.hub import default_model_path

        t = time.time()
        model = SetFitModel.from_pretrained(job.get("model") or default_model_path())
        ds = Dataset.from_dict({"text": sample.text.tolist(), "label": sample.label.tolist()})
        args = TrainingArguments(seed=job["seed"], report_to="none", output_dir=str(work / "setfit"))
        Trainer(model=model, args=args, train_dataset=ds).train()
        seconds = time.time() - t
        predicted = np.asarray(model.predict(dev.text.tolist()))
        return {**job, "accuracy": float((predicted == dev.label.to_numpy()).mean()), "seconds": round(seconds, 1)}
    from textfit import TrainConfig
    from textfit import train as textfit_train

    train_file = work / "train.csv"
    sample.to_csv(train_file, index=False)
    _import_what_textfit_train_imports()  # setfit's imports are outside its timing too
    # the k-shot draws train on every drawn row, as setfit does (--split 100,0,0: textfit would otherwise hold out a
    # fifth of 16 rows to measure on 2); the 400-row case keeps textfit's default split (the command)
    extra = {"epochs": 1} if job.get("rows") else {"split": "100,0,0"}
    t = time.time()
    cfg = TrainConfig(train=str(train_file), output=str(work / "run"), overwrite=True, seed=job["seed"],
                      method=job["method"], **extra, **_model(job))
    result = textfit_train(cfg)
    seconds = time.time() - t
    accuracy = _textfit_accuracy(Path(result["folder"]), dev)
    return {**job, "accuracy": accuracy, "seconds": round(seconds, 1), "ran": _method_of(result["folder"])}


def _model(job: dict) -> dict:
    return {"model": job["model"]} if job.get("model") else {}


def _import_what_textfit_train_imports() -> None:
    """textfit imports transformers, accelerate and its training modules inside `train`, setfit at `from setfit
    import`: import them before the clock starts, so that both times are load and training, not imports."""
    import accelerate  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import transformers.models.bert.modeling_bert  # noqa: F401
    from transformers import get_linear_schedule_with_warmup  # noqa: F401

    import textfit.train.loop  # noqa: F401
    import textfit.train.setup  # noqa: F401


def _method_of(folder: str) -> str:
    m = json.loads((Path(folder) / "textfit.json").read_text()).get("method")
    return m["name"] if m else "finetune"


def _textfit_accuracy(folder: Path, dev: pd.DataFrame) -> float:
    from textfit.predict.classifier import Classifier

    predicted = [p.label for p in Classifier.load(folder).predict(dev.text.tolist())]
    return float((pd.Series(predicted).astype(str).to_numpy() == dev.label.astype(str).to_numpy()).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default="sst2")
    ap.add_argument("--shots", default="8,16,32,64")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--methods", default="auto,finetune,setfit")
    ap.add_argument("--rows400", action="store_true")
    ap.add_argument("--zero-shot", action="store_true")
    ap.add_argument("--out", default="/tmp/bench_fewshot/results.jsonl")
    ap.add_argument("--model", help="the body for every method (default: the packaged MiniLM)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print("RESULT " + json.dumps(one(json.loads(a.one))), flush=True)
        return
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    jobs = []
    for s in a.sets.split(","):
        for k in (int(x) for x in a.shots.split(",") if x):
            jobs += [{"set": s, "k": k, "seed": d, "method": m} for d in range(a.draws) for m in a.methods.split(",")]
        if a.rows400:
            jobs += [{"set": s, "rows": 400, "seed": d, "method": m} for d in range(a.draws) for m in a.methods.split(",")]
        if a.zero_shot:
            methods = ("zero-shot", "zero-shot+validation", "zero-shot+self-train")
            jobs += [{"set": s, "seed": d, "method": m} for d in range(len(PAIRS)) for m in methods]
    if a.model:  # part of each job's key: results of another body in the same --out are not taken for these
        jobs = [{**j, "model": str(Path(a.model).resolve())} for j in jobs]
    done = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    key = lambda j: json.dumps({k: j.get(k) for k in ("set", "k", "rows", "seed", "method", "model")}, sort_keys=True)
    seen = {key(r) for r in done}
    for job in jobs:
        if key(job) in seen:
            continue
        job["work"] = str(out.parent / "work")
        r = subprocess.run([sys.executable, __file__, "--one", json.dumps(job)], capture_output=True, text=True)
        line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"failed: {job}\n{r.stderr[-2000:]}", file=sys.stderr)
            continue
        result = json.loads(line[7:])
        done.append(result)
        with open(out, "a") as fh:
            fh.write(json.dumps(result) + "\n")
        print(json.dumps(result), flush=True)
    summarise(done)


def summarise(results: list[dict]) -> None:
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        size = f"{r['k']}/class" if r.get("k") else f"{r['rows']} rows" if r.get("rows") else "none"
        groups.setdefault((r["set"], size, r["method"]), []).append(r)
    print(f"\n{'set':6} {'labels':10} {'method':22} {'draws':>5} {'accuracy':>17} {'train s':>9}  ran")
    for (s, size, m), rs in sorted(groups.items()):
        acc = [r["accuracy"] for r in rs]
        spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
        secs = statistics.mean(r["seconds"] for r in rs)
        ran = ",".join(sorted({r.get("ran", "") for r in rs} - {""}))
        print(f"{s:6} {size:10} {m:22} {len(rs):5} {statistics.mean(acc):8.4f} ± {spread:.4f} {secs:9.1f}  {ran}")


if __name__ == "__main__":
    main()
