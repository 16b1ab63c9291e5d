"""The last layer for the first token only (accel.first_token): the same logits and gradients as every
position computed, and every other way of calling the model untouched."""

from __future__ import annotations

import copy

import pytest
import torch

from textfit import accel
from textfit.accel import first_token


def _bert(layers: int = 2, dropout: float = 0.0, family: str = "bert"):
    import transformers

    torch.manual_seed(0)
    name = {"bert": "Bert", "roberta": "Roberta", "electra": "Electra"}[family]
    config = getattr(transformers, f"{name}Config")(
        vocab_size=200,
        hidden_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=96,
        max_position_embeddings=64,
        num_labels=3,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return getattr(transformers, f"{name}ForSequenceClassification")(config).eval()


def _batch():
    torch.manual_seed(1)
    ids = torch.randint(5, 200, (4, 11))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("mode,family", [("fp32", "bert"), ("train", "bert"), ("train", "roberta"), ("fp32", "electra")])
def test_logits_and_gradients_equal_every_position_computed(mode, family):
    model, batch = _bert(family=family), _batch()
    ref = copy.deepcopy(model)
    accel.enable(model, mode)
    assert model._textfit_first_token
    calls = []
    model.base_model.encoder.layer[-1].attention.output.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    labels = torch.tensor([0, 1, 2, 1])
    got = model(**batch, labels=labels)
    want = ref(**batch, labels=labels)
    assert calls == [torch.Size([4, 1, 64])]  # the last layer ran for the first position alone
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)
    got.loss.backward()
    want.loss.backward()
    for (name, a), b in zip(model.named_parameters(), ref.parameters()):
        assert a.grad is not None, name  # every weight of the last layer still learns
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_other_calls_compute_every_position():
    model, batch = _bert(), _batch()
    accel.enable(model, "fp32")
    assert model.base_model(**batch).last_hidden_state.shape == (4, 11, 64)  # the contrastive pass's call
    out = model(**batch, output_hidden_states=True)
    assert out.hidden_states[-1].shape == (4, 11, 64)
    model.config.output_hidden_states = True  # asked for by the configuration instead of the call
    assert model(**batch).hidden_states[-1].shape == (4, 11, 64)
    model.config.output_hidden_states = False
    with pytest.raises(Exception):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"][:, :3])  # fails inside
    assert model.base_model(**batch).last_hidden_state.shape == (4, 11, 64)  # nothing left switched on
    copied = copy.deepcopy(model)  # a snapshot (best model) computes as its original
    torch.testing.assert_close(copied(**batch).logits, model(**batch).logits)


def test_bf16_prediction_matches_and_the_switch_turns_it_off(monkeypatch):
    model, batch = _bert(), _batch()
    ref = copy.deepcopy(model).to(torch.bfloat16)
    model.to(torch.bfloat16)
    assert first_token.install(model)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, ref(**batch).logits, atol=2e-2, rtol=2e-2)
    monkeypatch.setenv("TEXTFIT_FIRST_TOKEN", "0")
    accel.settings.cache_clear()  # the switches are read once per process
    try:
        assert not first_token.install(_bert())
    finally:
        accel.settings.cache_clear()


def test_the_few_shot_mean_layer_reads_the_same():
    from textfit.train.methods import contrastive as fewshot

    model, batch = _bert(), _batch()
    accel.enable(model, "train")
    model.eval()
    fewshot.append_mean_layer(model)  # a copy of the last layer, appended: now the new last one
    ref = copy.deepcopy(model)
    with torch.no_grad():
        got = model(**batch).logits
        for layer in ref.base_model.encoder.layer:
            del layer.forward  # the class's own forward: every position
        want = ref(**batch).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_only_known_bert_classifiers():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    distil = DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=100, dim=32, n_layers=1, n_heads=2, hidden_dim=64, max_position_embeddings=32)
    )
    assert not first_token.applies(distil)
    bert = _bert()
    assert first_token.applies(bert)
    assert not first_token.applies(bert.base_model)  # an encoder alone: its every position is its output
    assert first_token.applies(_bert(family="roberta")) and first_token.applies(_bert(family="electra"))


def test_the_frozen_backbone_reads_the_same_first_token():
    model, batch = _bert(), _batch()
    with torch.no_grad():
        want = model.base_model(**batch).last_hidden_state[:, 0]
        accel.enable(model, "train")
        model.eval()
        with accel.first_token_only(model):
            hidden = model.base_model(**batch).last_hidden_state
        assert hidden.shape == (4, 1, 64)
        torch.testing.assert_close(hidden[:, 0], want, atol=1e-5, rtol=1e-5)
        assert model.base_model(**batch).last_hidden_state.shape == (4, 11, 64)  # only inside the context
