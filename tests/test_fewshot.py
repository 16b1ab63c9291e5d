"""Few labels and none (train/fewshot.py, train/zeroshot.py): the contrastive method and zero-shot runs are
ordinary sequence-classification folders (pipeline, eval, predict), the mean layer computes the mean-pooled
vector, `auto` says what it chose, the same seed gives the same model, and the user's mistakes are one line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import make_rows, run_cli, write_csv
from textfit import TrainConfig, train
from textfit.predict.classifier import Classifier
from textfit.train import methods
from textfit.train.methods import contrastive as fewshot
from textfit.train.methods import zeroshot

FAST = dict(precision="fp32", calibration="none")


def one_line_exit_2(r, match: str) -> None:
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and match in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fewshot")
    rows = make_rows(48, seed=5, chinese=False)
    return {
        "train": write_csv(d / "train.csv", rows[:24]),
        "validation": write_csv(d / "val.csv", rows[24:]),
        "dir": d,
    }


@pytest.fixture(scope="module")
def contrastive(tiny_model, files) -> dict:
    cfg = TrainConfig(
        train=str(files["train"]),
        validation=str(files["validation"]),
        model=tiny_model,
        output=str(files["dir"] / "contrastive"),
        method="auto",
        learning_rate=1e-3,
        **FAST,
    )
    return train(cfg)


def test_contrastive_run_is_an_ordinary_model(contrastive, files):
    from transformers import pipeline

    folder = Path(contrastive["folder"])
    manifest = json.loads((folder / "textfit.json").read_text())
    assert manifest["method"]["name"] == "contrastive" and manifest["method"]["pairs"] > 0
    config = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == 3  # the tiny BERT's 2 and the mean layer
    texts = [t for t, _ in make_rows(12, seed=11, chinese=False)]
    clf = Classifier.load(folder, precision="fp32")
    ours = clf.predict(texts)
    pipe = pipeline("text-classification", model=str(folder), device="cpu")
    theirs = pipe(texts)
    assert [p["label"] for p in theirs] == [p.label for p in ours]
    assert np.allclose([p["score"] for p in theirs], [p.score for p in ours], atol=1e-4)
    # the logistic-regression head learnt the words that decide the label
    assert contrastive["metrics"]["validation"]["accuracy"] >= 0.75
    card = (folder / "README.md").read_text()
    assert "Contrastive (SetFit's method)" in card


def test_contrastive_run_exports_to_onnx_with_parity(contrastive, tmp_path):
    """The mean layer (values x1e4, zero queries and keys) survives ONNX export and weight-only int8."""
    from textfit.predict.export import export_onnx

    r = export_onnx(contrastive["folder"], output=str(tmp_path / "onnx"), quantize="int8")
    assert r["parity"]["model.onnx"]["max_logit_diff"] < 1e-3 and r["parity"]["model.onnx"]["label_agreement"] == 1.0
    assert r["parity"]["model.int8.onnx"]["label_agreement"] >= 0.9


def test_mean_layer_outputs_the_mean_pooled_vector(tiny_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model)
    batch = tok(["good film", "the plot was very boring and the room poor"], padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = fewshot._mean_pool(model.base_model, batch)
        fewshot.append_mean_layer(model)
        first = model.base_model(**batch).last_hidden_state[:, 0]
    want = torch.nn.functional.layer_norm(pooled, (pooled.shape[1],))
    assert torch.allclose(first, want, atol=2e-3)  # the residual weighs 1e-4 beside the mean
    # zero-shot's dot product over hidden is the cosine of the (centred) mean-pooled vectors
    cos = (first[0] * first[1]).sum() / first.shape[1]
    c = pooled - pooled.mean(1, keepdim=True)
    assert abs(float(cos) - float(torch.nn.functional.cosine_similarity(c[:1], c[1:]))) < 2e-3


def test_pairs_are_balanced_seeded_and_multi_label_overlaps():
    labels = [0, 0, 0, 1, 1, 2, 2, 2]
    pairs = fewshot.make_pairs(labels, False, 3, seed=1)
    assert pairs == fewshot.make_pairs(labels, False, 3, seed=1)
    targets = [t for *_, t in pairs]
    assert len(pairs) == 2 * 3 * len(labels) and sum(targets) == len(pairs) / 2
    assert all((labels[i] == labels[j]) == bool(t) and i != j for i, j, t in pairs)
    multi = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    got = {(i, j): t for i, j, t in fewshot.make_pairs(multi, True, 4, seed=0)}
    assert got.get((0, 1), 0.5) == 0.5 and got.get((0, 2), 0.0) == 0.0


def _data(rows: int, task: str = "classification", smallest: int = 5):
    labels = [0] * smallest + [1] * (rows - smallest)
    schema = SimpleNamespace(task=task, label_names=["a", "b"])
    return SimpleNamespace(splits={"train": SimpleNamespace(texts=["x"] * rows, labels=labels)}, schema=schema)


def test_auto_chooses_by_the_training_rows_and_says_why(tiny_model):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    cfg = TrainConfig(data="x.csv", method="auto")
    method, why = methods.pick(cfg, _data(64), model)
    assert method.NAME == "contrastive" and "64 training rows" in why
    method, why = methods.pick(cfg, _data(fewshot.FEW_SHOT_ROWS), model)
    assert method.NAME == "finetune" and "fine-tuning overtakes" in why
    assert methods.pick(cfg, _data(64, "regression"), model)[0].NAME == "finetune"
    assert methods.pick(TrainConfig(data="x.csv", method="finetune"), _data(64), model)[0].NAME == "finetune"
    assert methods.pick(TrainConfig(data="x.csv", method="auto", lora=4), _data(64), model)[0].NAME == "finetune"


def test_same_seed_same_contrastive_model(tiny_model, files, contrastive):
    from safetensors.torch import load_file

    cfg = TrainConfig(
        train=str(files["train"]),
        validation=str(files["validation"]),
        model=tiny_model,
        output=str(files["dir"] / "again"),
        method="auto",
        learning_rate=1e-3,
        **FAST,
    )
    again = train(cfg)
    a = load_file(Path(contrastive["folder"]) / "model.safetensors")
    b = load_file(Path(again["folder"]) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_multi_label_contrastive(tiny_model, tmp_path):
    rows = [(t, json.dumps(["pos" if y == "positive" else "neg"] + (["long"] if len(t) > 30 else [])))
            for t, y in make_rows(40, seed=2, chinese=False)]
    data = write_csv(tmp_path / "ml.csv", rows)
    cfg = TrainConfig(data=str(data), model=tiny_model, output=str(tmp_path / "run"), method="contrastive", **FAST)
    result = train(cfg)
    manifest = json.loads((Path(result["folder"]) / "textfit.json").read_text())
    assert manifest["task"] == "multi-label" and manifest["method"]["name"] == "contrastive"
    out = Classifier.load(result["folder"], precision="fp32").predict(["good film", "awful plot"])
    assert all(isinstance(p.labels, tuple) for p in out)


def test_zero_shot_run_scores_by_similarity_to_the_descriptions(tiny_model, files, tmp_path):
    from transformers import AutoModel, AutoTokenizer, pipeline

    out = tmp_path / "zero"
    r = run_cli(
        "train", "--zero-shot", "--model", tiny_model, "--output", str(out), "--precision", "fp32",
        "--label-description", "positive=good great wonderful", "--label-description", "negative=bad awful boring",
    )
    assert r.returncode == 0, r.stderr
    assert "method zero-shot" in r.stdout + r.stderr
    manifest = json.loads((out / "textfit.json").read_text())
    assert manifest["label_names"] == ["positive", "negative"]
    assert manifest["method"]["descriptions"]["negative"] == "bad awful boring"
    texts = ["the film was great", "the plot was awful"]
    clf = Classifier.load(out, precision="fp32")
    logits = clf.predict_logits(texts)
    # the same numbers from the encoder itself: SCALE times the cosine of centred mean-pooled embeddings
    body, tok = AutoModel.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model)

    def vectors(xs):
        with torch.no_grad():
            v = fewshot._mean_pool(body, tok(xs, padding=True, return_tensors="pt"))
        v = v - v.mean(1, keepdim=True)
        return torch.nn.functional.normalize(v, dim=1)

    want = zeroshot.SCALE * vectors(texts) @ vectors(["good great wonderful", "bad awful boring"]).T
    assert np.allclose(logits, want.numpy(), atol=0.1)
    pipe = pipeline("text-classification", model=str(out), device="cpu")
    assert [p["label"] for p in pipe(texts)] == [p.label for p in clf.predict(texts)]
    # eval on a labelled file
    r = run_cli("eval", str(out), "--data", str(files["validation"]))
    assert r.returncode == 0, r.stderr


def test_zero_shot_with_a_labelled_file_measures_and_calibrates(tiny_model, files, tmp_path):
    labelled = write_csv(tmp_path / "labelled.csv", make_rows(80, seed=8, chinese=False))  # 50 rows fit a temperature
    cfg = TrainConfig(
        zero_shot=True,
        data=str(labelled),
        label_description=["negative=bad awful boring", "positive=good great wonderful"],
        model=tiny_model,
        output=str(tmp_path / "z"),
        precision="fp32",
    )
    result = train(cfg)
    assert result["steps"] == 0 and "validation" in result["metrics"]
    assert result["temperature"] is not None  # the scale fitted to the labels


@pytest.mark.parametrize(
    "args, match",
    [
        (["--method", "contrastive", "--train", "{one}"], "label positive has 1 training row(s)"),
        (["--method", "contrastive", "--train", "{reg}"], "--method contrastive: pairs need classes"),
        (["--zero-shot", "--data", "{train}"], "--zero-shot: needs a description of every label"),
        (["--zero-shot", "--data", "{train}", "--label-description", "negative=bad", "--label-description",
          "happy=good"], "label 'positive' has no --label-description"),
        (["--zero-shot", "--data", "{train}", "--label-description", "negative=bad", "--label-description",
          "positive=good", "--label-description", "neutral=meh"], "label 'neutral' is not in"),
        (["--data", "{train}", "--label-description", "0=bad"], "--label-description: used with --zero-shot only"),
        (["--zero-shot", "--label-description", "0 bad", "--label-description", "1=good"], "expected LABEL=DESCRIPTION"),
        (["--zero-shot", "--label-description", "0=bad"], "describe at least two labels"),
    ],
)
def test_mistakes_are_one_line_and_write_nothing(tiny_model, files, tmp_path, args, match):
    rows = make_rows(20, seed=1, chinese=False)
    one = write_csv(tmp_path / "one.csv", [r for r in rows if r[1] == "negative"] + [rows[1]])
    reg = write_csv(tmp_path / "reg.csv", [(t, f"{i / 7:.3f}") for i, (t, _) in enumerate(rows)])
    paths = {"one": one, "reg": reg, "train": files["train"]}
    out = tmp_path / "out"
    r = run_cli("train", *[a.format(**paths) for a in args], "--model", tiny_model, "--output", str(out))
    one_line_exit_2(r, match)
    assert not out.exists()


def test_self_training_learns_the_head_from_the_confident_zero_shot_labels(files, tmp_path):
    """--self-train on the packaged model: the head is refitted, twice, on the most confident half (of the smaller
    label's count) of each label's zero-shot guesses; checked against the same steps done here by hand."""
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel, AutoTokenizer

    from textfit.hub import default_model_path

    rows = make_rows(200, seed=11, chinese=False)
    texts = write_csv(tmp_path / "texts.csv", [(t,) for t, _ in rows], header=("text",))
    described = ["negative=bad awful boring", "positive=good great wonderful"]
    out = tmp_path / "self"
    cfg = TrainConfig(
        zero_shot=True, self_train=True, data=str(texts), validation=str(files["validation"]),
        label_description=described, output=str(out), precision="fp32",
    )
    result = train(cfg)
    record = json.loads((out / "textfit.json").read_text())["method"]["self_training"]
    assert record["texts"] == 200 and record["rounds"] == zeroshot.SELF_TRAIN_ROUNDS
    assert len(json.loads((out / "splits.json").read_text())["unlabeled"]) == 200
    assert result["metrics"]["validation"]["accuracy"] >= 0.8  # the packaged encoder knows these words

    body, tok = AutoModel.from_pretrained(default_model_path()).eval(), AutoTokenizer.from_pretrained(default_model_path())

    def vectors(xs):  # what the mean layer outputs: the LayerNorm of the mean-pooled vector
        with torch.no_grad():
            v = fewshot._mean_pool(body, tok(xs, padding=True, return_tensors="pt"))
        return torch.nn.functional.layer_norm(v, v.shape[-1:]).numpy()

    x = vectors([t for t, _ in rows])
    weight, bias = zeroshot.SCALE / x.shape[1] * vectors([d.split("=")[1] for d in described]), np.zeros(2)
    for _ in range(zeroshot.SELF_TRAIN_ROUNDS):
        logits = x @ weight.T + bias
        guess, margin = logits.argmax(1), np.abs(logits[:, 1] - logits[:, 0])
        k = int(zeroshot.SELF_TRAIN_KEEP * np.bincount(guess, minlength=2).min())
        kept = np.concatenate([np.flatnonzero(guess == c)[np.argsort(-margin[guess == c])[:k]] for c in (0, 1)])
        lr = LogisticRegression(max_iter=2000).fit(x[kept], guess[kept])
        weight, bias = np.stack([np.zeros(x.shape[1]), lr.coef_[0]]), np.array([0.0, lr.intercept_[0]])
    assert record["kept"] == len(kept)
    val = [t for t, _ in make_rows(48, seed=5, chinese=False)[24:]]
    want = (vectors(val) @ weight.T + bias).argmax(1)
    got = Classifier.load(out, precision="fp32").predict_logits(val).argmax(1)
    assert (want == got).mean() >= 0.95


def test_self_training_mistakes(files, tmp_path):
    few = write_csv(tmp_path / "few.csv", [(t,) for t, _ in make_rows(10, seed=2, chinese=False)], header=("text",))
    out = tmp_path / "out"
    args = ["--zero-shot", "--label-description", "negative=bad", "--label-description", "positive=good"]
    r = run_cli("train", *args, "--self-train", "--data", str(few), "--output", str(out))
    one_line_exit_2(r, "10 texts to self-train on; give at least 16 a label")
    r = run_cli("train", *args, "--self-train", "--output", str(out))
    one_line_exit_2(r, "--self-train: needs --zero-shot and --data FILE")
    assert not out.exists()


def _recorded_contrastive_batches(tiny_model, files, monkeypatch, name: str, **extra) -> tuple[list[list[int]], int]:
    batches: list[list[int]] = []
    real = fewshot.make_collate

    def recording(*args, **kwargs):
        collate = real(*args, **kwargs)

        def wrapped(rows):
            batches.append(list(rows))
            return collate(rows)

        return wrapped

    monkeypatch.setattr(fewshot, "make_collate", recording)
    cfg = TrainConfig(
        train=str(files["train"]),
        validation=str(files["validation"]),
        model=tiny_model,
        output=str(files["dir"] / name),
        method="contrastive",
        learning_rate=1e-3,
        **FAST,
        **extra,
    )
    result = train(cfg)
    pairs = json.loads((Path(result["folder"]) / "textfit.json").read_text())["method"]["pairs"]
    return batches, pairs


def test_a_larger_split_takes_steps_of_rows_each_encoded_once(tiny_model, files, monkeypatch):
    """24 rows, --batch-size 8 (more than 2 x 8): each step encodes 8 distinct rows and scores the 28 pairs among
    them; the steps go through the split pass after pass, every row in PAIRS_PER_ROW steps."""
    batches, pairs = _recorded_contrastive_batches(tiny_model, files, monkeypatch, "rows", batch_size=8)
    steps = -(-fewshot.PAIRS_PER_ROW * 24 // 8)
    assert len(batches) == steps and pairs == steps * 8 * 7 // 2
    assert all(len(b) == len(set(b)) == 8 for b in batches)
    rows = [r for b in batches for r in b]
    assert all(sorted(rows[k : k + 24]) == list(range(24)) for k in range(0, len(rows), 24))  # one pass each


def test_row_steps_score_every_pair_with_the_two_kinds_weighing_half_each():
    labels = [0, 0, 1, 1, 1, 0, 1]
    steps = list(fewshot._row_steps(labels, False, 3, 20, seed=4))
    assert len(steps) == 20
    again = list(fewshot._row_steps(labels, False, 3, 20, seed=4))
    assert all(x[0] == y[0] for x, y in zip(steps, again))  # seeded
    seen = [r for rows, *_ in steps for r in rows]
    assert all(sorted(seen[k : k + 7]) == list(range(7)) for k in range(0, 56, 7))  # passes over the split
    for rows, a, b, target, weight in steps:
        assert len(set(rows)) == 3 and len(a) == 3 and bool((a < b).all())
        for n in range(3):
            assert target[n] == float(labels[rows[a[n]]] == labels[rows[b[n]]])
        same = target > 0
        if same.any() and (~same).any():
            assert weight[same].sum().item() == pytest.approx(0.5) and weight[~same].sum().item() == pytest.approx(0.5)
        else:
            assert weight.sum().item() == pytest.approx(0.5)
    multi = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    rows, a, b, target, weight = next(fewshot._row_steps(multi, True, 3, 1, seed=0))
    got = {frozenset((rows[i], rows[j])): float(t) for i, j, t in zip(a.tolist(), b.tolist(), target)}
    assert got == {frozenset((0, 1)): 0.5, frozenset((1, 2)): 0.5, frozenset((0, 2)): 0.0}
    assert weight.tolist() == pytest.approx([0.25 if t > 0 else 0.5 for t in target])  # 2 sharing a label, 1 not


def test_a_split_of_at_most_two_batches_of_rows_takes_big_steps(tiny_model, files, monkeypatch):
    """24 rows, --batch-size 16: every step encodes all 24 rows, so it takes 8 x 16 pairs (twice the partners a
    row), a step costing its rows once."""
    batches, pairs = _recorded_contrastive_batches(tiny_model, files, monkeypatch, "whole")
    assert pairs == 24 * 2 * 2 * fewshot.PAIRS_PER_ROW
    step = 16 * fewshot.WHOLE_SPLIT_STEP
    assert len(batches) == -(-pairs // step)
    assert all(len(b) == len(set(b)) <= 24 for b in batches)
    assert sum(len(b) for b in batches) < 2 * pairs / 8  # about a tenth of the sides the pairs name


def _tiny_body(tiny_model: str, folder: Path, family: str) -> str:
    """A 2-layer random MPNet or RoBERTa sharing the tiny BERT's WordPiece vocabulary (the body is what is tested)."""
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel, RobertaConfig, RobertaModel

    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.model_input_names = ["input_ids", "attention_mask"]  # neither model reads token types
    sizes = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    torch.manual_seed(0)
    if family == "mpnet":
        MPNetModel(MPNetConfig(**sizes, max_position_embeddings=160, pad_token_id=tok.pad_token_id)).save_pretrained(folder)
    else:
        RobertaModel(RobertaConfig(**sizes, max_position_embeddings=160, pad_token_id=tok.pad_token_id)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("family", ["mpnet", "roberta"])
def test_contrastive_and_zero_shot_runs_of_mpnet_and_roberta_bodies(tiny_model, files, tmp_path, family):
    """all-mpnet-base-v2 is the base-sized body that reaches SetFit's accuracy at 8 rows a class: its runs (and
    RoBERTa's, whose head is built the same way) are ordinary models that `pipeline` reproduces."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    body = _tiny_body(tiny_model, tmp_path / family, family)
    cfg = TrainConfig(
        train=str(files["train"]), validation=str(files["validation"]), model=body, output=str(tmp_path / "run"),
        method="auto", learning_rate=1e-3, **FAST,
    )
    result = train(cfg)
    folder = Path(result["folder"])
    assert json.loads((folder / "textfit.json").read_text())["method"]["name"] == "contrastive"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == family and config["num_hidden_layers"] == 3
    # the head was fitted on what the appended layer outputs: the training rows come out as labelled (validation
    # accuracy on 24 rows of a random 2-layer body moves with the CPU's kernels: 0.67-0.75)
    rows = make_rows(48, seed=5, chinese=False)[:24]  # the `files` fixture's training rows
    fitted = Classifier.load(folder, precision="fp32").predict([t for t, _ in rows])
    assert np.mean([p.label == str(y) for p, (_, y) in zip(fitted, rows)]) >= 0.9
    texts = [t for t, _ in make_rows(12, seed=11, chinese=False)]
    ours = Classifier.load(folder, precision="fp32").predict(texts)
    theirs = pipeline("text-classification", model=str(folder), device="cpu")(texts)
    assert [p["label"] for p in theirs] == [p.label for p in ours]
    assert np.allclose([p["score"] for p in theirs], [p.score for p in ours], atol=1e-4)
    # what the appended layer's first position outputs: the LayerNorm of the token vectors' mean, weighted for MPNet
    # head by head by its relative-position bias (zero queries and keys leave only the bias and the mask)
    model = AutoModelForSequenceClassification.from_pretrained(body, num_labels=2).eval()
    tok = AutoTokenizer.from_pretrained(body)
    batch = tok(["good film", "the plot was very boring and the room poor"], padding=True, return_tensors="pt")
    with torch.no_grad():
        if family == "mpnet":  # an uneven bias, as a trained one is (all-mpnet-base-v2: -11 to +3.4)
            model.base_model.encoder.relative_attention_bias.weight.normal_(0, 1)
        hidden = model.base_model(**batch).last_hidden_state
        mask = batch["attention_mask"].float()
        heads = model.config.num_attention_heads
        if family == "mpnet":
            bias = model.base_model.encoder.compute_position_bias(hidden)[:, :, 0, :]
            weights = torch.softmax(bias + (1 - mask[:, None, :]) * -1e9, -1)
        else:
            weights = (mask / mask.sum(1, keepdim=True))[:, None, :].expand(-1, heads, -1)
        split = hidden.view(*hidden.shape[:2], heads, -1)
        mean = torch.einsum("bhn,bnhd->bhd", weights, split).reshape(hidden.shape[0], -1)
        fewshot.append_mean_layer(model)
        first = model.base_model(**batch).last_hidden_state[:, 0]
    assert torch.allclose(first, torch.nn.functional.layer_norm(mean, (mean.shape[1],)), atol=2e-3)
    # zero-shot builds on the same layer
    r = run_cli(
        "train", "--zero-shot", "--model", body, "--output", str(tmp_path / "zero"), "--precision", "fp32",
        "--label-description", "positive=good great wonderful", "--label-description", "negative=bad awful boring",
    )
    assert r.returncode == 0, r.stderr
    pipe = pipeline("text-classification", model=str(tmp_path / "zero"), device="cpu")
    zero = Classifier.load(tmp_path / "zero", precision="fp32")
    assert [p["label"] for p in pipe(texts)] == [p.label for p in zero.predict(texts)]


def test_a_fine_tuning_run_says_its_method_and_why(tiny_model, files, tmp_path):
    r = run_cli(
        "train", "--data", str(files["train"]), "--model", tiny_model, "--method", "finetune", "--epochs", "1",
        "--precision", "fp32", "--output", str(tmp_path / "run"),
    )
    assert r.returncode == 0, r.stderr
    assert "textfit: method finetune (--method finetune)" in r.stdout + r.stderr
