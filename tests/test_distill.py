"""Distillation (train/distill.py) and smaller students (--layers): the loss, the teacher's cache and
checks, ensemble teachers, a resumed distillation, and the student as an ordinary run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from conftest import ROOT, make_rows, run_cli, write_csv
from textfit import TrainConfig, train
from textfit.models.transformer import keep_layers
from textfit.predict.classifier import Classifier
from textfit.run import RunManifest
from textfit.train.checkpoint import latest_checkpoint
from textfit.train.methods.distill import CACHE, Distillation

FAST = dict(
    epochs=4, batch_size=8, learning_rate=1e-2, precision="fp32", freeze_word_embeddings=False, layer_lr_decay=1.0
)
FLAGS = ["--epochs", "4", "--batch-size", "8", "--learning-rate", "1e-2", "--precision", "fp32"]
FLAGS += ["--no-freeze-word-embeddings", "--layer-lr-decay", "1"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("distill")
    return {
        "data": write_csv(d / "r.csv", make_rows(160, seed=3)),
        "unlabeled": write_csv(d / "u.csv", [(t,) for t, _ in make_rows(60, seed=9)], header=["text"]),
        "dir": d,
    }


@pytest.fixture(scope="module")
def teacher(tiny_model, files) -> str:
    return train(TrainConfig(data=str(files["data"]), model=tiny_model, output=str(files["dir"] / "teacher"), **FAST))[
        "folder"
    ]


def one_line_exit_2(r, match: str) -> None:
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and match in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def _distillation(scores, labelled) -> Distillation:
    return Distillation("t", [], None, np.asarray(scores, np.float32), np.asarray(labelled), None, "", False, 0.0, 0)  # type: ignore[arg-type]


def test_the_loss_is_gold_cross_entropy_and_t2_kl_to_the_softened_teacher():
    torch.manual_seed(0)
    logits, y = torch.randn(4, 3), torch.tensor([0, 2, 1, 0])
    teacher = torch.softmax(torch.randn(4, 3), -1)
    d = _distillation(teacher.numpy(), [True, True, True, False])
    ix, t = torch.arange(4), 2.0
    soft = torch.softmax(torch.log(teacher) / t, -1)
    kl = F.kl_div(torch.log_softmax(logits / t, -1), soft, reduction="none").sum(-1) * t * t
    ce = F.cross_entropy(logits, y, reduction="none")
    for alpha in (0.0, 0.3, 1.0):
        got = d.loss("classification", np.arange(4), alpha, t, None)(logits, y, ix)
        g = torch.tensor([alpha, alpha, alpha, 0.0])  # the unlabelled row follows the teacher only
        assert torch.allclose(got, (g * ce + (1 - g) * kl).mean(), atol=1e-6)
    # windows: dataset items 0 and 1 are windows of training row 1
    got = d.loss("classification", np.array([1, 1]), 0.0, t, None)(logits[:2], y[:2], torch.tensor([0, 1]))
    assert torch.allclose(
        got,
        (F.kl_div(torch.log_softmax(logits[:2] / t, -1), soft[[1, 1]], reduction="none").sum(-1) * t * t).mean(),
        atol=1e-6,
    )


def test_regression_and_multi_label_losses_follow_the_teacher():
    z = torch.tensor([[0.5], [2.0]])
    d = _distillation([[1.0], [1.0]], [True, False])
    got = d.loss("regression", np.arange(2), 0.5, 2.0, None)(z, torch.tensor([0.0, 5.0]), torch.arange(2))
    assert torch.isclose(got, torch.tensor(((0.5 * 0.25 + 0.5 * 0.25) + 1.0) / 2))
    p = torch.tensor([[0.9, 0.2]])
    d = _distillation(p.numpy(), [True])
    zl = torch.tensor([[1.0, -1.0]])
    got = d.loss("multi-label", np.arange(1), 0.0, 1.0, None)(zl, torch.tensor([[1.0, 0.0]]), torch.arange(1))
    assert torch.isclose(got, F.binary_cross_entropy_with_logits(zl, p), atol=1e-5)


def test_keep_layers_keeps_evenly_spaced_layers_first_and_last(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32)
    )
    before = [layer.intermediate.dense.weight.clone() for layer in model.bert.encoder.layer]
    assert keep_layers(model, 3) == [0, 2, 3]
    assert model.config.num_hidden_layers == 3 and len(model.bert.encoder.layer) == 3
    for kept, original in zip(model.bert.encoder.layer, [0, 2, 3]):
        assert torch.equal(kept.intermediate.dense.weight, before[original])
    model.save_pretrained(tmp_path)
    assert sorted({k.split(".")[3] for k in load_file(tmp_path / "model.safetensors") if ".layer." in k}) == [
        "0",
        "1",
        "2",
    ]


def test_distill_with_unlabelled_texts_and_fewer_layers_is_an_ordinary_run(teacher, files, tiny_model, tmp_path):
    out = tmp_path / "student"
    args = ["distill", teacher, "--data", str(files["data"]), "--unlabeled", str(files["unlabeled"])]
    args += ["--student", tiny_model, "--layers", "1", "--output", str(out), *FLAGS]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "60 unlabelled texts" in r.stdout and "decides as the teacher does on" in r.stdout
    m = RunManifest.read(out)
    info = m.distillation
    assert info["teacher"] == teacher and info["unlabeled_rows"] == 60 and not info["teacher_predictions_cached"]
    assert 0 <= info["agreement_validation"] <= 1 and "accuracy" in info["teacher_validation"]
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    card = (out / "README.md").read_text()
    assert (
        f"from the teacher `{teacher}` (a run;" in card and "60 unlabelled texts learned from the teacher alone" in card
    )
    # the teacher scored every training row (and the unlabelled ones) once, in the teacher's own calibrated terms
    cached = load_file(out / CACHE)
    split_rows = json.loads((out / "splits.json").read_text())
    assert len(split_rows["unlabeled"]) == 60
    rows = len(split_rows["train"]) + 60
    assert cached["scores"].shape == (rows, 2)
    from transformers import pipeline

    got = pipeline("text-classification", model=str(out))(["good film", "awful room"])
    ours = Classifier.load(out).predict(["good film", "awful room"])
    assert [g["label"] for g in got] == [p.label for p in ours]
    assert run_cli("eval", str(out), "--data", str(files["data"])).returncode == 0

    # a second distillation into the same folder with other student settings reads the cache
    r = run_cli(*args[: -len(FLAGS)], *FLAGS, "--overwrite", "--alpha", "0.2", "--distill-temperature", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"read from {out / CACHE}" in r.stdout and RunManifest.read(out).distillation["teacher_predictions_cached"]

    # ... and so does one into another folder that names the first with --teacher-predictions
    other = tmp_path / "student2"
    at = args.index("--output") + 1
    again = [*args[:at], str(other), *args[at + 1 :], "--teacher-predictions", str(out), "--alpha", "0.2"]
    r = run_cli(*again)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"read from {out / CACHE}" in r.stdout and RunManifest.read(other).distillation["teacher_predictions_cached"]
    assert np.array_equal(load_file(other / CACHE)["scores"], load_file(out / CACHE)["scores"])
    # predictions for other texts (no --unlabeled here) or no predictions at all: one line, nothing written
    unlabeled = args.index("--unlabeled")
    fewer = [*again[:unlabeled], *again[unlabeled + 2 :]]
    fewer[fewer.index(str(other))] = str(tmp_path / "never")
    one_line_exit_2(run_cli(*fewer), "made by another teacher or for other texts")
    fewer[-3] = str(files["dir"])
    one_line_exit_2(run_cli(*fewer), "no teacher_predictions.safetensors there")
    assert not (tmp_path / "never").exists()


def test_an_ensemble_teacher_averages_its_runs(tiny_model, files, tmp_path):
    seeds = train(
        TrainConfig(data=str(files["data"]), model=tiny_model, output=str(tmp_path / "seeds"), seeds="1,2", **FAST)
    )
    out = tmp_path / "student"
    folder = str(tmp_path / "seeds")
    train(TrainConfig(data=str(files["data"]), model=tiny_model, output=str(out), teacher=folder, **FAST))
    assert RunManifest.read(out).distillation["teacher_runs"] == 2
    train_rows = json.loads((out / "splits.json").read_text())["train"]
    assert seeds and len(train_rows) == load_file(out / CACHE)["scores"].shape[0]
    texts = [t for t, _ in make_rows(160, seed=3)]
    lines = [texts[r - 2] for r in train_rows]  # rows are file lines; line 1 is the header
    mean = sum(Classifier.load(tmp_path / "seeds" / f"seed-{s}").predict_proba(lines) for s in (1, 2)) / 2
    assert np.allclose(load_file(out / CACHE)["scores"], mean, atol=1e-5)


def test_bad_teachers_and_layers_are_refused_in_one_line(teacher, files, tiny_model, tmp_path):
    out = tmp_path / "never"
    base = ["--output", str(out), "--student", tiny_model]
    one_line_exit_2(run_cli("distill", str(tmp_path), "--data", str(files["data"]), *base), "not a textfit run")
    other = write_csv(tmp_path / "o.csv", make_rows(40, labels=("bad", "good")))
    one_line_exit_2(run_cli("distill", teacher, "--data", str(other), *base), "has the labels negative, positive")
    numbers = write_csv(tmp_path / "n.csv", [(t, f"{i / 7:.3f}") for i, (t, _) in enumerate(make_rows(40))])
    one_line_exit_2(run_cli("distill", teacher, "--data", str(numbers), *base), "is a classification run")
    pairs = write_csv(
        tmp_path / "p.csv", [(t, t, y) for t, y in make_rows(40)], header=["sentence1", "sentence2", "label"]
    )
    one_line_exit_2(run_cli("distill", teacher, "--data", str(pairs), *base), "classifies single texts")
    for k in ("0", "3"):
        one_line_exit_2(run_cli("distill", teacher, "--data", str(files["data"]), *base, "--layers", k), "--layers")
    train_args = ["--data", str(files["data"]), "--output", str(out), "--model", tiny_model, "--layers", "3"]
    one_line_exit_2(run_cli("train", *train_args), "the model has 2 layers")
    assert not out.exists()
    bad = run_cli("distill", teacher, "--data", str(files["data"]), "--output", teacher, "--overwrite", *base[2:])
    assert bad.returncode == 2 and (Path(teacher) / "textfit.json").exists()  # the teacher is never replaced


def test_train_layers_saves_a_smaller_ordinary_model(tiny_model, files, tmp_path):
    folder = train(
        TrainConfig(data=str(files["data"]), model=tiny_model, output=str(tmp_path / "l1"), layers=1, **FAST)
    )["folder"]
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(folder).config.num_hidden_layers == 1


def test_a_killed_distillation_resumes_to_the_same_weights(teacher, files, tiny_model, tmp_path):
    data = write_csv(tmp_path / "big.csv", make_rows(300, seed=4))
    base = [sys.executable, "-m", "textfit", "distill", teacher, "--data", str(data), "--student", tiny_model]
    base += [*FLAGS, "--save-steps", "3", "--max-length", "32"]
    full = subprocess.run([*base, "--output", str(tmp_path / "full")], capture_output=True, text=True, cwd=ROOT)
    assert full.returncode == 0, full.stderr[-2000:]
    out = tmp_path / "cut"
    proc = subprocess.Popen(
        [*base, "--output", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    deadline = time.time() + 120
    while proc.poll() is None and latest_checkpoint(out) is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "finished before it could be stopped"
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    again = subprocess.run([*base, "--output", str(out), "--resume"], capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"read from {out / CACHE}" in again.stdout  # the teacher did not predict again
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_pair_teacher_distils_a_pair_student(tiny_model, tmp_path):
    rows = [(t, t.split()[-1], y) for t, y in make_rows(120, seed=5)]
    data = write_csv(tmp_path / "p.csv", rows, header=["sentence1", "sentence2", "label"])
    teacher = train(TrainConfig(data=str(data), model=tiny_model, output=str(tmp_path / "t"), **FAST))["folder"]
    out = tmp_path / "s"
    train(TrainConfig(data=str(data), model=tiny_model, output=str(out), teacher=teacher, alpha=0.0, **FAST))
    m = RunManifest.read(out)
    assert m.pairs and m.distillation["agreement_validation"] is not None
    texts = [r[0] for r in rows[:8]]
    pairs = [r[1] for r in rows[:8]]
    assert Classifier.load(out).predict_proba(texts, pairs).shape == (8, 2)
