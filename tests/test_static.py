"""--student static (static.py): the pooling on both prediction paths, a distilled static run as an ordinary
run (eval, predict, streaming predict, the card, model2vec loading its body), its refusals, and the same
model from the same seed."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_rows, run_cli, write_csv
from textfit import TrainConfig, train
from textfit.errors import UsageError
from textfit.models.static import StaticStudent, is_static_run, load, student_config
from textfit.predict.classifier import Classifier
from textfit.run import RunManifest

pytest.importorskip("model2vec")

FAST = dict(epochs=3, batch_size=16, precision="fp32")
FLAGS = ["--epochs", "3", "--batch-size", "16"]


def one_line_exit_2(r, match: str) -> None:
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and match in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("static")
    return {
        "data": write_csv(d / "r.csv", make_rows(200, seed=3, chinese=False)),
        "unlabeled": write_csv(d / "u.csv", [(t,) for t, _ in make_rows(80, seed=9, chinese=False)], header=["text"]),
        "dir": d,
    }


@pytest.fixture(scope="module")
def teacher(tiny_model, files) -> str:
    cfg = TrainConfig(
        data=str(files["data"]),
        model=tiny_model,
        output=str(files["dir"] / "teacher"),
        learning_rate=1e-2,
        freeze_word_embeddings=False,
        layer_lr_decay=1.0,
        **{**FAST, "epochs": 4, "batch_size": 8},
    )
    return train(cfg)["folder"]


@pytest.fixture(scope="module")
def student(teacher, files) -> Path:
    out = files["dir"] / "student"
    r = run_cli(
        "distill", teacher, "--student", "static", "--data", str(files["data"]), "--unlabeled", str(files["unlabeled"]),
        "--output", str(out), *FLAGS,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize(
    "buckets,conv", [(0, 0), (97, 0), (97, 5), (0, 5)], ids=["mean-max", "with-bigrams", "with-windows", "windows-only"]
)
def test_mean_and_max_pooling_skip_special_tokens_and_both_paths_agree(buckets, conv):
    """The features are the mean and maximum of a text's token vectors (special tokens have none), with
    bigrams the mean of the vectors of its neighbouring pairs, hashed, and with windows the maximum over its
    tokens of ReLU(W [left; token; right] + b) (zeros beyond its edges); the padded and the fast path agree."""
    from textfit.models.static import _HASH

    torch.manual_seed(0)
    vectors = torch.randn(10, 4)
    keep = torch.ones(10, dtype=torch.bool)
    keep[[0, 1]] = False  # [PAD] and [CLS]: no vectors of their own
    config = student_config(["a", "b"], "classification", 8, 4, bigrams=buckets, bigram_dim=3, conv=conv)
    m = StaticStudent(vectors, keep, config, hidden=8).eval()
    assert (m.bigrams is None) == (buckets == 0) and (m.conv is None) == (conv == 0)
    texts = [[1, 3, 4, 5], [1, 6], [1], [1, 7, 7, 7, 2], [1, 9, 8]]  # the third: special tokens only
    width = max(map(len, texts))
    ids = torch.tensor([t + [0] * (width - len(t)) for t in texts])
    mask = torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t in texts])
    with torch.no_grad():
        padded = m(input_ids=ids, attention_mask=mask).logits
        fast = m.predict_ids(texts)
        for i, t in enumerate(texts):
            kept = [x for x in t if keep[x]]
            rows = vectors[kept]
            feats = [rows.mean(0), rows.max(0).values] if len(rows) else [torch.zeros(4), torch.zeros(4)]
            if buckets:
                pairs = [(a * _HASH + b) % buckets for a, b in zip(kept, kept[1:])]
                feats.append(m.bigrams.weight[pairs].mean(0) if pairs else torch.zeros(3))
            if conv:
                padded_rows = torch.cat([torch.zeros(1, 4), rows, torch.zeros(1, 4)])
                windows = [padded_rows[j : j + 3].reshape(-1) for j in range(len(rows))]
                h = [torch.relu(m.conv.weight @ w + m.conv.bias) for w in windows]
                feats.append(torch.stack(h).max(0).values if h else torch.zeros(conv))
            assert torch.allclose(padded[i], m.head(torch.cat(feats)), atol=1e-6)
    assert torch.allclose(padded, fast, atol=1e-6)
    if conv:  # prediction's window table follows the weights when they change
        with torch.no_grad():
            m.conv.weight.mul_(-2.0)
            m.embeddings.weight[3:6] += 1.0
            assert torch.allclose(m.predict_ids(texts), m(input_ids=ids, attention_mask=mask).logits, atol=1e-6)
            assert not torch.allclose(m.predict_ids(texts), fast, atol=1e-3)


def test_a_distilled_static_student_is_an_ordinary_run(student, teacher, files):
    from model2vec import StaticModel

    m = RunManifest.read(student)
    assert is_static_run(student) and m.static and m.static["pooling"] == "mean+max+bigrams+windows"
    assert m.static["texts_per_second"] > 0 and m.static["vectors_from"] == str(teacher)
    assert m.distillation["teacher"] == teacher and m.distillation["unlabeled_rows"] == 80
    assert 0.5 <= m.distillation["agreement_validation"] <= 1.0
    assert m.metrics["validation"]["accuracy"] > 0.75  # one sentiment word sets the label
    # the body is model2vec's: StaticModel loads it, with the trained vectors (not the distilled ones)
    body = StaticModel.from_pretrained(str(student / "static"))
    model, tok = load(student)
    word = "good" if "good" in tok.get_vocab() else next(iter(tok.get_vocab()))
    hf_id, body_id = tok.get_vocab()[word], body.tokenizer.get_vocab()[word]
    assert np.allclose(np.asarray(body.embedding[body_id], dtype=np.float32), model.embeddings.weight[hf_id].detach())
    card = (student / "README.md").read_text(encoding="utf-8")
    assert (
        "## Static student" in card
        and "(256 channels)" in card
        and "StaticModel.from_pretrained" in card
        and "pipeline(" not in card
    )
    # eval and predict through the one prediction path; the padded path and the fast one agree
    clf = Classifier.load(student, backend="auto")
    assert clf.backend_name == "torch" and "static student" in clf.backend_choice
    texts = [t for t, _ in make_rows(40, seed=11, chinese=False)] + [""]
    fast = clf.predict_logits(texts)
    enc = clf.tokenizer(texts, padding=True, truncation=True, max_length=m.max_length, return_tensors="pt")
    with torch.no_grad():
        padded = clf.backend.model(**enc).logits.numpy()
    assert np.allclose(fast, padded, atol=1e-5)
    r = run_cli("eval", str(student), "--data", str(files["data"]))
    assert r.returncode == 0 and "accuracy" in r.stdout, r.stderr
    texts = texts[:-1]  # a file's empty text is refused (tested elsewhere)
    inp = write_csv(files["dir"] / "in.csv", [(i, t) for i, t in enumerate(texts)], header=["id", "text"])
    out = files["dir"] / "out.csv"
    r = run_cli("predict", str(student), "--input", str(inp), "--output", str(out), "--chunk-rows", "16")
    assert r.returncode == 0, r.stderr
    import pandas as pd

    got = pd.read_csv(out, keep_default_na=False)
    assert list(got["id"]) == list(range(len(texts)))
    assert list(got["label"]) == [p.label for p in clf.predict(texts)]


def test_export_and_pipeline_are_refused_in_one_line(student):
    one_line_exit_2(run_cli("export", str(student), "--format", "onnx"), "static student: ONNX export is not offered")


def test_explanations_are_refused_in_one_line_and_by_the_server(student):
    """Integrated gradients need a word-embedding layer the forward pass goes through: a static student has
    none, so `--explain` is one line (exit 2, nothing predicted) and the server answers 400, not 500."""
    from fastapi.testclient import TestClient

    from textfit.serve.app import Limits, create_app

    r = run_cli("predict", str(student), "a good film", "--explain")
    one_line_exit_2(r, "a static student has no word explanations")
    assert r.stdout == ""
    with TestClient(create_app(Classifier.load(student), Limits(), str(student))) as c:
        assert c.get("/info").json()["explain"] is False
        got = c.post("/explain", json={"text": "a good film"})
        assert got.status_code == 400 and "no word explanations" in got.json()["error"], got.text
        assert c.post("/predict", json={"inputs": "a good film"}).status_code == 200


def test_the_options_a_static_student_cannot_take_are_one_line(teacher, files, tmp_path):
    pairs = write_csv(tmp_path / "p.csv", [(t, t, y) for t, y in make_rows(40, chinese=False)], ["a", "b", "label"])
    reg = write_csv(tmp_path / "g.csv", [(t, i / 10) for i, (t, _) in enumerate(make_rows(40, chinese=False))])
    cases = [
        (["train", "--model", "static", "--data", str(pairs), "--text-column", "a", "--text-pair-column", "b"],
         "classifies single texts"),
        (["train", "--model", "static", "--data", str(reg), "--task", "regression"], "regression is not offered"),
        (["distill", teacher, "--student", "static", "--data", str(files["data"]), "--layers", "2"], "drop --layers"),
    ]  # fmt: skip
    for args, match in cases:
        out = tmp_path / "never"
        one_line_exit_2(run_cli(*args, "--output", str(out)), match)
        assert not out.exists()


def test_without_model2vec_one_line_names_the_extra(monkeypatch, files, tmp_path):
    from textfit.train.methods import static

    real = builtins.__import__

    def no_model2vec(name, *args, **kwargs):
        if name.startswith("model2vec"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_model2vec)
    with pytest.raises(UsageError, match=r"pip install 'textfit\[static\]'"):
        static._require_model2vec()


def test_the_same_seed_gives_the_same_static_student(teacher, files, tmp_path):
    heads = []
    for name in ("a", "b"):
        out = train(
            TrainConfig(data=str(files["data"]), teacher=teacher, model="static", output=str(tmp_path / name), **FAST)
        )["folder"]
        from safetensors.torch import load_file

        heads.append(load_file(str(Path(out) / "head.safetensors")))
        assert json.loads((Path(out) / "textfit.json").read_text())["static"]["dim"] > 0
    assert heads[0].keys() == heads[1].keys()
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
