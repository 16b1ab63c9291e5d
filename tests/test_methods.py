"""Methods as plug-ins (train/methods): a method added from outside textfit, from this file alone, trains,
saves, loads and predicts through the CLI; and the registry's choice of method from the flags.

This module is itself the toy method: a majority-class baseline (NAME, LOOP and fit are all it defines)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import write_csv
from textfit import TrainConfig, UsageError
from textfit.cli import main
from textfit.train import methods

NAME = "majority"
LOOP = False  # fitted here, in closed form: the shared loop only evaluates


def fit(s) -> None:
    """Every text gets the most frequent training label: the classifier's weights zero, its bias one-hot."""
    names = s.data.schema.label_names
    k = int(np.bincount(np.asarray(s.data.splits["train"].labels), minlength=len(names)).argmax())
    with torch.no_grad():
        s.model.classifier.weight.zero_()
        s.model.classifier.bias.zero_()
        s.model.classifier.bias[k] = 10.0
    s.manifest.method = {"name": NAME, "label": names[k]}


def card(manifest, config) -> dict:
    return {"section": f"\n## Majority class\n\nEvery text is labelled `{manifest.method['label']}`.\n"}


@pytest.fixture()
def registered():
    methods.register(NAME, __name__)
    yield
    methods.METHODS.pop(NAME, None)


def test_a_method_from_outside_trains_saves_loads_and_predicts(registered, tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "0")  # --quiet sets it in this process: put back after the test
    rows = [(f"good film number {i}", "positive") for i in range(28)] + [(f"bad film {i}", "negative") for i in range(12)]
    data = write_csv(tmp_path / "r.csv", rows)
    val = write_csv(tmp_path / "v.csv", rows[:6] + rows[-4:])  # 6 positive, 4 negative
    out = tmp_path / "run"
    args = ["train", "--train", str(data), "--validation", str(val), "--model", tiny_model, "--method", NAME]
    assert main([*args, "--output", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err + capsys.readouterr().out
    manifest = json.loads((out / "textfit.json").read_text())
    assert manifest["method"] == {"name": NAME, "label": "positive"}
    assert manifest["metrics"]["validation"]["accuracy"] == pytest.approx(0.6)  # the majority's share, 6 of 10
    assert "Every text is labelled `positive`" in (out / "README.md").read_text()
    capsys.readouterr()
    assert main(["predict", str(out), "--json", "a bad film", "a good film"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [a["label"] for a in answers] == ["positive", "positive"], err


def test_the_flags_that_named_a_method_resolve_to_one(registered):
    def asked(**kw) -> str:
        return methods.requested(TrainConfig(data="x.csv", **kw))

    assert asked() == "auto"
    assert asked(zero_shot=True, label_description=["a=x", "b=y"]) == "zero-shot"
    assert asked(method="zero-shot", label_description=["a=x", "b=y"]) == "zero-shot"
    assert asked(model="static") == "static"
    assert asked(teacher="runs/t") == "distill"
    assert asked(teacher="runs/t", model="static") == "static"
    assert asked(method=NAME) == NAME
    with pytest.raises(UsageError, match="--zero-shot trains by the zero-shot method, not --method finetune"):
        asked(zero_shot=True, method="finetune")
    with pytest.raises(UsageError, match="--method distill: needs a teacher"):
        asked(method="distill")
    with pytest.raises(UsageError, match="--method nope: not one of auto, finetune"):
        methods.get("nope")


def test_every_method_module_names_itself_and_answers_only_known_questions():
    known = {"NAME", "LOOP", "LAYERS", "FP32", "BATCH_SIZE", "EPOCHS", "LEARNING_RATE", "DEFAULTS_FOR"}
    known |= {"check", "refuse_elsewhere", "read_data", "build", "check_model", "teacher", "fit", "record", "card"}
    for name in list(methods.METHODS):
        module = methods.get(name)
        assert module.NAME == name
        spine = {k for k in known if hasattr(module, k)}
        assert "NAME" in spine and (methods.hook(module, "LOOP") or "fit" in spine), name
