"""A run opened once: `textfit predict` reads textfit.json once and loads the weights once (with --explain
too), and the saved runs of textfit 0.1.0 (tests/fixtures/runs-0.1.0) load, predict and serve."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, make_rows, write_csv
from textfit.run import MANIFEST, Run, RunManifest

FIXTURES = ROOT / "tests" / "fixtures" / "runs-0.1.0"
KINDS = ["finetune", "contrastive", "zero-shot", "distill", "static"]


@pytest.fixture(scope="module")
def small_run(tiny_model, tmp_path_factory) -> str:
    from textfit import TrainConfig, train

    d = tmp_path_factory.mktemp("once")
    cfg = TrainConfig(
        data=str(write_csv(d / "r.csv", make_rows(40))),
        model=tiny_model,
        output=str(d / "run"),
        method="finetune",
        epochs=1,
        batch_size=8,
        precision="fp32",
    )
    return str(train(cfg)["folder"])


@pytest.fixture
def counts(monkeypatch) -> dict[str, int]:
    """How often the manifest is read (RunManifest.read, and the file itself) and the weights are loaded."""
    from transformers import AutoModelForSequenceClassification

    from textfit.models import static, transformer

    n = {"read": 0, "file": 0, "load": 0, "weights": 0}
    read = RunManifest.read.__func__  # type: ignore[attr-defined]
    read_text = Path.read_text
    load_from_run, from_pretrained, load_static = (
        transformer.load_from_run,
        AutoModelForSequenceClassification.from_pretrained,
        static.load,
    )

    def counted(key, f):
        def wrapper(*a, **k):
            n[key] += 1
            return f(*a, **k)

        return wrapper

    def counted_text(self, *a, **k):
        n["file"] += self.name == MANIFEST
        return read_text(self, *a, **k)

    monkeypatch.setattr(RunManifest, "read", classmethod(counted("read", read)))
    monkeypatch.setattr(Path, "read_text", counted_text)
    monkeypatch.setattr(transformer, "load_from_run", counted("load", load_from_run))
    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", counted("weights", from_pretrained))
    monkeypatch.setattr(static, "load", counted("weights", load_static))
    return n


@pytest.mark.parametrize("explain", [False, True])
def test_predict_reads_the_manifest_once_and_loads_the_weights_once(small_run, counts, capsys, explain):
    from textfit.cli import main

    args = ["predict", small_run, *(["--explain"] if explain else []), "the film was good and lovely"]
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.split("\t")[0] in ("negative", "positive")
    assert ("words that pushed towards" in out) == explain
    assert counts == {"read": 1, "file": 1, "load": 1, "weights": 1}


def test_a_folder_that_is_not_a_run_is_refused_before_any_model_loads(tmp_path, counts, capsys):
    from textfit.cli import main

    assert main(["predict", str(tmp_path), "a text"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a textfit run" in err
    assert counts["load"] == counts["weights"] == 0


def test_a_static_run_is_refused_explanations_before_it_loads(counts, capsys):
    from textfit.cli import main

    assert main(["predict", str(FIXTURES / "static"), "--explain", "a text"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no word explanations" in err
    assert counts["read"] == 1 and counts["weights"] == 0


def test_the_explainer_shares_the_classifiers_model(small_run):
    from textfit.predict.classifier import Classifier
    from textfit.predict.explain import Explainer

    clf = Classifier.load(small_run, precision="fp32", backend="torch")
    ex = Explainer.from_classifier(clf)
    assert ex.model is clf.backend.model and ex.tokenizer is clf.tokenizer
    e = ex.explain("the film was good")
    assert e.label in clf.labels and {w["word"] for w in e.words} == {"the", "film", "was", "good"}


@pytest.mark.parametrize("kind", KINDS)
def test_runs_of_textfit_0_1_0_load_predict_and_serve(kind):
    from fastapi.testclient import TestClient

    from textfit.predict.classifier import Classifier
    from textfit.serve.app import Limits, create_app

    folder = FIXTURES / kind
    run = Run.open(folder)
    assert run.kind == ("static" if kind == "static" else "transformer")
    clf = Classifier.load(run)
    assert clf.run is run
    texts = ["the film was good and lovely", "awful terrible room"]
    preds = clf.predict(texts)
    assert [p.label in run.label_names for p in preds] == [True, True]
    if kind == "finetune":
        assert [p.label for p in Classifier.load(str(folder)).predict(texts)] == [p.label for p in preds]
    with TestClient(create_app(clf, Limits(), run)) as c:
        got = c.post("/predict", json={"inputs": texts[0]})
        assert got.status_code == 200, got.text
        assert got.json()[0]["label"] in run.label_names


def test_a_train_command_builds_its_config_once(tmp_path, monkeypatch):
    """The checks before the command (its files and folders) and the command read one TrainConfig."""
    import importlib

    import textfit.config as config
    from textfit.cli import main

    spine = importlib.import_module("textfit.train.spine")

    calls, seen = [], []
    real = config.load_config
    monkeypatch.setattr(config, "load_config", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(spine, "train", lambda cfg: seen.append(cfg))
    data = tmp_path / "r.csv"
    data.write_text("text,label\na good film,positive\na bad film,negative\n")
    assert main(["train", "--data", str(data), "--output", str(tmp_path / "run"), "--epochs", "2"]) == 0
    assert len(calls) == 1 and len(seen) == 1 and seen[0].epochs == 2 and seen[0].data == str(data)
