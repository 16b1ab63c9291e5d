"""Predictions for a file of any size: read, predicted and written chunk by chunk, resumable after a kill.

    job = FileJob("tickets.csv", "scored.parquet", chunk_rows=10_000)
    rows, rejected = predict_file(clf, "runs/sst2", job)      # every input column kept, then label, score, prob_*

Each chunk (`data.stream.read_chunks`) goes through the one prediction path (`Classifier`, length-sorted
within the chunk) and is written as a finished part into a hidden working folder beside the output
(`.NAME.textfit-partial/`, with `state.json` saying which run, input and flags it belongs to). At the end
the parts are joined into the output, which is renamed into place, as checkpoints are: a kill leaves the
output untouched and the finished parts kept, and `--resume` predicts only the chunks not finished (at
most the one in progress at the kill is predicted twice); the joined file is byte for byte the one an
uninterrupted run writes. Output formats: CSV, TSV, JSON lines (probabilities nested, as `--json` prints
them) and Parquet (flat columns, as CSV), by the output's extension.

Library check: `datasets.Dataset.map(batched=True)` streams through an Arrow cache file, but writes the
whole cache (every input column again) before anything can be written out, and resumes only through its
fingerprinted cache, not from a killed process's partial file; pandas' and pyarrow's chunked readers and
writers are what this module stands on.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from textfit.accel import trim_allocator
from textfit.data.load import ReadOptions, run_columns
from textfit.data.schema import text_cells
from textfit.data.stream import count_rows, read_chunks
from textfit.data.write import count_part, join_parts, output_format, write_part
from textfit.errors import UsageError
from textfit.progress import Progress
from textfit.run import run_fingerprint


@dataclass
class FileJob:
    input: str
    output: str
    read: ReadOptions = field(default_factory=ReadOptions)  # encoding, quoting and columns (no labels read)
    keep_columns: list[str] | None = None  # None: every input column
    chunk_rows: int = 10_000
    batch_size: int = 64
    resume: bool = False
    overwrite: bool = False
    skip_bad_rows: bool = False
    quiet: bool = False


def work_folder(output: str) -> Path:
    p = Path(output)
    return p.with_name(f".{p.name}.textfit-partial")


def rejects_path(output: str) -> Path:
    p = Path(output)
    return p.with_name(f"{p.stem}.rejects{p.suffix}")


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    files = sorted(Path(path).rglob("*")) if os.path.isdir(path) else [Path(path)]
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(path) if os.path.isdir(path) else "").encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def job_key(clf: Any, run_folder: str, job: FileJob, explain: bool) -> dict[str, Any]:
    """What a resumed prediction must share with the interrupted one: the run (its metadata and weights'
    size and time), the input's content, the backend and every flag that changes a written byte."""
    run = Path(run_folder)
    run_id = run_fingerprint(run)
    flags = {k: v for k, v in asdict(job).items() if k not in ("input", "output", "resume", "overwrite", "quiet")}
    return {
        "run": str(run.resolve()),
        "run_id": run_id,
        "input": str(Path(job.input).resolve()),
        "input_digest": _file_digest(job.input),
        "backend": clf.backend_name,
        "explain": explain,
        "flags": flags,
    }


def _differs(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    for key, what in (
        ("run", "another run"),
        ("run_id", "the run's model files changed since"),
        ("input", "another input"),
        ("input_digest", "the input's content changed since"),
    ):
        if old.get(key) != new[key]:
            return what
    if old.get("backend") != new["backend"]:
        return f"the backend was {old.get('backend')}, now {new['backend']}"
    for k, v in new["flags"].items():
        if old.get("flags", {}).get(k) != v:
            return f"--{k.replace('_', '-')} was {old.get('flags', {}).get(k)!r}, now {v!r}"
    if old.get("explain") != new["explain"]:
        return "--explain differs"
    return None


def check_job(job: FileJob) -> None:
    """The refusals that need no model and no reading: run before the model loads."""
    output_format(job.output)
    if job.chunk_rows < 1:
        raise UsageError(f"--chunk-rows {job.chunk_rows}: must be at least 1")
    out, work = Path(job.output), work_folder(job.output)
    if work.exists() and not (work / "state.json").is_file():
        raise UsageError(f"--output {out}: {work} exists and textfit did not write it; move it away")
    if job.resume and not work.exists() and out.exists():
        raise UsageError(
            f"--resume: {out} is finished (no interrupted prediction into it); pass --overwrite to predict it again"
        )
    if job.resume or job.overwrite:
        return
    if work.exists():
        raise UsageError(
            f"--output {out}: an interrupted prediction into it is kept in {work}; pass --resume to continue it, "
            "or --overwrite to start again"
        )
    if out.exists():
        raise UsageError(f"--output {out}: the file exists; pass --overwrite to replace it, or choose another name")
    if job.skip_bad_rows and rejects_path(job.output).exists():
        raise UsageError(
            f"--skip-bad-rows: {rejects_path(job.output)} exists; pass --overwrite to replace it, or choose another "
            "--output"
        )


def prepare_work(job: FileJob, key: dict[str, Any]) -> tuple[Path, int]:
    """The working folder for this job (`check_job` passed), made or found again; and how many chunks it
    holds finished."""
    out, work = Path(job.output), work_folder(job.output)
    state = work / "state.json"
    if job.resume and state.is_file():
        try:
            old = json.loads(state.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UsageError(
                f"--resume: {state} cannot be read (torn when the prediction was stopped?); pass --overwrite to start "
                "again"
            ) from None
        why = _differs(old, key) if isinstance(old, dict) else "a state file that is not textfit's"
        if why:
            raise UsageError(
                f"--resume: the interrupted prediction into {out} was made with other settings ({why}); "
                "run it as it was, or pass --overwrite to start again"
            )
        done = 0
        while (work / f"part-{done:06d}").exists():
            done += 1
        print(f"textfit: resuming {out}: {done} chunks of {job.chunk_rows} rows already finished", file=sys.stderr)
        return work, done
    if job.resume:
        print(f"textfit: --resume: nothing to resume for {out}; starting from the first row", file=sys.stderr)
    if work.exists():
        shutil.rmtree(work)  # ours (it holds state.json), and --overwrite asked for a new start
    work.mkdir(parents=True)
    tmp = state.with_suffix(".json.tmp")  # written whole, then renamed: a kill leaves the old state or the new one
    tmp.write_text(json.dumps(key, indent=2), encoding="utf-8")
    os.replace(tmp, state)
    return work, 0


class Columns:
    """The output's columns, settled on the first chunk: the kept input columns under their names (a
    headerless file's: text, text_pair, column_N), then the prediction columns, renamed where they clash."""

    def __init__(self, frame: Any, clf: Any, job: FileJob, fmt: str, explain: bool):
        self.text, self.pair, _ = run_columns(
            frame, clf.manifest, job.read.text_column, job.read.text_pair_column, None, False
        )
        cols = list(frame.df.columns)
        headerless = all(isinstance(c, int) for c in cols)
        self.names = {
            c: ("text" if c == self.text else "text_pair" if c == self.pair else f"column_{c + 1}")
            if headerless
            else str(c)
            for c in cols
        }
        keep = cols
        if job.keep_columns is not None:
            by_name = {v: k for k, v in self.names.items()}
            unknown = [c for c in job.keep_columns if c not in by_name]
            if unknown:
                found = ", ".join(repr(v) for v in self.names.values())
                raise UsageError(
                    f"--keep-columns {','.join(job.keep_columns)}: no column {unknown[0]!r} in {frame.source}; "
                    f"its columns are {found}"
                )
            keep = [by_name[c] for c in job.keep_columns]
        self.keep = keep
        task, labels = clf.task, list(clf.labels)
        if task == "regression":
            pred = ["value"]
        else:
            pred = ["label", "score"] + (["labels"] if task == "multi-label" else [])
            pred += ["probabilities"] if fmt == "jsonl" else [f"prob_{n}" for n in labels]
        if explain:
            pred.append("explanation" if fmt == "jsonl" else "top_words")
        taken = {self.names[c] for c in keep}
        self.pred: dict[str, str] = {}
        renamed = []
        for name in pred:
            new = name
            while new in taken:
                new = f"predicted_{new}"
            taken.add(new)
            self.pred[name] = new
            if new != name:
                renamed.append(f"{name!r} as {new!r}")
        if renamed:
            print(
                f"textfit: {frame.source} has columns named like the predictions: writing {', '.join(renamed)}",
                file=sys.stderr,
            )


def prediction_columns(clf: Any, probs: np.ndarray, chosen: np.ndarray, fmt: str) -> dict[str, Any]:
    """The prediction columns of a chunk, as `Classifier.predict` decides them, built column-wise."""
    if clf.task == "regression":
        return {"value": chosen.astype(np.float64).reshape(-1)}
    labels = list(clf.labels)
    if clf.task == "multi-label":
        on = [[n for n, x in zip(labels, row) if x] for row in chosen]
        cols: dict[str, Any] = {"label": [",".join(o) for o in on], "score": probs.max(axis=1).astype(np.float64)}
        cols["labels"] = on if fmt == "jsonl" else [",".join(o) for o in on]
    else:
        ix = chosen.astype(int)
        cols = {"label": [labels[i] for i in ix], "score": probs[np.arange(len(ix)), ix].astype(np.float64)}
    if fmt == "jsonl":
        cols["probabilities"] = [{n: float(p) for n, p in zip(labels, row)} for row in probs]
    else:
        cols |= {f"prob_{n}": probs[:, j].astype(np.float64) for j, n in enumerate(labels)}
    return cols


def predict_file(clf: Any, run: str, job: FileJob, explainer: Any = None) -> tuple[int, int]:
    """Predict every row of `job.input` into `job.output`; returns (rows written, rows rejected)."""
    check_job(job)
    fmt = output_format(job.output)
    chunks = read_chunks(job.input, job.chunk_rows, job.read.encoding, job.read.headerless(), job.read.quoting)
    first = next(chunks)  # the columns are settled (and bad flags refused) before anything is written
    columns = Columns(first, clf, job, fmt, explainer is not None)
    work, done = prepare_work(job, job_key(clf, run, job, explainer is not None))
    progress = Progress(count_rows(job.input), job.quiet)
    unit = "row" if first.first_line == 0 else "line"
    written = rejected = 0
    try:
        for n, frame in enumerate(itertools.chain([first], chunks)):
            part, bad_part = work / f"part-{n:06d}", work / f"rejects-{n:06d}"
            if n < done:
                bad_rows = count_part(bad_part, fmt) if bad_part.exists() else 0
                progress.update(len(frame.df), predicted=False)
                written, rejected = written + len(frame.df) - bad_rows, rejected + bad_rows
                continue
            out, bad = predict_chunk(clf, frame, columns, job, fmt, explainer, unit)
            if len(bad):
                write_part(bad, bad_part, fmt, header=True)
            write_part(out, part, fmt, header=n == 0)
            written, rejected = written + len(out), rejected + len(bad)
            del out, bad
            trim_allocator()  # what this chunk freed goes back to the OS
            progress.update(len(frame.df))
        progress.close()
        n_parts = n + 1
        bad_parts = [work / f"rejects-{k:06d}" for k in range(n_parts) if (work / f"rejects-{k:06d}").exists()]
        if bad_parts:  # first: the output's arrival says that everything is in place
            join_parts(bad_parts, rejects_path(job.output), fmt, work / "joined-rejects", headers=True)
        join_parts([work / f"part-{k:06d}" for k in range(n_parts)], Path(job.output), fmt, work / "joined")
    except UsageError:
        progress.close()
        shutil.rmtree(work, ignore_errors=True)  # nothing half-written: the folder is textfit's own
        raise
    except KeyboardInterrupt:
        progress.close()
        print(
            f"textfit: stopped after {progress.done:,} rows; the finished chunks are kept in {work}: run the same "
            "command with --resume to continue",
            file=sys.stderr,
        )
        raise
    shutil.rmtree(work)
    return written, rejected


def top_words(explanation: dict[str, Any], k: int = 5) -> str:
    """A CSV cell: the k words that pushed hardest towards the label, with their attributions."""
    top = sorted(explanation["words"], key=lambda w: -w["attribution"])[:k]
    return " ".join(f"{w['word']}:{w['attribution']:+.3f}" for w in top)


def explained_label(pred: Any) -> str | None:
    """The label an explanation explains: the predicted class (thresholds included), a multi-label
    run's most probable label, nothing for regression (the value)."""
    if pred.value is not None:
        return None
    if pred.labels is not None:
        return max(pred.scores, key=lambda n: pred.scores[n])
    return str(pred.label)


def predict_chunk(
    clf: Any, frame: Any, columns: Columns, job: FileJob, fmt: str, explainer: Any, unit: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One chunk's output rows, and its rejected rows (an empty text; an error without --skip-bad-rows)
    with their line and the reason; shared by both engines."""
    texts = text_cells(frame, columns.text)
    pairs = text_cells(frame, columns.pair) if columns.pair is not None else None
    empty = [i for i, t in enumerate(texts) if not t.strip() or (pairs is not None and not pairs[i].strip())]
    if empty and not job.skip_bad_rows:
        where = ", ".join(str(frame.first_line + i) for i in empty[:5]) + (", ..." if len(empty) > 5 else "")
        raise UsageError(
            f"{frame.source}: {unit}{'s' if len(empty) > 1 else ''} {where} {'has' if len(empty) == 1 else 'have'} "
            "an empty text; fill it in, remove it, or pass --skip-bad-rows to write such rows to "
            f"{rejects_path(job.output).name} and go on"
        )
    keep = np.setdiff1d(np.arange(len(texts)), empty)
    out = _output_frame(frame, columns, clf, job, fmt, explainer, keep, texts, pairs)
    bad = frame.df.iloc[empty].rename(columns=columns.names).reset_index(drop=True)
    bad.insert(0, unit, [frame.first_line + i for i in empty])
    bad.insert(1, "reason", "empty text")
    return out, bad


def _output_frame(
    frame: Any,
    columns: Columns,
    clf: Any,
    job: FileJob,
    fmt: str,
    explainer: Any,
    keep: np.ndarray,
    texts: list[str],
    pairs: list[str] | None,
) -> pd.DataFrame:
    """A chunk's kept input columns and its prediction columns, rows with an empty text left out."""
    t = [texts[i] for i in keep]
    p = [pairs[i] for i in keep] if pairs is not None else None
    probs = clf.predict_proba(t, p, job.batch_size)
    preds: dict[str, Any] = prediction_columns(clf, probs, clf.decide(probs), fmt)
    if explainer is not None:
        records = clf.predict(t, p, job.batch_size)
        ex = [explainer.explain(t[i], p[i] if p else None, explained_label(r)).as_dict() for i, r in enumerate(records)]
        preds["explanation" if fmt == "jsonl" else "top_words"] = ex if fmt == "jsonl" else [top_words(e) for e in ex]
    df = frame.df.iloc[keep][columns.keep].rename(columns=columns.names).reset_index(drop=True)
    for name, values in preds.items():
        df[columns.pred[name]] = values
    return df
