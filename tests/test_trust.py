"""Predictions you can trust: calibration, cross-validation with label issues, explanations."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_rows, run_cli, write_csv
from textfit import Classifier, TrainConfig, UsageError, train
from textfit.calibration import apply_temperature, calibration_metrics, fit_temperature, probabilities, unusable

# A random tiny model: every layer at the same rate (layer-wise decay, on by default, is for pretrained encoders).
FAST = dict(  # the fine-tuning loop (pinned: --method auto would run the contrastive method on these small files)
    method="finetune",
    epochs=6,
    batch_size=8,
    learning_rate=1e-2,
    logging_steps=5,
    precision="fp32",
    freeze_word_embeddings=False,
    layer_lr_decay=1.0,
)


def _overconfident(n: int = 4000, k: int = 3, scale: float = 3.0, seed: int = 0):
    """Labels drawn from softmax(u); the model's logits are u * scale: over-confident by `scale`."""
    rng = np.random.default_rng(seed)
    u = rng.normal(0, 1.5, size=(n, k))
    p = np.exp(u) / np.exp(u).sum(1, keepdims=True)
    gold = np.array([rng.choice(k, p=row) for row in p])
    return (u * scale).astype(np.float32), gold


def test_temperature_recovers_the_over_confidence_and_lowers_ece():
    logits, gold = _overconfident()
    t = fit_temperature(logits, gold, "classification")
    assert 2.6 < t < 3.4
    before, after = (
        calibration_metrics(logits, gold, "classification"),
        calibration_metrics(apply_temperature(logits, t), gold, "classification"),
    )
    assert after["ece"] < before["ece"] / 2 and after["nll"] < before["nll"] and after["brier"] < before["brier"]
    assert (apply_temperature(logits, t).argmax(1) == logits.argmax(1)).all()  # the labels never change
    assert unusable(logits, gold, "classification", t) is None


def test_temperature_per_label_for_multi_label():
    rng = np.random.default_rng(1)
    u = rng.normal(0, 2, size=(3000, 2))
    gold = (rng.random((3000, 2)) < 1 / (1 + np.exp(-u))).astype(int)
    ts = fit_temperature((u * np.array([0.5, 4.0])).astype(np.float32), gold, "multi-label")
    assert isinstance(ts, list) and 0.4 < ts[0] < 0.6 and 3.4 < ts[1] < 4.6


def test_a_temperature_is_refused_on_few_or_perfectly_separated_rows():
    logits = np.array([[-5.0, 5.0], [5.0, -5.0]] * 40, dtype=np.float32)
    gold = np.array([1, 0] * 40)
    t = fit_temperature(logits, gold, "classification")
    assert "ran to its bound" in unusable(logits, gold, "classification", t)
    assert "fewer than the 50" in unusable(logits[:10], gold[:10], "classification", 1.0)
    assert probabilities(logits[:1], "classification").sum() == pytest.approx(1.0)


@pytest.fixture(scope="module")
def calibrated(tiny_model, tmp_path_factory) -> dict:
    """A tiny run with a 60-row validation split: enough for a temperature."""
    folder = tmp_path_factory.mktemp("cal")
    rows = make_rows(400, seed=3, chinese=False)
    rng = np.random.default_rng(0)
    for i in rng.choice(len(rows), 40, replace=False):  # some noise, so that the model cannot be perfect
        rows[i] = (rows[i][0], "positive" if rows[i][1] == "negative" else "negative")
    data = write_csv(folder / "reviews.csv", rows)
    # Many epochs on noisy labels: the model memorises the flipped rows and grows over-confident. At a
    # modest rate: 1e-2 for 20 epochs diverged or separated the split perfectly depending on the CPU's
    # kernels and thread count; 1e-3 for 40 gave T 1.15-1.36 on AVX-512 bf16 and AVX2 kernels, 1 or 2 threads.
    cfg = TrainConfig(data=str(data), model=tiny_model, output=str(folder / "run"), split="70,15,15", **FAST)
    result = train(dataclasses.replace(cfg, epochs=40, learning_rate=1e-3, load_best_model_at_end=False))
    return {"result": result, "data": data, "folder": Path(result["folder"])}


def test_training_fits_a_temperature_and_reports_it(calibrated):
    folder = calibrated["folder"]
    manifest = json.loads((folder / "textfit.json").read_text())
    t = manifest["temperature"]
    assert isinstance(t, float) and t > 0 and t != 1.0
    assert abs(np.log(t)) > 0.05  # a temperature that changes the probabilities
    assert calibrated["result"]["metrics"]["test"]["accuracy"] >= 0.7  # learnt the cue words, apart from the noise
    metrics = json.loads((folder / "metrics.json").read_text())
    for split in ("validation", "test"):
        c = metrics[split]["calibration"]
        assert c["temperature"] == t and set(c["before"]) == {"ece", "brier", "nll"}
        assert c["after"]["nll"] == pytest.approx(metrics[split]["loss"], abs=1e-5)
    assert metrics["validation"]["calibration"]["after"]["nll"] <= metrics["validation"]["calibration"]["before"]["nll"]
    assert (folder / "reliability.png").stat().st_size > 5000
    assert "Calibration" in (folder / "report.html").read_text(encoding="utf-8")


def test_every_prediction_path_gives_the_calibrated_probabilities(calibrated, tmp_path):
    from fastapi.testclient import TestClient

    from textfit.predict.export import export_onnx
    from textfit.serve.app import create_app

    folder = calibrated["folder"]
    t = json.loads((folder / "textfit.json").read_text())["temperature"]
    texts = ["the room was lovely", "awful food and the staff", "plot film very"]
    clf = Classifier.load(folder, precision="fp32")
    logits = clf.predict_logits(texts)
    probs = clf.predict_proba(texts)
    want = np.exp(logits / t) / np.exp(logits / t).sum(1, keepdims=True)
    np.testing.assert_allclose(probs, want, atol=1e-6)
    assert not np.allclose(probs, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), atol=1e-4)
    export_onnx(str(folder), str(tmp_path / "onnx"))
    onnx = Classifier.load_onnx(folder, folder=tmp_path / "onnx")
    np.testing.assert_allclose(onnx.predict_proba(texts), probs, atol=1e-4)
    with TestClient(create_app(clf, run=str(folder))) as client:
        answer = client.post("/predict", json={"inputs": texts}).json()
    for row, p in zip(answer, probs):
        got = {s["label"]: s["score"] for s in row}
        assert [got[n] for n in clf.labels] == pytest.approx(list(p), abs=1e-6)
    r = run_cli("predict", str(folder), "--json", "--precision", "fp32", *texts)
    shown = [json.loads(line)["probabilities"] for line in r.stdout.splitlines()]
    np.testing.assert_allclose([[s[n] for n in clf.labels] for s in shown], probs, atol=1e-5)


def test_eval_reports_calibration_as_training_did(calibrated, tmp_path):
    from textfit.data import load_data

    folder = calibrated["folder"]
    splits = json.loads((folder / "splits.json").read_text())
    rows = list(csv.reader(open(calibrated["data"], encoding="utf-8")))
    write_csv(tmp_path / "val.csv", [rows[i - 1] for i in splits["validation"]])
    r = run_cli("eval", str(folder), "--data", str(tmp_path / "val.csv"), "--output", str(tmp_path / "ev"))
    assert r.returncode == 0, r.stderr
    assert "expected calibration error" in r.stdout and (tmp_path / "ev" / "reliability.png").is_file()
    got = json.loads((tmp_path / "ev" / "metrics.json").read_text())["calibration"]
    saved = json.loads((folder / "metrics.json").read_text())["validation"]["calibration"]
    assert got["after"]["ece"] == pytest.approx(saved["after"]["ece"], abs=1e-4)
    assert load_data  # the reader is the one training used


def test_calibration_flag_mistakes(tiny_model, tmp_path):
    data = write_csv(tmp_path / "d.csv", make_rows(60))
    r = run_cli(
        "train", "--data", str(data), "--model", tiny_model, "--split", "90,0,10", "--calibration", "temperature"
    )
    assert r.returncode == 2 and "--calibration temperature needs a validation split" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "runs").exists()
    r = run_cli("train", "--data", str(data), "--calibration", "platt")
    assert r.returncode == 2 and "--calibration: 'platt' is not one of auto, temperature, none" in r.stderr
    # auto: too few validation rows for a temperature: trained without one, and said so
    out = tmp_path / "small"
    r = run_cli("train", "--data", str(data), "--model", tiny_model, "--epochs", "1", "--output", str(out))
    assert r.returncode == 0 and "no calibration: the validation split has 6 rows" in r.stdout
    assert json.loads((out / "textfit.json").read_text())["temperature"] is None


# -- cross-validation and label issues ------------------------------------------------------------


def test_cv_flags_the_flipped_labels(tiny_model, tmp_path):
    rows = make_rows(300, seed=5, chinese=False)
    rng = np.random.default_rng(2)
    flipped = sorted(int(i) for i in rng.choice(len(rows), 15, replace=False))  # 5%
    for i in flipped:
        rows[i] = (rows[i][0], "positive" if rows[i][1] == "negative" else "negative")
    data = write_csv(tmp_path / "noisy.csv", rows)
    out = tmp_path / "cv"
    args = ["cv", "--data", str(data), "--model", tiny_model, "--folds", "3", "--output", str(out)]
    args += ["--method", "finetune", "--epochs", "6", "--batch-size", "8", "--learning-rate", "1e-2", "--precision", "fp32"]
    r = run_cli(*args, "--no-freeze-word-embeddings", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "a list to review, not a verdict" in r.stdout and "checked 300 rows" in r.stdout
    for k in (1, 2, 3):
        assert (out / f"fold-{k}" / "textfit.json").is_file()
    summary = json.loads((out / "cv.json").read_text())
    assert summary["folds"] == 3 and set(summary["metrics"]) == {"validation", "held_out"}
    assert len(summary["metrics"]["held_out"]["accuracy"]["values"]) == 3
    oof = list(csv.DictReader(open(out / "oof.csv", encoding="utf-8")))
    assert len(oof) == 300 and sorted(int(r["row"]) for r in oof) == list(range(2, 302))
    assert {r["fold"] for r in oof} == {"1", "2", "3"}
    issues = list(csv.DictReader(open(out / "label_issues.csv", encoding="utf-8")))
    # The flipped rows rank first: the first 5 cleanlab flags are at least 4 flipped rows (at random about 1 of 5),
    # and the out-of-fold probability of the given label separates flipped from clean rows (AUROC, 0.5 at random).
    # A tiny model learns these rows to 0.75-0.8 out of fold, so the ranking is good at its top, not perfect below.
    top = [int(r["row"]) - 2 for r in issues if r["reason"].startswith("cleanlab")][:5]
    assert len(set(top) & set(flipped)) >= 4, (top, flipped)
    from sklearn.metrics import roc_auc_score

    given = {int(r["row"]) - 2: float(r["prob_" + r["label"]]) for r in oof}
    auroc = roc_auc_score([i in flipped for i in range(300)], [1 - given[i] for i in range(300)])
    assert auroc >= 0.85, auroc
    assert {"row", "text", "given_label", "suggested_label", "quality"} <= set(issues[0])
    assert "Label issues" in (out / "report.html").read_text(encoding="utf-8")
    # --overwrite replaces a cross-validation folder (textfit's own)
    r = run_cli(*args, "--no-freeze-word-embeddings", "--max-steps", "2", "--overwrite", timeout=600)
    assert r.returncode == 0, r.stderr[-1000:]


def test_cv_mistakes(tiny_model, tmp_path):
    rows = make_rows(40) + [("a rare one", "neutral")] * 2
    data = write_csv(tmp_path / "d.csv", rows)
    r = run_cli("cv", "--data", str(data), "--folds", "1")
    assert r.returncode == 2 and "--folds 1: cross-validation needs at least 2 folds" in r.stderr
    r = run_cli("cv", "--data", str(data), "--model", tiny_model, "--folds", "3", "--output", str(tmp_path / "o"))
    assert r.returncode == 2 and "2 rows of label 'neutral', fewer than the folds" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()
    r = run_cli("inspect", "--data", str(data), "--label-issues", "--folds", "0")
    assert r.returncode == 2 and "--folds 0" in r.stderr


@pytest.mark.parametrize("task", ["multi-label", "regression"])
def test_cv_other_tasks(tiny_model, tmp_path, task):
    import random

    rng = random.Random(0)
    if task == "multi-label":
        rows = [
            (t, "|".join(sorted(rng.sample(["food", "room", "staff"], rng.randint(1, 2))))) for t, _ in make_rows(60)
        ]
    else:
        rows = [(t, f"{rng.uniform(0, 5):.3f}") for t, _ in make_rows(60)]
    data = write_csv(tmp_path / "d.csv", rows)
    out = tmp_path / "cv"
    r = run_cli(
        "cv", "--data", str(data), "--model", tiny_model, "--folds", "2", "--max-steps", "2", "--output", str(out)
    )
    assert r.returncode == 0, r.stderr[-1500:]
    oof = list(csv.DictReader(open(out / "oof.csv", encoding="utf-8")))
    assert len(oof) == 60
    if task == "multi-label":
        assert {"prob_food", "prob_room", "prob_staff"} <= set(oof[0]) and (out / "label_issues.csv").is_file()
        assert "checked 60 rows" in r.stdout
    else:
        assert not (out / "label_issues.csv").exists() and "label_issues.csv" not in r.stdout
        assert json.loads((out / "cv.json").read_text())["metrics"]["held_out"]["mse"]["mean"] > 0


def test_inspect_label_issues_runs_the_cross_validation(tiny_model, tmp_path):
    data = write_csv(tmp_path / "d.csv", make_rows(60) + [("the film was great", "negative")])
    out = tmp_path / "li"
    r = run_cli(
        "inspect",
        "--data",
        str(data),
        "--model",
        tiny_model,
        "--label-issues",
        "--folds",
        "2",
        "--output",
        str(out),
        "--max-steps",
        "3",
        "--report",
        str(tmp_path / "report.json"),
        "--precision",
        "fp32",
    )
    assert r.returncode == 0, r.stderr[-1500:]
    assert (out / "label_issues.csv").is_file() and "checked 61 rows" in r.stdout


# -- explanations -------------------------------------------------------------------------------------


CUE = "excellent"


def planted_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Filler words; the label is 'positive' exactly when the planted cue word is in the text."""
    import random

    from conftest import FILLER

    rng = random.Random(seed)
    filler = [w for w in FILLER if w.isascii()]
    rows = []
    for i in range(n):
        words = rng.sample(filler, rng.randint(3, 8))
        if i % 2:
            words.insert(rng.randint(0, len(words)), CUE)
        rows.append((" ".join(words), "positive" if i % 2 else "negative"))
    return rows


@pytest.fixture(scope="module")
def cue_run(tiny_model, tmp_path_factory) -> Path:
    """A run whose label is set by one planted cue word."""
    folder = tmp_path_factory.mktemp("cue")
    data = write_csv(folder / "cue.csv", planted_rows(300, seed=7))
    # A gentler rate than FAST's: at 1e-2 the tiny model's output jumps like a step along the path, which
    # no number of integration steps follows (the convergence delta says so).
    cfg = TrainConfig(data=str(data), model=tiny_model, output=str(folder / "run"), **FAST)
    result = train(dataclasses.replace(cfg, learning_rate=3e-3))
    assert result["metrics"]["test"]["accuracy"] >= 0.95, result["metrics"]["test"]
    return Path(result["folder"])


@pytest.mark.parametrize("words", [(0, 6), (3, 6), (5, 5), (2, 3)])
def test_the_planted_cue_gets_the_largest_attribution(cue_run, words):
    from textfit.predict.explain import Explainer

    text = " ".join(planted_rows(40, seed=words[0] + 100)[2 * words[1] + 1][0].split())  # a positive row, unseen
    assert CUE in text.split()
    e = Explainer.load(cue_run).explain(text)
    assert e.label == "positive" and e.ranked()[0]["word"] == CUE, e.words
    assert [w["word"] for w in e.words] == text.split()  # one entry per word, in order, with its characters
    assert all(text[w["start"] : w["end"]] == w["word"] for w in e.words)
    total = sum(w["attribution"] for w in e.words)
    assert e.convergence_delta < 0.05 * abs(total) + 1e-3  # integrated gradients' completeness, nearly


def test_predict_explain_on_the_command_line(cue_run, tmp_path):
    r = run_cli("predict", str(cue_run), "--explain", "the staff were excellent")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("positive") and "words that pushed towards 'positive'" in lines[1]
    assert lines[2].split()[1] == CUE
    r = run_cli("predict", str(cue_run), "--explain", "--json", "the staff were excellent")
    e = json.loads(r.stdout)["explanation"]
    assert e["label"] == "positive" and max(e["words"], key=lambda w: w["attribution"])["word"] == CUE
    assert "integrated gradients" in e["method"] and isinstance(e["convergence_delta"], float)
    write_csv(tmp_path / "in.csv", [("the excellent food",)], header=["text"])
    r = run_cli(
        "predict", str(cue_run), "--explain", "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "o.csv")
    )
    row = next(csv.DictReader(open(tmp_path / "o.csv", encoding="utf-8")))
    assert row["top_words"].startswith(f"{CUE}:+")
    r = run_cli("predict", str(cue_run), "--explain", "--backend", "onnx", "good")
    assert r.returncode == 2 and "--explain needs the PyTorch backend" in r.stderr and "Traceback" not in r.stderr


def test_server_explains_and_refuses_what_it_cannot(cue_run):
    from fastapi.testclient import TestClient

    from textfit.serve.app import create_app

    clf = Classifier.load(cue_run, precision="fp32")
    with TestClient(create_app(clf, run=str(cue_run))) as client:
        assert client.get("/info").json()["explain"] is True
        r = client.post("/explain", json={"text": "the room was excellent"})
        assert r.status_code == 200 and r.json()["words"][3]["word"] == CUE
        assert max(r.json()["words"], key=lambda w: w["attribution"])["word"] == CUE
        other = client.post("/explain", json={"text": "the room was excellent", "label": "negative"}).json()
        assert other["label"] == "negative"
        for body, status in (
            ({"text": ""}, 422),
            ({"text": "x", "label": "maybe"}, 422),
            ({"text": "x", "text_pair": "y"}, 422),
            ({"texts": "x"}, 422),
            ({"text": "x" * 200_000}, 413),
        ):
            assert client.post("/explain", json=body).status_code == status, body
        assert client.post("/predict", json={"inputs": "great"}).status_code == 200  # the others still answered
    with TestClient(create_app(clf)) as client:  # no run folder to load an explainer from
        r = client.post("/explain", json={"text": "great"})
        assert r.status_code == 400 and "PyTorch backend" in r.json()["error"]


def test_explain_refuses_bad_input(cue_run):
    from textfit.predict.explain import Explainer

    ex = Explainer.load(cue_run)
    with pytest.raises(UsageError, match="empty text"):
        ex.explain("   ")
    with pytest.raises(UsageError, match="not one of this run's labels"):
        ex.explain("good", label="maybe")
    long = " ".join(["film"] * 300) + " excellent"
    assert ex.explain(long).truncated
