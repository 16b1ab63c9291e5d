"""The full cycle on a tiny random BERT: train -> save -> load -> predict, and the loop's options."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_rows, write_csv
from textfit import Classifier, TrainConfig, UsageError, train
from textfit.train import methods

# A random tiny model must learn its word embeddings (a pretrained one keeps them by default).
# the fine-tuning loop, pinned: on these small files --method auto would run the contrastive method (test_fewshot.py)
FAST = dict(
    method="finetune", epochs=5, batch_size=8, learning_rate=1e-2, logging_steps=2, precision="fp32",
    freeze_word_embeddings=False,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "reviews.csv", make_rows(120))


@pytest.fixture(scope="module")
def run(tiny_model, data, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("runs") / "r"
    return train(TrainConfig(data=str(data), model=tiny_model, output=str(out), **FAST))


def test_run_folder_is_a_hugging_face_model_folder(run):
    folder = Path(run["folder"])
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "textfit.json",
        "metrics.json",
        "log.jsonl",
        "splits.json",
        "train_config.yaml",
    ):
        assert (folder / name).is_file(), name
    assert not list(folder.glob("*.bin"))
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    manifest = json.loads((folder / "textfit.json").read_text())
    assert manifest["label_names"] == ["negative", "positive"] and manifest["seed"] == 42
    assert set(manifest["versions"]) >= {"torch", "transformers", "accelerate"}
    log = [json.loads(x) for x in (folder / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < losses[0]  # it learns
    assert any("eval" in r for r in log)
    splits = json.loads((folder / "splits.json").read_text())
    assert len(splits["train"]) == 96 and len(splits["validation"]) == 12 and len(splits["test"]) == 12


def test_learns_the_task_and_evaluates_test_split(run):
    m = run["metrics"]
    assert set(m) == {"validation", "test"}
    assert m["test"]["accuracy"] >= 0.75, m["test"]
    assert m["test"]["n"] == 12 and set(m["test"]["per_class"]) == {"negative", "positive"}


def test_pipeline_loads_the_run_and_agrees_with_predict(run):
    from transformers import pipeline

    texts = ["the film was good and lovely", "the room was awful", "staff terrible", "great food 好"]
    pipe = pipeline("text-classification", model=run["folder"], device="cpu")
    clf = Classifier.load(run["folder"], precision="fp32")
    ours = clf.predict(texts)
    theirs = pipe(texts)
    assert [p.label for p in ours] == [t["label"] for t in theirs]
    for p, t in zip(ours, theirs):
        assert abs(p.score - t["score"]) < 1e-4
        assert abs(sum(p.scores.values()) - 1) < 1e-5


def test_predict_always_returns_records(run):
    clf = Classifier.load(run["folder"])
    one = clf.predict(["good"])
    assert len(one) == 1 and one[0].label in ("negative", "positive") and 0.5 <= one[0].score <= 1
    assert clf.predict([]) == []
    assert clf.predict("good")[0].label == one[0].label  # a bare string is one text, not characters


def test_same_seed_same_weights(tiny_model, data, tmp_path):
    a = train(
        TrainConfig(data=str(data), model=tiny_model, output=str(tmp_path / "a"), max_steps=6, **{**FAST, "epochs": 1})
    )
    b = train(
        TrainConfig(data=str(data), model=tiny_model, output=str(tmp_path / "b"), max_steps=6, **{**FAST, "epochs": 1})
    )
    wa, wb = load_file(Path(a["folder"]) / "model.safetensors"), load_file(Path(b["folder"]) / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_freeze_backbone_changes_only_the_head(tiny_model, data, tmp_path):
    from transformers import AutoModel

    r = train(
        TrainConfig(
            data=str(data), model=tiny_model, output=str(tmp_path / "f"), freeze_backbone=True, max_steps=4, **FAST
        )
    )
    before = AutoModel.from_pretrained(tiny_model).state_dict()
    after = load_file(Path(r["folder"]) / "model.safetensors")
    encoder = [k for k in before if not k.startswith("pooler")]
    assert all(torch.equal(before[k], after["bert." + k]) for k in encoder)
    assert not torch.equal(before["pooler.dense.weight"], after["bert.pooler.dense.weight"])


def test_frozen_backbone_trains_from_cached_features(tiny_model, data, tmp_path):
    """Later epochs run only the head on cached vectors: a small fraction of the first epoch."""
    from transformers import AutoModel

    r = train(
        TrainConfig(
            data=str(data), model=tiny_model, output=str(tmp_path / "c"), freeze_backbone=True, **{**FAST, "epochs": 4}
        )
    )
    log = [json.loads(x) for x in (Path(r["folder"]) / "log.jsonl").read_text().splitlines()]
    features = next(x["features_seconds"] for x in log if "features_seconds" in x)
    epochs = [x["seconds"] for x in log if "epoch_end" in x]
    assert len(epochs) == 4 and features > 0
    after = load_file(Path(r["folder"]) / "model.safetensors")
    before = AutoModel.from_pretrained(tiny_model).state_dict()
    assert torch.equal(before["encoder.layer.1.output.dense.weight"], after["bert.encoder.layer.1.output.dense.weight"])
    assert not torch.equal(before["pooler.dense.weight"], after["bert.pooler.dense.weight"])
    # The saved model, run as a whole, gives the metrics the cached head reported.
    clf = Classifier.load(r["folder"], precision="fp32")
    from textfit.data import load_data

    splits = load_data(TrainConfig(data=str(data))).splits
    probs = clf.predict_proba(splits["test"].texts)
    acc = float((probs.argmax(-1) == splits["test"].labels).mean())
    assert acc == pytest.approx(r["metrics"]["test"]["accuracy"])


def test_word_embeddings_frozen_by_default(tiny_model, data, tmp_path):
    from transformers import AutoModel

    r = train(
        TrainConfig(
            data=str(data),
            model=tiny_model,
            output=str(tmp_path / "w"),
            max_steps=3,
            **{**FAST, "freeze_word_embeddings": True},
        )
    )
    before = AutoModel.from_pretrained(tiny_model).state_dict()
    after = load_file(Path(r["folder"]) / "model.safetensors")
    assert torch.equal(before["embeddings.word_embeddings.weight"], after["bert.embeddings.word_embeddings.weight"])
    assert not torch.equal(
        before["encoder.layer.0.output.dense.weight"], after["bert.encoder.layer.0.output.dense.weight"]
    )


def test_freeze_layers_keeps_the_embeddings_and_lowest_layers_and_takes_their_backward_away(tiny_model, data, tmp_path):
    from transformers import AutoModel

    r = train(TrainConfig(data=str(data), model=tiny_model, output=str(tmp_path / "f"), max_steps=3, freeze_layers=1, **FAST))
    before = AutoModel.from_pretrained(tiny_model).state_dict()
    after = load_file(Path(r["folder"]) / "model.safetensors")
    for name in ("embeddings.position_embeddings.weight", "embeddings.LayerNorm.weight", "embeddings.word_embeddings.weight",
                 "encoder.layer.0.attention.self.query.weight", "encoder.layer.0.output.dense.weight"):
        assert torch.equal(before[name], after["bert." + name]), name
    assert not torch.equal(before["encoder.layer.1.output.dense.weight"], after["bert.encoder.layer.1.output.dense.weight"])
    assert "freeze_layers: 1" in (Path(r["folder"]) / "README.md").read_text()  # the card's recipe
    for wrong, message in ((2, "the model has 2 encoder layers"), (-1, "expected 0 or more")):
        with pytest.raises(UsageError, match=f"--freeze-layers {wrong}: .*{message}"):
            train(TrainConfig(data=str(data), model=tiny_model, output=str(tmp_path / "x"), freeze_layers=wrong, **FAST))
    with pytest.raises(UsageError, match="none with --lora or --freeze-backbone"):
        train(TrainConfig(data=str(data), model=tiny_model, output=str(tmp_path / "x"), freeze_layers=1, lora=4, **FAST))
    from textfit.models import static

    with pytest.raises(UsageError, match="--student static has no transformer layers: drop --freeze-layers"):
        train(TrainConfig(data=str(data), model=static.NAME, output=str(tmp_path / "x"), freeze_layers=1,
                          **{**FAST, "method": "auto"}))
    assert not (tmp_path / "x").exists()


def test_the_default_freezes_a_third_of_a_small_models_layers_and_skips_their_gradients(monkeypatch):
    from transformers import BertConfig, BertForSequenceClassification

    from textfit.train import optim

    def model(layers: int) -> BertForSequenceClassification:
        shape = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=100)
        return BertForSequenceClassification(BertConfig(num_hidden_layers=layers, **shape))

    lines: list[str] = []
    m = model(6)
    assert optim.freeze_layers(TrainConfig(), m, methods.get("finetune"), lines.append) == 2
    assert lines == ["textfit: the embeddings and the lowest 2 of 6 encoder layers kept fixed (--freeze-layers)"]
    m.train()
    m(input_ids=torch.randint(0, 100, (2, 7)), labels=torch.tensor([0, 1])).loss.backward()
    grads = {n: p.grad is not None for n, p in m.named_parameters()}
    assert not any(v for n, v in grads.items() if ".layer.0." in n or ".layer.1." in n or "embeddings" in n)
    assert all(v for n, v in grads.items() if ".layer.2." in n or "classifier" in n)
    # the loop's method only, and none where the model is not small
    assert optim.freeze_layers(TrainConfig(), model(6), methods.get("contrastive"), lines.append) == 0
    assert optim.freeze_layers(TrainConfig(freeze_layers=3), model(6), methods.get("contrastive"), lines.append) == 0
    assert lines[-1] == "textfit: --freeze-layers applies to fine-tuning; the contrastive method leaves it aside"
    assert optim.freeze_layers(TrainConfig(freeze_layers=0), model(6), methods.get("finetune"), lines.append) == 0
    assert optim.freeze_layers(TrainConfig(), model(3), methods.get("finetune"), lines.append) == 1
    monkeypatch.setattr(optim, "SMALL_MODEL_PARAMS", 1000)
    big = model(6)
    assert optim.freeze_layers(TrainConfig(), big, methods.get("finetune"), lines.append) == 0
    assert all(p.requires_grad for p in big.parameters())


def test_early_stopping_and_best_checkpoint(tiny_model, data, tmp_path):
    r = train(
        TrainConfig(
            data=str(data),
            model=tiny_model,
            output=str(tmp_path / "e"),
            eval_steps=2,
            early_stopping_patience=1,
            metric_for_best_model="loss",
            **{**FAST, "epochs": 20, "learning_rate": 5e-2},
        )
    )
    evals = [h for h in r["history"]]
    assert r["steps"] < 20 * 12  # stopped early
    best = min(e["eval"]["loss"] for e in evals)
    assert abs(r["metrics"]["validation"]["loss"] - best) < 1e-6  # the best weights were restored


def test_unknown_metric_is_an_error_at_start(tiny_model, data, tmp_path):
    with pytest.raises(
        UsageError,
        match=r"--metric-for-best-model f2: evaluation does not produce it for a classification task; choose one of loss, accuracy",
    ):
        train(TrainConfig(data=str(data), model=tiny_model, output=str(tmp_path / "m"), metric_for_best_model="f2"))
    assert not (tmp_path / "m").exists()


def test_max_length_beyond_model_limit(tiny_model, data, tmp_path):
    with pytest.raises(UsageError, match=r"--max-length 512: the model accepts at most 128 tokens"):
        train(TrainConfig(data=str(data), model=tiny_model, output=str(tmp_path / "x"), max_length=512))
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_pairs_and_integer_labels(tiny_model, tmp_path):
    rows = [(t, t.split()[0] + " same", int(y == "positive")) for t, y in make_rows(60)]
    f = write_csv(tmp_path / "p.tsv", rows, header=["sentence1", "sentence2", "label"], delimiter="\t")
    r = train(TrainConfig(data=str(f), model=tiny_model, output=str(tmp_path / "p"), max_steps=3, **FAST))
    clf = Classifier.load(r["folder"])
    assert clf.pairs and clf.labels == ["0", "1"]
    preds = clf.predict(["good film"], ["film same"])
    assert preds[0].label in ("0", "1")
    with pytest.raises(UsageError, match="sentence pairs"):
        clf.predict(["good film"])


def test_offline_hub_model_fails_fast(data, tmp_path):
    import time

    t = time.time()
    with pytest.raises(
        UsageError, match=r"--model no-such-org/no-such-model: not a local folder .* pass a local model folder"
    ):
        train(TrainConfig(data=str(data), model="no-such-org/no-such-model", output=str(tmp_path / "o")))
    assert time.time() - t < 10


def test_report_files_show_what_they_claim(run):
    import csv

    folder = Path(run["folder"])
    for name in ("confusion_matrix.png", "training_curves.png"):
        data = (folder / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    rows = list(csv.reader(open(folder / "confusion_matrix.csv", encoding="utf-8")))
    assert rows[0] == ["true \\ predicted", "negative", "positive"]
    cm = [[int(x) for x in r[1:]] for r in rows[1:]]
    test = run["metrics"]["test"]
    assert sum(map(sum, cm)) == test["n"] and (cm[0][0] + cm[1][1]) / test["n"] == pytest.approx(test["accuracy"])
    mistakes = list(csv.DictReader(open(folder / "misclassified.csv", encoding="utf-8")))
    assert len(mistakes) == cm[0][1] + cm[1][0]
    probs = [float(m["probability"]) for m in mistakes]
    assert probs == sorted(probs, reverse=True)
    html = (folder / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "negative" in html and "macro average" in html
    report = json.loads((folder / "data_report.json").read_text())
    assert report["splits"]["train"]["rows"] == 96


def test_attention_dropout_default_zero_and_model_value(tiny_model, data, tmp_path):
    r = train(TrainConfig(data=str(data), model=tiny_model, output=str(tmp_path / "a"), max_steps=2, **FAST))
    assert json.loads((Path(r["folder"]) / "config.json").read_text())["attention_probs_dropout_prob"] == 0.0
    r = train(
        TrainConfig(
            data=str(data), model=tiny_model, output=str(tmp_path / "m"), max_steps=2, attention_dropout="model", **FAST
        )
    )
    assert (
        json.loads((Path(r["folder"]) / "config.json").read_text())["attention_probs_dropout_prob"] == 0.1
    )  # BertConfig's default
    with pytest.raises(UsageError, match="--attention-dropout 1.5: expected a probability"):
        train(
            TrainConfig(data=str(data), model=tiny_model, output=str(tmp_path / "x"), attention_dropout="1.5", **FAST)
        )


def test_bf16_cpu_prediction_agrees_with_fp32(run):
    """The CPU bf16 path: bf16 weights, oneDNN linear layers with the GELU and the residual
    fused, no mask on unpadded batches; same labels as fp32 and close probabilities."""
    from textfit.accel import bf16_supported, tune_allocator
    from textfit.accel.inference import OneDNNLinear, OneDNNResidualOutput

    if not bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU has no bf16 support")
    fp32 = Classifier.load(run["folder"], precision="fp32")
    bf16 = Classifier.load(run["folder"], precision="bf16")
    assert tune_allocator()
    layer = bf16.backend.model.bert.encoder.layer[0]
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        assert isinstance(layer.intermediate.dense, OneDNNLinear) and layer.intermediate.dense.activation == "gelu"
        assert isinstance(layer.intermediate.intermediate_act_fn, torch.nn.Identity)
        assert isinstance(layer.output, OneDNNResidualOutput) and isinstance(
            layer.attention.output, OneDNNResidualOutput
        )
    assert layer.attention.self.query.weight.dtype == torch.bfloat16
    assert bf16.backend.model.classifier.weight.dtype == torch.float32  # logits are not rounded to bf16
    texts = [t for t, _ in make_rows(40, seed=3)]
    same = ["the room was awful", "the room was good"]  # equal lengths: a batch without padding
    for batch in (texts, same, texts[:1]):
        a, b = fp32.predict_proba(batch), bf16.predict_proba(batch)
        assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.95
        assert abs(a - b).max() < 0.05


def test_prediction_batches_by_length_and_token_budget(run):
    """Longest first, at most batch_size texts and max_tokens padded tokens (never fewer than one
    text); the numpy padding matches the tokenizer's, on either side."""
    import numpy as np

    from textfit.data import length_sorted_batches, pad

    lengths = np.array([5, 300, 40, 40, 7, 600])
    batches = length_sorted_batches(lengths, batch_size=3, max_tokens=100)
    assert [b.tolist() for b in batches] == [[5], [1], [2, 3], [4, 0]]
    assert [b.tolist() for b in length_sorted_batches(lengths, batch_size=4)] == [[5, 1, 2, 3], [4, 0]]
    clf = Classifier.load(run["folder"], precision="fp32")
    texts = ["short", "a much longer text about the hotel room and the staff", "mid length text"]
    enc = clf.tokenizer(texts, padding=False)
    enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    for side in ("right", "left"):
        clf.tokenizer.padding_side = side
        ours = pad(clf.tokenizer, enc, np.array([1, 0, 2]))
        theirs = clf.tokenizer.pad(
            {k: [v[i] for i in (1, 0, 2)] for k, v in enc.items()}, padding=True, return_tensors="pt"
        )
        assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_clip_inside_fused_adamw_step_matches_clip_grad_norm():
    """The CPU loop clips through fused AdamW's grad_scale: same update as clip_grad_norm_ then
    step, whether the norm is over the limit or under it, and the same norm returned."""
    from textfit.train.loop import clip_in_optimizer_step

    torch.manual_seed(0)
    for grad_size in (50.0, 0.01):  # clipped, not clipped
        a = [torch.nn.Parameter(torch.randn(300)) for _ in range(4)]
        b = [torch.nn.Parameter(p.detach().clone()) for p in a]
        opt_a = torch.optim.AdamW(a, lr=1e-2, weight_decay=0.01, fused=True)
        opt_b = torch.optim.AdamW(b, lr=1e-2, weight_decay=0.01, fused=True)
        for _ in range(3):
            grads = [torch.randn(300) * grad_size for _ in a]
            for p, q, g in zip(a, b, grads):
                p.grad, q.grad = g.clone(), g.clone()
            norm_a = torch.nn.utils.clip_grad_norm_(a, 1.0)
            opt_a.step()
            norm_b = clip_in_optimizer_step(opt_b, b, 1.0)
            opt_b.step()
            del opt_b.grad_scale
            assert torch.allclose(norm_a, norm_b)
            assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(a, b))


def test_cpu_training_attention_masks_padding(tiny_model):
    """The "textfit_cpu" attention (CPU training) sees the padding mask: a text padded in a batch
    gets the logits it gets alone, and the same logits as SDPA (transformers v5 gives an attention
    function no mask unless a mask function is registered under the same name)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from textfit.accel.training import register as register_attention

    tok = AutoTokenizer.from_pretrained(tiny_model)
    ours = AutoModelForSequenceClassification.from_pretrained(
        tiny_model, num_labels=2, attn_implementation=register_attention()
    ).eval()
    sdpa = AutoModelForSequenceClassification.from_pretrained(
        tiny_model, num_labels=2, attn_implementation="sdpa"
    ).eval()
    sdpa.load_state_dict(ours.state_dict())
    texts = ["a short one", "a much longer sentence with many more words in it than the first"]
    batch = tok(texts, padding=True, return_tensors="pt")
    assert not bool(batch["attention_mask"].all())
    with torch.no_grad():
        padded, reference = ours(**batch).logits, sdpa(**batch).logits
        alone = ours(**tok(texts[:1], return_tensors="pt")).logits
    torch.testing.assert_close(padded[:1], alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(padded, reference, atol=1e-5, rtol=1e-4)


def _close(a, b, path=""):
    """Every number in `a` equals the one in `b` to four decimals (nested dicts; keys of both)."""
    if isinstance(a, dict):
        for k in set(a) & set(b):
            _close(a[k], b[k], f"{path}.{k}")
        return
    if isinstance(a, (int, float)):
        assert round(float(a), 4) == round(float(b), 4), f"{path}: {a} != {b}"


@pytest.mark.parametrize(
    "extra",
    [{}, {"tune_threshold": True, "precision": "auto"}, {"ema_decay": 0.9, "load_best_model_at_end": False}],
    ids=["plain", "threshold-bf16", "weight-average"],
)
def test_validation_metrics_equal_textfit_eval_on_the_validation_file(tiny_model, tmp_path, extra):
    """metrics.json's validation figures are what `textfit eval RUN --data VALIDATION` prints: training
    evaluates through the same Classifier path (tokens, batches, kernels, thresholds, loss)."""
    from conftest import run_cli

    rows = make_rows(160, seed=5)
    tr, va = write_csv(tmp_path / "tr.csv", rows[:120]), write_csv(tmp_path / "va.csv", rows[120:])
    r = train(
        TrainConfig(
            train=str(tr),
            validation=str(va),
            model=tiny_model,
            output=str(tmp_path / "run"),
            eval_steps=5,
            **{**FAST, "epochs": 2, **extra},
        )
    )
    saved = json.loads((Path(r["folder"]) / "metrics.json").read_text())["validation"]
    cli = run_cli("eval", r["folder"], "--data", str(va), "--output", str(tmp_path / "ev"))
    assert cli.returncode == 0, cli.stderr
    printed = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert {"loss", "accuracy", "f1", "per_class"} <= set(saved) & set(printed)
    _close(saved, printed)
    assert saved["n"] == printed["n"] == 40


def test_device_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    from textfit.accel import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == "cpu" and pick_device("cpu") == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("auto") == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cuda" and pick_device("mps") == "mps"


def test_layer_lr_decay_scales_each_layer_below_the_top(tiny_model, data):
    from textfit.config import load_config
    from textfit.train.setup import setup

    cfg = load_config(None, dict(data=str(data), model=tiny_model, layer_lr_decay=0.5, **FAST))
    s = setup(cfg)
    names = {id(p): n for n, p in s.model.named_parameters()}
    rate = {names[id(p)]: g["initial_lr"] for g in s.optimizer.optimizer.param_groups for p in g["params"]}
    top = FAST["learning_rate"]
    assert rate["classifier.weight"] == rate["bert.pooler.dense.weight"] == top
    assert rate["bert.encoder.layer.1.output.dense.weight"] == top  # the top layer of two
    assert rate["bert.encoder.layer.0.output.dense.weight"] == top * 0.5
    assert rate["bert.embeddings.LayerNorm.weight"] == top * 0.25
    decayed = {names[id(p)] for g in s.optimizer.optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert (
        "bert.encoder.layer.0.output.dense.weight" in decayed
        and "bert.encoder.layer.0.output.dense.bias" not in decayed
    )
    # the schedule starts from every group's own rate
    assert sorted(set(s.scheduler.base_lrs)) == [top * 0.25, top * 0.5, top]
    with pytest.raises(UsageError, match="--layer-lr-decay"):
        load_config(None, dict(data=str(data), layer_lr_decay=1.5))


def test_default_epochs_shrink_on_large_training_splits(tiny_model, data, capsys):
    """Without --epochs: 3 passes, 2 on SST-2's 53,880 training rows, 1 past about 100,000 rows."""
    from textfit.config import load_config
    from textfit.train.setup import auto_epochs, setup

    assert [auto_epochs(n) for n in (1, 2_933, 40_000, 53_880, 100_000, 2_000_000)] == [3, 3, 3, 2, 1, 1]
    fast = {k: v for k, v in FAST.items() if k != "epochs"}
    s = setup(load_config(None, dict(data=str(data), model=tiny_model, **fast)))
    assert s.total_steps == 3 * s.steps_per_epoch
    assert "(3.00 epochs, the default for 96 training examples)" in capsys.readouterr().out
    assert s.resolved == {
        "learning_rate": 1e-2, "layer_lr_decay": 0.8, "precision": "fp32", "epochs": 3, "method": "finetune",
        "freeze_layers": 0,  # a third of two layers: none
    }
    s = setup(load_config(None, dict(data=str(data), model=tiny_model, **fast, epochs=0.5)))
    assert s.total_steps == math.ceil(0.5 * s.steps_per_epoch)


def test_the_model_card_shows_the_recipe_the_run_used_defaults_included(tiny_model, data, tmp_path):
    """--epochs, --learning-rate and --layer-lr-decay left to textfit still appear with their values."""
    from textfit.config import SMALL_MODEL_LR

    fast = {k: v for k, v in FAST.items() if k not in ("epochs", "learning_rate", "precision")}
    done = train(TrainConfig(data=str(data), model=tiny_model, output=str(tmp_path / "run"), **fast))
    recipe = (Path(done["folder"]) / "README.md").read_text().split("## Training recipe")[1]
    assert "- epochs: 3\n" in recipe and f"- learning_rate: {SMALL_MODEL_LR}\n" in recipe
    assert "- layer_lr_decay: 0.8\n" in recipe and "- batch_size: 8\n" in recipe
    precision = json.loads((Path(done["folder"]) / "textfit.json").read_text())["precision"]  # bf16 or fp32 here
    assert f"- precision: {precision}\n" in recipe and precision != "auto"


def test_weight_average_follows_the_warmed_up_decay_and_restores_training_weights():
    from textfit.train.ema import WeightAverage

    lin = torch.nn.Linear(2, 1)
    lin.bias.requires_grad = False
    with torch.no_grad():
        lin.weight.fill_(0.0)
    ema = WeightAverage(lin, decay=0.9)
    expected = torch.zeros(1, 2)
    for value in (1.0, 2.0, 3.0):
        with torch.no_grad():
            lin.weight.fill_(value)
        d = min(0.9, (1 + ema.updates) / (10 + ema.updates))
        expected = d * expected + (1 - d) * value
        ema.update()
    assert [n for n, _ in ema.named] == ["weight"]  # frozen tensors are not averaged
    with ema.applied():
        assert torch.allclose(lin.weight, expected)
    assert torch.equal(lin.weight, torch.full((1, 2), 3.0))  # the training weights are back
    ema.copy_to_model()
    assert torch.allclose(lin.weight, expected)


def test_weight_average_is_saved_and_survives_resume(tiny_model, data, tmp_path, monkeypatch):
    """With --ema-decay the saved model is the average (not the last weights), and a run resumed from a
    checkpoint ends with the same weights as the uninterrupted one."""
    import shutil

    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))  # no thread changes: identical sums

    common = dict(
        data=str(data), model=tiny_model, save_steps=5, ema_decay=0.9, load_best_model_at_end=False
    )
    full = train(TrainConfig(output=str(tmp_path / "full"), **common, **FAST))
    plain = train(TrainConfig(output=str(tmp_path / "plain"), **{**common, "ema_decay": 0.0}, **FAST))
    a, p = (load_file(Path(r["folder"]) / "model.safetensors") for r in (full, plain))
    assert not torch.equal(a["classifier.weight"], p["classifier.weight"])
    ckpt = tmp_path / "full" / "checkpoint-10"
    assert (ckpt / "ema.safetensors").is_file()
    shutil.copytree(ckpt, tmp_path / "cut" / "checkpoint-10")
    train(TrainConfig(output=str(tmp_path / "cut"), resume="latest", **common, **FAST))
    b = load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
