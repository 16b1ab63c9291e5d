"""Checkpoints, exact resume after SIGKILL and SIGTERM, safe loading, determinism, two processes."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, make_rows, run_cli, write_csv
from textfit.train.checkpoint import checkpoints, is_complete, latest_checkpoint

ARGS = [  # the fine-tuning loop (its checkpoints): pinned, as --method auto would run the contrastive method here
    "--method",
    "finetune",
    "--epochs",
    "3",
    "--batch-size",
    "8",
    "--learning-rate",
    "1e-2",
    "--precision",
    "fp32",
    "--no-freeze-word-embeddings",
    "--eval-steps",
    "7",
    "--save-steps",
    "3",
    "--save-total-limit",
    "3",
    "--max-length",
    "32",
]


def latest_step(out: Path) -> int:
    path = latest_checkpoint(out)
    return int(path.name.split("-")[1]) if path else 0


def test_kill_and_resume_gives_bit_identical_weights(tiny_model, tmp_path):
    data = write_csv(tmp_path / "r.csv", make_rows(300))
    base = [sys.executable, "-m", "textfit", "train", "--data", str(data), "--model", tiny_model, *ARGS]
    full = subprocess.run(base + ["--output", str(tmp_path / "full")], capture_output=True, text=True, cwd=ROOT)
    assert full.returncode == 0, full.stderr[-2000:]
    assert len(checkpoints(tmp_path / "full")) == 3  # --save-total-limit

    out, rng, stops = tmp_path / "cut", random.Random(1), []
    for attempt in range(12):
        cmd = base + ["--output", str(out)] + (["--resume"] if latest_checkpoint(out) else [])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        if len(stops) >= 4:  # enough interruptions: let it finish
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-2000:]
            break
        before = latest_step(out)
        deadline = time.time() + 120
        while proc.poll() is None and latest_step(out) == before and time.time() < deadline:
            time.sleep(0.02)
        if proc.poll() is not None:  # finished before we could interrupt it
            assert proc.returncode == 0, proc.stderr.read()[-2000:]
            break
        time.sleep(rng.uniform(0.0, 0.4))  # a random moment after a checkpoint: mid-step, mid-save, mid-eval
        sig = signal.SIGTERM if not stops else signal.SIGKILL
        proc.send_signal(sig)
        proc.wait(60)
        stops.append((sig, proc.returncode))
        if sig == signal.SIGTERM and proc.returncode != 0:  # a clean stop saves a checkpoint and says how to go on
            assert proc.returncode == 128 + signal.SIGTERM and "--resume" in proc.stderr.read()
    assert len(stops) >= 2, stops
    assert (out / "textfit.json").is_file()
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (
        json.loads((out / "metrics.json").read_text())["test"]
        == json.loads((tmp_path / "full" / "metrics.json").read_text())["test"]
    )


def test_incomplete_checkpoint_is_skipped(tiny_model, tmp_path):
    data = write_csv(tmp_path / "r.csv", make_rows(120))
    r = run_cli("train", "--data", str(data), "--model", tiny_model, *ARGS, "--output", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    good = latest_checkpoint(tmp_path / "run")
    fake = tmp_path / "run" / "checkpoint-999"
    shutil.copytree(good, fake)
    (fake / "checkpoint.json").unlink()  # a crash before the manifest was written
    assert not is_complete(fake) and latest_checkpoint(tmp_path / "run") == good
    torn = tmp_path / "run" / "checkpoint-998"
    shutil.copytree(good, torn)
    with open(torn / "model.safetensors", "r+b") as fh:
        fh.truncate(100)  # a torn write
    assert not is_complete(torn) and latest_checkpoint(tmp_path / "run") == good
    # resumed with other weights to train: one line, not torch's traceback
    r = run_cli("train", "--data", str(data), "--model", tiny_model, *ARGS, "--freeze-layers", "1",
                "--output", str(tmp_path / "again"), "--resume", str(good))
    assert r.returncode == 2 and "its optimizer state is for another set of trained weights" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "again").exists()


class _Plant:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))  # unpickling this creates the file


def test_malicious_pickle_is_never_loaded(tiny_model, tmp_path):
    evil = tmp_path / "evil-model"
    shutil.copytree(tiny_model, evil)
    (evil / "model.safetensors").unlink()
    marker = tmp_path / "PWNED"
    with open(evil / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"weight": _Plant(str(marker))}, fh)
    data = write_csv(tmp_path / "r.csv", make_rows(40))
    r = run_cli("train", "--data", str(data), "--model", str(evil), "--output", str(tmp_path / "run"))
    assert r.returncode == 2 and "pytorch_model.bin, which textfit never unpickles" in r.stderr
    assert not marker.exists() and not (tmp_path / "run").exists()
    # With safetensors beside the pickle, the safetensors are read and the pickle never is.
    shutil.copy(Path(tiny_model) / "model.safetensors", evil / "model.safetensors")
    r = run_cli(
        "train",
        "--data",
        str(data),
        "--model",
        str(evil),
        "--output",
        str(tmp_path / "run2"),
        "--max-steps",
        "2",
        "--precision",
        "fp32",
    )
    assert r.returncode == 0, r.stderr
    assert not marker.exists()


def test_deterministic_runs_give_the_same_metrics(tiny_model, tmp_path):
    from textfit import TrainConfig, train

    data = write_csv(tmp_path / "r.csv", make_rows(120))
    kw = dict(
        data=str(data),
        model=tiny_model,
        epochs=2,
        batch_size=8,
        learning_rate=1e-2,
        deterministic=True,
        freeze_word_embeddings=False,
    )
    a = train(TrainConfig(output=str(tmp_path / "a"), **kw))
    b = train(TrainConfig(output=str(tmp_path / "b"), **kw))
    torch.use_deterministic_algorithms(False)
    assert a["metrics"] == b["metrics"]


def test_two_processes_evaluate_every_example_once(tiny_model, tmp_path):
    """torchrun with 2 CPU processes (gloo): one writer, and metrics equal a 1-process evaluation."""
    import numpy as np

    from textfit import Classifier, TrainConfig
    from textfit.data import load_data
    from textfit.metrics import compute_metrics

    data = write_csv(tmp_path / "r.csv", make_rows(203))  # uneven shards: 20 validation rows over 2 processes
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "textfit",
        "train",
        "--data",
        str(data),
        "--model",
        tiny_model,
        "--epochs",
        "6",
        "--batch-size",
        "8",
        "--learning-rate",
        "1e-2",
        "--precision",
        "fp32",
        "--no-freeze-word-embeddings",
        "--output",
        str(tmp_path / "run"),
        "--eval-batch-size",
        "3",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stdout and r.stdout.count("saved the run") == 1
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    splits = load_data(TrainConfig(data=str(data))).splits
    clf = Classifier.load(tmp_path / "run", precision="fp32")
    for name in ("test",):
        s = splits[name]
        probs = clf.predict_proba(s.texts)
        single = compute_metrics(s.labels, probs.argmax(-1), clf.labels)
        assert m[name]["n"] == len(s.texts) == 20
        assert m[name]["accuracy"] == single["accuracy"] and m[name]["per_class"] == single["per_class"]
        loss = float(np.mean(-np.log(probs[np.arange(len(s.labels)), s.labels])))
        assert abs(m[name]["loss"] - loss) < 1e-4


def test_a_tampered_checkpoint_is_skipped_or_refused(tiny_model, tmp_path):
    data = write_csv(tmp_path / "r.csv", make_rows(120))
    out = tmp_path / "run"
    r = run_cli("train", "--data", str(data), "--model", tiny_model, *ARGS, "--output", str(out))
    assert r.returncode == 0, r.stderr
    (out / "textfit.json").unlink()  # as if the run had been stopped before its end
    newest, older = checkpoints(out)[:2]
    with open(newest / "model.safetensors", "r+b") as fh:  # same size, other weights
        fh.seek(-8, 2)
        last = fh.read(8)
        fh.seek(-8, 2)
        fh.write(bytes(b ^ 0xFF for b in last))
    assert is_complete(newest)  # sizes match: only the SHA-256 tells
    r = run_cli(
        "train", "--data", str(data), "--model", tiny_model, *ARGS, "--output", str(out), "--resume", str(newest)
    )
    assert r.returncode == 2 and "does not match its recorded SHA-256" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("train", "--data", str(data), "--model", tiny_model, *ARGS, "--output", str(out), "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"skipped {newest}" in r.stderr and f"resumed from {older}" in r.stdout


def test_overwrite_replaces_an_old_run_and_its_checkpoints_and_cleans_stale_temporary_folders(tiny_model, tmp_path):
    data = write_csv(tmp_path / "r.csv", make_rows(120))
    out = tmp_path / "run"
    r = run_cli("train", "--data", str(data), "--model", tiny_model, *ARGS, "--output", str(out))
    assert r.returncode == 0, r.stderr
    old = {p.name for p in checkpoints(out)}
    assert len(old) == 3 and "checkpoint-2" not in old and "checkpoint-4" not in old
    dead = tmp_path / ".run.tmp-999999999"  # what a killed run left beside the run folder
    (dead / "x").mkdir(parents=True)
    alive = tmp_path / f".run.tmp-{os.getpid()}"  # another run's, still going
    alive.mkdir()
    (out / ".checkpoint-7.tmp").mkdir()  # a save killed midway
    args = ARGS[: ARGS.index("--save-steps")] + ARGS[ARGS.index("--save-total-limit") + 2 :]
    r = run_cli(
        "train",
        "--data",
        str(data),
        "--model",
        tiny_model,
        *args,
        "--save-steps",
        "2",
        "--max-steps",
        "4",
        "--output",
        str(out),
        "--overwrite",
    )
    assert r.returncode == 0, r.stderr
    assert {p.name for p in checkpoints(out)} == {"checkpoint-2", "checkpoint-4"}  # none of the old run's
    assert not dead.exists() and alive.exists() and not (out / ".checkpoint-7.tmp").exists()


def test_a_loss_that_becomes_infinite_stops_training_and_saves_nothing(tiny_model, tmp_path):
    from textfit import TrainConfig, UsageError, train

    rows = [(t, 1e30 * (1 + i % 7)) for i, (t, _) in enumerate(make_rows(60))]  # squared, beyond fp32
    data = write_csv(tmp_path / "big.csv", rows)
    with pytest.raises(UsageError, match=r"the training loss became (inf|nan) by step 1 .*lower --learning-rate"):
        train(
            TrainConfig(
                data=str(data),
                model=tiny_model,
                output=str(tmp_path / "run"),
                logging_steps=1,
                max_steps=5,
                precision="fp32",
                task="regression",
            )
        )
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.tmp-*"))
