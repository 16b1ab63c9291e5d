"""Predicting files at any size (predict_file, data.stream, data.write, ray_engine): chunks, formats, kept
columns, resume after a kill, rejects, progress; the Ray engine against the local one."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, make_rows, run_cli, write_csv
from textfit import Classifier, TrainConfig, UsageError, train
from textfit.data.stream import count_rows, read_chunks
from textfit.predict.files import FileJob, predict_file, rejects_path, work_folder

FAST = dict(
    epochs=6, batch_size=8, learning_rate=1e-2, precision="fp32", freeze_word_embeddings=False, layer_lr_decay=1.0
)


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("scale")
    data = write_csv(d / "r.csv", make_rows(160, seed=4))
    return train(TrainConfig(data=str(data), model=tiny_model, output=str(d / "run"), **FAST))["folder"]


@pytest.fixture(scope="module")
def clf(run) -> Classifier:
    return Classifier.load(run, precision="fp32")  # fp32: a text's scores do not move with its batch


def table(path: Path, n: int = 53, empty: tuple[int, ...] = ()) -> Path:
    rows = [(f"id{i}", "" if i in empty else t, "web" if i % 2 else "mail") for i, (t, _) in enumerate(make_rows(n, 7))]
    return write_csv(path, rows, header=["id", "text", "source"])


def read_any(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", dtype=str, keep_default_na=False)


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "parquet"])
def test_every_input_column_is_kept_then_the_predictions(run, clf, tmp_path, ext):
    src = table(tmp_path / "in.csv")
    out = tmp_path / f"out.{ext}"
    written, rejected = predict_file(clf, run, FileJob(str(src), str(out), chunk_rows=10, quiet=True))
    df = read_any(out)
    assert (written, rejected, len(df)) == (53, 0, 53)
    probs = ["probabilities"] if ext == "jsonl" else ["prob_negative", "prob_positive"]
    assert list(df.columns) == ["id", "text", "source", "label", "score", *probs]
    assert list(df["id"]) == [f"id{i}" for i in range(53)]  # the input's order, to join back on
    expected = clf.predict(list(df["text"]))
    assert list(df["label"]) == [p.label for p in expected]
    assert [float(s) for s in df["score"]] == pytest.approx([p.score for p in expected], abs=1e-5)
    if ext == "jsonl":
        assert set(df["probabilities"][0]) == {"negative", "positive"}
    assert not work_folder(str(out)).exists()


def test_chunks_give_the_whole_file_answer_and_parquet_counts_its_rows(run, clf, tmp_path):
    src = table(tmp_path / "in.csv", n=41)
    predict_file(clf, run, FileJob(str(src), str(tmp_path / "a.parquet"), chunk_rows=1000, quiet=True))
    predict_file(clf, run, FileJob(str(tmp_path / "a.parquet"), str(tmp_path / "b.csv"), chunk_rows=6, quiet=True))
    assert count_rows(str(tmp_path / "a.parquet")) == 41
    sizes = [len(f.df) for f in read_chunks(str(tmp_path / "a.parquet"), 6)]
    assert sizes == [6] * 6 + [5]
    assert [len(f.df) for f in read_chunks(str(src), 6)] == [6] * 6 + [5]  # the header is not a row of chunk 0
    a, b = read_any(tmp_path / "a.parquet"), read_any(tmp_path / "b.csv")
    # the Parquet input's prediction columns are input columns now: the new ones are renamed, said once
    assert list(b.columns)[:7] == ["id", "text", "source", "label", "score", "prob_negative", "prob_positive"]
    assert list(b["predicted_label"]) == list(a["label"])
    assert [float(x) for x in b["predicted_score"]] == pytest.approx(list(a["score"]), abs=1e-5)


def test_keep_columns_and_headerless_files(run, clf, tmp_path, capsys):
    src = table(tmp_path / "in.csv", n=12)
    out = tmp_path / "k.csv"
    predict_file(clf, run, FileJob(str(src), str(out), keep_columns=["id"], quiet=True))
    assert list(read_any(out).columns) == ["id", "label", "score", "prob_negative", "prob_positive"]
    with pytest.raises(UsageError, match=r"--keep-columns id,nope: no column 'nope' in .*'id', 'text', 'source'"):
        predict_file(clf, run, FileJob(str(src), str(tmp_path / "k2.csv"), keep_columns=["id", "nope"]))
    assert not (tmp_path / "k2.csv").exists() and not work_folder(str(tmp_path / "k2.csv")).exists()
    plain = tmp_path / "plain.csv"
    plain.write_text("the film was good\nawful terrible room\n", encoding="utf-8")
    predict_file(clf, run, FileJob(str(plain), str(tmp_path / "p.jsonl"), quiet=True))
    assert list(read_any(tmp_path / "p.jsonl")["text"]) == ["the film was good", "awful terrible room"]


class Stops:
    """A Classifier that is interrupted (Ctrl-C) at its `at`-th chunk, and counts the chunks it predicts."""

    def __init__(self, clf: Classifier, at: int | None = None):
        self.clf, self.at, self.calls = clf, at, 0

    def __getattr__(self, name):
        return getattr(self.clf, name)

    def predict_proba(self, *a, **k):
        self.calls += 1
        if self.at is not None and self.calls == self.at:
            raise KeyboardInterrupt
        return self.clf.predict_proba(*a, **k)


def test_resume_after_an_interruption_gives_the_uninterrupted_file(run, clf, tmp_path, capsys):
    src = table(tmp_path / "in.csv", n=50)
    whole = tmp_path / "whole.csv"
    predict_file(clf, run, FileJob(str(src), str(whole), chunk_rows=8, quiet=True))
    out = tmp_path / "out.csv"
    with pytest.raises(KeyboardInterrupt):
        predict_file(Stops(clf, at=4), run, FileJob(str(src), str(out), chunk_rows=8))
    assert "--resume to continue" in capsys.readouterr().err
    assert not out.exists() and sorted(p.name for p in work_folder(str(out)).glob("part-*")) == [
        "part-000000",
        "part-000001",
        "part-000002",
    ]
    with pytest.raises(UsageError, match="an interrupted prediction into it is kept in .*pass --resume"):
        predict_file(clf, run, FileJob(str(src), str(out), chunk_rows=8))
    with pytest.raises(UsageError, match=r"other settings \(--chunk-rows was 8, now 5\)"):
        predict_file(clf, run, FileJob(str(src), str(out), chunk_rows=5, resume=True))
    counting = Stops(clf)
    assert predict_file(counting, run, FileJob(str(src), str(out), chunk_rows=8, resume=True)) == (50, 0)
    assert counting.calls == 7 - 3  # 7 chunks, 3 finished before the stop: none predicted twice here
    assert out.read_bytes() == whole.read_bytes() and not work_folder(str(out)).exists()
    with pytest.raises(UsageError, match="the file exists; pass --overwrite"):
        predict_file(clf, run, FileJob(str(src), str(out)))
    with pytest.raises(UsageError, match="is finished .*pass --overwrite"):
        predict_file(clf, run, FileJob(str(src), str(out), resume=True))
    src.write_text(src.read_text() + "id99,one more good film,web\n")
    with pytest.raises(KeyboardInterrupt):
        predict_file(Stops(clf, at=2), run, FileJob(str(src), str(out), chunk_rows=8, overwrite=True))
    with pytest.raises(UsageError, match="another input|the input's content changed"):
        src.write_text(src.read_text() + "id100,and another,web\n")
        predict_file(clf, run, FileJob(str(src), str(out), chunk_rows=8, resume=True))


def finished(work: Path) -> int:
    """Finished parts: a part being written has a .tmp suffix until it is renamed."""
    return sum(1 for p in work.glob("part-*") if "." not in p.name)


def test_kill_9_then_resume_from_the_cli(run, tmp_path):
    src = table(tmp_path / "in.csv", n=400)
    base = ["predict", run, "--input", str(src), "--chunk-rows", "20", "--precision", "fp32", "--backend", "torch"]
    assert run_cli(*base, "--output", str(tmp_path / "whole.csv"), "--quiet").returncode == 0
    out = tmp_path / "out.csv"
    cmd = [sys.executable, "-m", "textfit", *base, "--output", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    work, t0 = work_folder(str(out)), time.monotonic()
    while finished(work) < 3 and proc.poll() is None and time.monotonic() - t0 < 120:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = finished(work)
    assert not out.exists() and 0 < done < 20, "the run ended before it could be killed"
    r = run_cli(*base, "--output", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    assert f"resuming {out}: {done} chunks of 20 rows already finished" in r.stderr
    assert out.read_bytes() == (tmp_path / "whole.csv").read_bytes()


def test_empty_texts_stop_or_go_to_the_rejects_file(run, clf, tmp_path):
    src = table(tmp_path / "in.csv", n=30, empty=(3, 25))
    out = tmp_path / "out.jsonl"
    with pytest.raises(UsageError, match=r"in.csv: line 5 has an empty text; .* --skip-bad-rows"):
        predict_file(clf, run, FileJob(str(src), str(out), chunk_rows=10))
    assert not out.exists() and not work_folder(str(out)).exists()  # nothing half-written
    written, rejected = predict_file(clf, run, FileJob(str(src), str(out), chunk_rows=10, skip_bad_rows=True))
    assert (written, rejected) == (28, 2) and len(read_any(out)) == 28
    bad = read_any(rejects_path(str(out)))
    assert list(bad["line"]) == [5, 27] and list(bad["id"]) == ["id3", "id25"] and set(bad["reason"]) == {"empty text"}


def test_progress_lines_off_a_terminal_and_none_when_quiet(run, clf, tmp_path, capsys, monkeypatch):
    import textfit.progress as progress

    monkeypatch.setattr(progress, "PROGRESS_EVERY_S", 0.0)
    src = table(tmp_path / "in.parquet.csv", n=20)
    predict_file(clf, run, FileJob(str(src), str(tmp_path / "a.csv"), chunk_rows=5))
    lines = [x for x in capsys.readouterr().err.splitlines() if "rows predicted" in x]
    assert len(lines) == 4 and lines[-1].startswith("textfit: 20 rows predicted") and "rows/s" in lines[-1]
    assert "\r" not in "".join(lines)
    predict_file(clf, run, FileJob(str(src), str(tmp_path / "b.csv"), chunk_rows=5, quiet=True))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    predict_file(clf, run, FileJob(str(src), str(tmp_path / "c.csv"), chunk_rows=5))
    assert "rows predicted" not in capsys.readouterr().err


def test_cli_refusals_come_before_the_model_loads(run, tmp_path):
    src = table(tmp_path / "in.csv", n=5)
    (tmp_path / "taken.csv").write_text("mine\n")
    for args, match in [
        (["--output", str(tmp_path / "p.xlsx")], "unsupported format; use a .csv, .tsv, .jsonl or .parquet"),
        (["--output", str(tmp_path / "taken.csv")], "the file exists; pass --overwrite"),
        (["--output", str(tmp_path / "o.csv"), "--resume", "--overwrite"], "--resume and --overwrite: choose one"),
        (["--output", str(tmp_path / "o.csv"), "--chunk-rows", "0"], "--chunk-rows 0: must be at least 1"),
    ]:
        r = run_cli("predict", run, "--input", str(src), *args)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and match in r.stderr, r.stderr
    assert (tmp_path / "taken.csv").read_text() == "mine\n"  # a file textfit did not write is left alone


def test_ray_missing_is_one_line(run, tmp_path, monkeypatch):
    from textfit.predict import ray as ray_engine

    monkeypatch.setitem(sys.modules, "ray", None)
    job = FileJob(str(table(tmp_path / "in.csv", n=5)), str(tmp_path / "o.csv"))
    with pytest.raises(UsageError, match=r"--engine ray needs Ray: pip install 'textfit\[ray\]'"):
        ray_engine.predict_ray(run, job, None, {})


def test_ray_engine_writes_the_local_engines_file(run, tmp_path):
    pytest.importorskip("ray.data")
    src = table(tmp_path / "in.csv", n=90, empty=(40,))
    common = ["--chunk-rows", "16", "--skip-bad-rows", "--quiet", "--backend", "torch"]
    r = run_cli("predict", run, "--input", str(src), "--output", str(tmp_path / "local.csv"), *common)
    assert r.returncode == 0, r.stderr
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    cmd = [sys.executable, "-m", "textfit", "predict", run, "--input", str(src), "--engine", "ray"]
    r = subprocess.run(
        [*cmd, "--output", str(tmp_path / "ray.csv"), *common], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ray.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    local_bad, ray_bad = (rejects_path(str(tmp_path / n)) for n in ("local.csv", "ray.csv"))
    assert list(csv.reader(open(ray_bad))) == list(csv.reader(open(local_bad)))
    assert json.dumps(list(csv.reader(open(ray_bad)))[1][:2]) == '["42", "empty text"]'
    folder = tmp_path / "scored"  # no extension: a folder of Parquet files, written by Ray
    common = [c for c in common if c != "--skip-bad-rows"]
    src = table(tmp_path / "full.csv", n=60)
    r = subprocess.run(
        [*cmd[:6], str(src), *cmd[7:], "--output", str(folder), *common],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    local = run_cli("predict", run, "--input", str(src), "--output", str(tmp_path / "l.csv"), *common)
    assert local.returncode == 0, local.stderr
    assert list(pd.read_parquet(folder)["label"]) == list(read_any(tmp_path / "l.csv")["label"])
    r = run_cli("predict", run, "--input", str(src), "--output", str(folder), "--engine", "ray")
    assert r.returncode == 2 and "exists and is not an empty folder" in r.stderr


def compress(src: Path, kind: str, cut: float = 1.0) -> Path:
    """`src` compressed as a whole (gz, bz2, xz), or only its first `cut` share of the compressed bytes."""
    import bz2
    import gzip
    import lzma

    dst = src.with_name(f"{src.name}.{kind}")
    data = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[kind](src.read_bytes())
    dst.write_bytes(data[: int(len(data) * cut)])
    return dst


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz"])
@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_a_compressed_input_gives_the_plain_files_output(run, clf, tmp_path, kind, ext):
    src = table(tmp_path / "in.csv")
    if ext == "jsonl":
        pd.read_csv(src, dtype=str).to_json(tmp_path / "in.jsonl", orient="records", lines=True)
        src = tmp_path / "in.jsonl"
    plain, packed = tmp_path / "plain.csv", tmp_path / "packed.csv"
    predict_file(clf, run, FileJob(str(src), str(plain), chunk_rows=10, quiet=True))
    predict_file(clf, run, FileJob(str(compress(src, kind)), str(packed), chunk_rows=10, quiet=True))
    assert packed.read_bytes() == plain.read_bytes()


def test_a_compressed_file_cut_short_is_one_line_and_writes_nothing(run, clf, tmp_path):
    from textfit.data.read import read_one

    rows = [(f"id{i}", f"{t} {i}", "web") for i, (t, _) in enumerate(make_rows(40_000, 3))]  # past the 1 MiB sample
    src = write_csv(tmp_path / "big.csv", rows, header=["id", "text", "source"])
    cut, out = compress(src, "gz", cut=0.9), tmp_path / "o.csv"
    job = FileJob(str(cut), str(out), chunk_rows=5_000, quiet=True)
    with pytest.raises(
        UsageError, match=r"big\.csv\.gz: cannot decompress as gzip \(.*\); check that the file is whole"
    ):
        predict_file(clf, run, job)
    assert not out.exists() and not work_folder(str(out)).exists()
    with pytest.raises(UsageError, match="cannot decompress as gzip"):
        read_one(str(cut))  # the whole-file reader of train and eval: the same line
    (tmp_path / "junk.csv.gz").write_bytes(b"id,text\n1,plain text under a .gz name\n")
    with pytest.raises(UsageError, match=r"junk\.csv\.gz: cannot decompress as gzip"):
        read_one(str(tmp_path / "junk.csv.gz"))
    (tmp_path / "t.parquet.gz").write_bytes(b"x")  # a Parquet file compresses itself
    with pytest.raises(UsageError, match=r"'\.parquet\.gz'; use a \.csv, .* \(the first four also as \.gz"):
        next(read_chunks(str(tmp_path / "t.parquet.gz"), 10))


def test_zst_without_zstandard_names_the_package(tmp_path, monkeypatch):
    from textfit.data.read import read_one

    monkeypatch.setitem(sys.modules, "zstandard", None)
    (tmp_path / "a.csv.zst").write_bytes(b"x")
    with pytest.raises(UsageError, match=r"a\.csv\.zst: reading \.zst files needs the zstandard package: pip install"):
        read_one(str(tmp_path / "a.csv.zst"))


def test_default_output_names_leave_out_the_compression(tmp_path):
    from textfit.cli.commands import eval_default_output
    from textfit.data.read import data_stem

    assert [data_stem(p) for p in ("d/reviews.csv.gz", "d/reviews.csv", "sst2/", "glue mrpc", "a.jsonl.xz")] == [
        "reviews",
        "reviews",
        "sst2",
        "glue mrpc",
        "a",
    ]
    assert eval_default_output("runs/r", "holdout.tsv.bz2") == Path("runs/r/eval-holdout")


def test_ray_reads_folders_of_csv_files_and_compressed_files(run, tmp_path):
    """A .csv.gz, and a folder of compressed CSV files (its columns from the first file), given as a path and as a
    URL: the local engine's rows, in order."""
    pytest.importorskip("ray.data")
    src = table(tmp_path / "in.csv", n=30)
    common = ["--chunk-rows", "16", "--quiet", "--backend", "torch"]
    r = run_cli("predict", run, "--input", str(src), "--output", str(tmp_path / "local.csv"), *common)
    assert r.returncode == 0, r.stderr
    local = (tmp_path / "local.csv").read_bytes()
    folder = tmp_path / "parts"
    folder.mkdir()
    lines = src.read_text().splitlines(keepends=True)
    for name, part in (("a.csv", lines[:11]), ("b.csv", lines[:1] + lines[11:])):  # the header in each file
        (folder / name).write_text("".join(part))
        compress(folder / name, "gz")
        (folder / name).unlink()
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    cmd = [sys.executable, "-m", "textfit", "predict", run, "--engine", "ray", *common]
    for k, given in enumerate((str(compress(src, "gz")), str(folder), folder.as_uri())):  # a URL: listed by pyarrow
        out = tmp_path / f"ray-{k}.csv"
        r = subprocess.run(
            [*cmd, "--input", given, "--output", str(out)], capture_output=True, text=True, cwd=ROOT, env=env
        )
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() == local, given
    r = run_cli(
        "predict", run, "--input", str(compress(src, "xz")), "--output", str(tmp_path / "x.csv"), "--engine", "ray"
    )
    assert (
        r.returncode == 2 and "Ray's readers take .gz, .bz2 and .zst files, not .xz; use the local engine" in r.stderr
    )
