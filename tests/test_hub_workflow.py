"""The Hugging Face workflow: trackers through Accelerate, the model card, the Hub push (offline)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import make_rows, run_cli, write_csv
from textfit import TrainConfig, train

FAST = dict(  # the fine-tuning loop's evaluations are tracked: pinned (--method auto would run contrastive here)
    method="finetune", epochs=2, batch_size=8, learning_rate=1e-2, precision="fp32", freeze_word_embeddings=False,
    eval_steps=4,
)


@pytest.fixture(scope="module")
def tracked(tiny_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("tracked")
    data = write_csv(d / "r.csv", make_rows(80))
    return train(
        TrainConfig(data=str(data), model=tiny_model, output=str(d / "run"), report_to="tensorboard,mlflow", **FAST)
    )


def test_tensorboard_events_hold_the_loss_and_every_evaluation(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(tracked["folder"]) / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/learning_rate", "train/samples_per_second", "eval/accuracy", "eval/loss"} <= set(tags)
    steps = [e.step for e in events.Scalars("eval/accuracy")]
    assert steps == [h["step"] for h in tracked["history"]]
    assert [round(e.value, 5) for e in events.Scalars("eval/accuracy")] == [
        round(h["eval"]["accuracy"], 5) for h in tracked["history"]
    ]


def test_mlflow_run_holds_the_metrics_and_the_config(tracked):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{Path(tracked['folder']).absolute() / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("textfit").experiment_id])
    assert run.data.params["learning_rate"] == "0.01" and run.data.params["batch_size"] == "8"
    assert run.data.params["layer_lr_decay"] == "0.8"  # left to textfit: the value the run used
    history = client.get_metric_history(run.info.run_id, "eval/accuracy")
    assert [m.step for m in history] == [h["step"] for h in tracked["history"]]
    assert run.data.metrics["final/test/accuracy"] == pytest.approx(tracked["metrics"]["test"]["accuracy"])


def test_every_run_has_a_model_card_the_hub_tools_parse(tracked):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    card = ModelCard.load(str(Path(tracked["folder"]) / "README.md"))
    meta = card.data.to_dict()
    assert (
        meta["pipeline_tag"] == "text-classification"
        and meta["library_name"] == "transformers"
        and "textfit" in meta["tags"]
    )
    name, results = model_index_to_eval_results(meta["model-index"])
    by = {(r.dataset_split, r.metric_type): r.metric_value for r in results}
    assert by[("test", "accuracy")] == pytest.approx(tracked["metrics"]["test"]["accuracy"], abs=1e-6)
    assert by[("validation", "f1")] == pytest.approx(tracked["metrics"]["validation"]["f1"], abs=1e-6)
    body = card.text
    assert 'pipeline("text-classification"' in body and "| test |" in body and "`negative`, `positive`" in body


def test_the_packaged_model_names_its_base_and_license():
    from textfit.evaluate.card import model_card
    from textfit.hub import DEFAULT_MODEL_NAME
    from textfit.run import LongText, RunManifest, Schema

    m = RunManifest(
        Schema("classification", "text", None, "label", ["a", "b"], ["a", "b"]),
        128,
        LongText(),
        base_model=DEFAULT_MODEL_NAME,
    )
    meta = model_card(
        m, {"test": {"n": 4, "accuracy": 0.75}}, {"train": 10}, {"learning_rate": 1e-4}, "glue mrpc"
    ).data.to_dict()
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["glue"]


def test_push_offline_fails_at_once_with_one_line(tracked, tiny_model, tmp_path):
    t = time.time()
    r = run_cli("push", tracked["folder"], "--repo-id", "someone/textfit-test")
    assert r.returncode == 2 and "cannot be reached" in r.stderr and "Traceback" not in r.stderr
    assert time.time() - t < 30
    data = write_csv(tmp_path / "r.csv", make_rows(40))
    r = run_cli(
        "train",
        "--data",
        str(data),
        "--model",
        tiny_model,
        "--output",
        str(tmp_path / "run"),
        "--push-to-hub",
        "someone/x",
    )
    assert (
        r.returncode == 2 and "--push-to-hub someone/x" in r.stderr and not (tmp_path / "run").exists()
    )  # before training
    r = run_cli("push", tracked["folder"], "--repo-id", "not a repo id!")
    assert r.returncode == 2 and "not a valid repository id" in r.stderr


def test_a_missing_tracker_package_names_the_extra(tiny_model, tmp_path, monkeypatch):
    import importlib.util

    from textfit import UsageError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    data = write_csv(tmp_path / "r.csv", make_rows(40))
    with pytest.raises(UsageError, match=r"pip install 'textfit\[tracking\]'"):
        train(TrainConfig(data=str(data), model=tiny_model, output=str(tmp_path / "run"), report_to="wandb"))
    with pytest.raises(UsageError, match="--report-to tensorbored"):
        train(TrainConfig(data=str(data), model=tiny_model, output=str(tmp_path / "run"), report_to="tensorbored"))
