"""Cross-validation: K runs of the same recipe, out-of-fold probabilities for every row, and label errors.

    summary = cross_validate(TrainConfig(data="reviews.csv", epochs=2, output="runs/cv"), folds=5)
    summary["metrics"]["held_out"]["accuracy"]["mean"], summary["label_issues"]["flagged"]

The training rows are cut into K folds (stratified by label for classification, shuffled otherwise,
seeded with --split-seed/--seed, scikit-learn's `StratifiedKFold`/`KFold`). Run k trains on the other
folds (its own validation split carved from them, as `train` would, for the best weights and the
temperature) and predicts fold k as its test split: OUTPUT/fold-k is a complete run, and fold k's
calibrated probabilities are out of sample. OUTPUT/ gets:

- cv.json: every metric's mean and standard deviation over the folds, the out-of-fold metrics,
  and the label-issue summary;
- oof.csv: each training row with its fold, given label, predicted label and probabilities;
- label_issues.csv: the rows whose given label is most likely wrong, ranked by cleanlab's label
  quality score from the out-of-fold probabilities (`cleanlab.filter.find_label_issues`,
  `cleanlab.rank.get_label_quality_scores`), then the texts that appear with conflicting labels;
- report.html: all of it on one page.

The folds run one after another in this process; under `accelerate launch` each fold's training
is spread over the processes as `train` is.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from textfit.config import TrainConfig, split_percentages
from textfit.data import Split, TrainingData, carve_splits, load_data, split_seed
from textfit.data.splits import take
from textfit.errors import UsageError
from textfit.evaluate.inspect import conflicting, text_groups
from textfit.metrics import decide, format_metrics, scores_from_logits, task_report
from textfit.run import write_json
from textfit.train.result import TrainResult
from textfit.train.seeds import SHOWN, mean_and_std, summary_line

ISSUE_FIELDS = ["rank", "row", "fold", "text", "text_pair", "given_label", "suggested_label", "quality", "reason"]


def check_cv(cfg: TrainConfig, folds: int) -> None:
    if folds < 2:
        raise UsageError(f"--folds {folds}: cross-validation needs at least 2 folds, e.g. --folds 5")
    for flag, given in (("--seeds", cfg.seeds), ("--resume", cfg.resume), ("--push-to-hub", cfg.push_to_hub)):
        if given is not None:
            raise UsageError(f"{flag} with cross-validation: train the folds' recipe with 'textfit train' for that")


def fold_indices(train: Split, folds: int, seed: int, names: list[str]) -> list[np.ndarray]:
    """The held-out rows of each fold; a class with fewer rows than folds is a one-line error."""
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(train.texts)
    if n < folds:
        raise UsageError(f"--folds {folds}: {train.source} has {n} training rows; use at most {n} folds")
    if train.task == "classification":
        counts = np.bincount(np.asarray(train.labels, dtype=int))
        small = int(np.argmin(np.where(counts > 0, counts, n + 1)))
        if counts[small] < folds:
            raise UsageError(
                f"--folds {folds}: {train.source} has {counts[small]} rows of label {names[small]!r}, fewer than the "
                f"folds; every class needs a row in each fold: pass --folds {max(2, int(counts[small]))} or fewer, "
                "or add rows of that label"
            )
        splitter: Any = StratifiedKFold(folds, shuffle=True, random_state=seed)
        return [held for _, held in splitter.split(np.zeros(n), train.labels)]
    splitter = KFold(folds, shuffle=True, random_state=seed)
    return [held for _, held in splitter.split(np.zeros(n))]


def _fold_data(data: TrainingData, held: np.ndarray, cfg: TrainConfig, seed: int) -> TrainingData:
    """Fold k's splits: the other folds, a validation share carved from them, and fold k as test."""
    train = data.splits["train"]
    rest = np.setdiff1d(np.arange(len(train.texts)), held)
    tr, va, _ = split_percentages(cfg.split)
    notes: list[str] = []
    share = (tr / (tr + va), va / (tr + va), 0.0)
    splits = carve_splits({"train": take(train, rest)}, share, seed, None, notes, cfg.split)
    splits["test"] = take(train, held)
    return TrainingData(splits, data.schema, data.fingerprint, notes)


def cross_validate(cfg: TrainConfig, folds: int) -> dict[str, Any]:
    """K runs into OUTPUT/fold-1..K, then cv.json, oof.csv, label_issues.csv and report.html in OUTPUT."""
    from textfit.train import train
    from textfit.train.folder import output_folder

    check_cv(cfg, folds)
    base = output_folder(cfg)
    data = load_data(dataclasses.replace(cfg, split="100,0,0"))  # every training row (--max-train-samples: a sample)
    for note in data.notes:
        print(f"textfit: {note}")
    ignored = [n for n in data.splits if n != "train"]
    if ignored:
        print(f"textfit: cross-validation uses the training rows only; the {'/'.join(ignored)} split is left out")
    data.splits = {"train": data.splits["train"]}
    seed = split_seed(cfg)
    held_out = fold_indices(data.splits["train"], folds, seed, data.schema.label_names)
    if base.exists() and cfg.overwrite and any(base.iterdir()):
        shutil.rmtree(base)  # output_folder checked that it is textfit's
    base.mkdir(parents=True, exist_ok=True)
    train_split, schema = data.splits["train"], data.schema
    oof = np.zeros((len(train_split.texts), 1 if schema.task == "regression" else len(schema.label_names)))
    fold_of = np.zeros(len(train_split.texts), dtype=int)
    runs = []
    for k, held in enumerate(held_out, 1):
        print(f"textfit: fold {k} of {folds}: {len(held)} rows held out", flush=True)
        sub = dataclasses.replace(cfg, output=str(base / f"fold-{k}"), overwrite=False, max_train_samples=None)
        result = train(sub, data=_fold_data(data, held, cfg, seed))
        oof[held] = scores_from_logits(result.logits["test"], schema.task, result.temperature)
        fold_of[held] = k
        runs.append(result)
    summary = _summarise(runs, folds, base)
    gold = np.asarray(train_split.labels)
    summary["out_of_fold"] = task_report(schema.task, gold, oof, schema.label_names)
    write_oof(base / "oof.csv", train_split, schema, oof, fold_of)
    summary["label_issues"] = write_label_issues(base / "label_issues.csv", train_split, schema, oof, fold_of)
    write_json(base / "cv.json", summary)
    write_cv_report(base, summary, schema.task)
    print(format_metrics(summary["out_of_fold"], f"\nout of fold ({len(gold)} rows, {folds} folds)"))
    li = summary["label_issues"]
    if li.get("checked"):
        print(
            f"textfit: checked {li['checked']} rows with cleanlab on their out-of-fold probabilities: {li['flagged']} "
            f"may be mislabelled, and {li['conflicting_texts']} texts appear with different labels; "
            f"label_issues.csv ranks them (worst first). It is a list to review, not a verdict: a flagged row "
            "can be right, and a hard one is flagged too."
        )
    written = "cv.json, oof.csv, " + ("label_issues.csv, " if li.get("checked") else "") + "report.html"
    print(f"textfit: wrote {written} to {base}")
    return summary


def _summarise(runs: list[TrainResult], folds: int, base: Path) -> dict[str, Any]:
    summary: dict[str, Any] = {"folds": folds, "runs": [r.folder for r in runs], "metrics": {}}
    lines = [f"\n{folds} folds: mean ± standard deviation"]
    for split in ("validation", "test"):
        if not all(split in r.metrics for r in runs):
            continue
        name = "held_out" if split == "test" else split
        rows = mean_and_std([r.metrics[split] for r in runs])
        summary["metrics"][name] = rows
        lines.append(summary_line(name, rows))
    print("\n".join(lines))
    return summary


def _label_text(schema: Any, value: Any) -> str:
    if schema.task == "regression":
        return f"{float(value):.4g}"
    if schema.task == "multi-label":
        return ",".join(n for n, on in zip(schema.label_names, value) if on)
    return str(schema.label_names[int(value)])


def write_oof(path: Path, split: Split, schema: Any, oof: np.ndarray, fold_of: np.ndarray) -> None:
    """One line per training row: where it is, its fold, the given and predicted labels, the probabilities."""
    chosen = decide(oof, schema.task)
    probs = [] if schema.task == "regression" else [f"prob_{n}" for n in schema.label_names]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        pair = ["text_pair"] if split.pairs is not None else []
        w.writerow(["row", "fold", "text", *pair, "label", "predicted", *probs])
        for i in range(len(split.texts)):
            w.writerow(
                [split.rows[i], int(fold_of[i]), split.texts[i]]
                + ([split.pairs[i]] if split.pairs is not None else [])
                + [_label_text(schema, split.labels[i]), _label_text(schema, chosen[i])]
                + ([] if schema.task == "regression" else [f"{p:.6f}" for p in oof[i]])
            )


def _cleanlab_issues(split: Split, schema: Any, oof: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices cleanlab flags, worst first, and every row's label quality score (0 to 1)."""
    from cleanlab.filter import find_label_issues

    probs = oof / oof.sum(axis=1, keepdims=True) if schema.task == "classification" else oof
    if schema.task == "multi-label":
        from cleanlab.multilabel_classification import get_label_quality_scores as ml_scores

        given = [list(np.flatnonzero(np.asarray(v))) for v in split.labels]
        ranked = find_label_issues(given, probs, multi_label=True, return_indices_ranked_by="self_confidence")
        return np.asarray(ranked, dtype=int), ml_scores(given, probs)
    from cleanlab.rank import get_label_quality_scores

    gold = np.asarray(split.labels, dtype=int)
    ranked = find_label_issues(gold, probs, return_indices_ranked_by="self_confidence")
    return np.asarray(ranked, dtype=int), get_label_quality_scores(gold, probs)


def write_label_issues(path: Path, split: Split, schema: Any, oof: np.ndarray, fold_of: np.ndarray) -> dict[str, Any]:
    """label_issues.csv, and its summary for cv.json (regression: no file, nothing to rank)."""
    if schema.task == "regression":
        return {"checked": 0, "note": "label errors are ranked for classification and multi-label runs only"}
    ranked, quality = _cleanlab_issues(split, schema, oof)
    chosen = decide(oof, schema.task)
    rows: list[dict[str, Any]] = []

    def add(i: int, reason: str) -> None:
        rows.append(
            {
                "rank": len(rows) + 1,
                "row": split.rows[i],
                "fold": int(fold_of[i]),
                "text": split.texts[i],
                "text_pair": split.pairs[i] if split.pairs is not None else "",
                "given_label": _label_text(schema, split.labels[i]),
                "suggested_label": _label_text(schema, chosen[i]),
                "quality": f"{float(quality[i]):.4f}",
                "reason": reason,
            }
        )

    for i in map(int, ranked):
        add(i, "cleanlab: the out-of-fold probabilities favour another label")
    conflicts = conflicting(split, text_groups(split))
    for group in conflicts:
        others = ", ".join(f"{split.unit} {split.rows[j]}" for j in group)
        for i in group:
            add(i, f"the same text has another label ({others})")
    fields = [f for f in ISSUE_FIELDS if f != "text_pair" or split.pairs is not None]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return {
        "checked": len(split.texts),
        "flagged": len(ranked),
        "conflicting_texts": len(conflicts),
        "file": path.name,
        "top": rows[:10],
        "note": "a ranking of rows to review, not a verdict",
    }


def write_cv_report(base: Path, summary: dict[str, Any], task: str) -> None:
    """report.html: the metrics over the folds, the out-of-fold figures, and the rows to review."""
    metric_rows = "".join(
        f"<tr><td>{html.escape(split)}</td><td>{k}</td><td>{v['mean']:.4f}</td><td>{v['std']:.4f}</td>"
        f"<td>{', '.join(f'{x:.4f}' for x in v['values'])}</td></tr>"
        for split, rows in summary["metrics"].items()
        for k, v in rows.items()
    )
    li = summary["label_issues"]
    issues = "".join(
        f"<tr><td>{r['rank']}</td><td>{r['row']}</td><td>{html.escape(str(r['text'])[:300])}</td>"
        f"<td>{html.escape(r['given_label'])}</td><td>{html.escape(r['suggested_label'])}</td><td>{r['quality']}</td>"
        f"<td>{html.escape(r['reason'])}</td></tr>"
        for r in li.get("top", [])
    )
    checked = (
        f"<p>{li['checked']} rows checked: {li['flagged']} flagged by cleanlab, {li['conflicting_texts']} texts with "
        "conflicting labels. A ranking of rows to review, not a verdict; all of them in label_issues.csv.</p>"
        if li.get("checked")
        else f"<p>{html.escape(li.get('note', ''))}</p>"
    )
    oof = summary["out_of_fold"]
    heads = " &middot; ".join(f"{k} <b>{oof[k]:.4f}</b>" for k in SHOWN if k in oof)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>textfit cross-validation</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 980px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; }}</style>
</head><body><h1>textfit cross-validation: {summary["folds"]} folds ({task})</h1>
<p>Out of fold: {heads}</p>
<table><tr><th>split</th><th>metric</th><th>mean</th><th>std</th><th>per fold</th></tr>{metric_rows}</table>
<h2>Label issues</h2>{checked}
<table><tr><th>rank</th><th>row</th><th>text</th><th>given</th><th>suggested</th><th>quality</th><th>why</th></tr>
{issues}</table></body></html>
"""
    (base / "report.html").write_text(page, encoding="utf-8")
