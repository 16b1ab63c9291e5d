"""The last encoder layer computed for the first token only, where the head reads nothing else.

A BERT sequence classifier reads one vector: the pooler takes the last layer's output at the first
position ([CLS]). That output needs the first token's query, but every token's key and value; the
other tokens' queries, attention outputs and feed-forward passes in the last layer are computed and
thrown away. `install(model)` makes the last layer compute only what the head reads: its keys and
values over all tokens, the rest for the first position (a (batch, 1, hidden) output the pooler reads
as before). The same arithmetic, so the same logits to rounding, for training and prediction; about a
sixth of a 6-layer encoder's products are saved (benchmarks/RESULTS.md has the figures). The few-shot
runs' mean layer (`fewshot.append_mean_layer`) is such a last layer too: its first position is the mean.

Only where the code is known (the classifier, its head, the layer and its attention compared by their
bytecode with transformers' classes, as `inference` does for the output blocks: BERT, MiniLM,
bert-base-chinese, RoBERTa, XLM-R, CamemBERT, ELECTRA), and only for calls through the classifier's own
forward that ask for no hidden states or attention maps (nor does its configuration): a direct call of the
encoder (`model.base_model(...)`: the contrastive pass) runs every token as before, unless inside `only`
(the frozen backbone's features, which read the first position alone). TEXTFIT_FIRST_TOKEN=0 turns it off.
No library does this (transformers, optimum and ONNX Runtime's transformer optimizer compute every position
of every layer).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import threading
import types
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from textfit.accel.switches import settings

_state = threading.local()  # .layer: the layer that runs for the first token only in this thread's call


def same_code(obj: Any, cls: type, name: str = "forward") -> bool:
    """Whether `obj`'s method `name` is `cls`'s code (behind any decorators: they wrap every model alike): how
    this package recognises transformers' blocks it may compute its own way (here and in `inference`)."""
    method = getattr(type(obj), name, None)
    mine = getattr(inspect.unwrap(method), "__code__", None) if method is not None else None
    theirs = inspect.unwrap(getattr(cls, name)).__code__
    return mine is not None and (mine.co_code, mine.co_names) == (theirs.co_code, theirs.co_names)


# The classifiers whose head reads the first position alone: (module, classifier, base model, the head's
# attribute and class). RoBERTa, XLM-R, CamemBERT and ELECTRA run BERT's layer code (checked below).
FAMILIES = (
    ("bert", "BertForSequenceClassification", "BertModel", "pooler", "BertPooler"),
    ("roberta", "RobertaForSequenceClassification", "RobertaModel", "classifier", "RobertaClassificationHead"),
    (
        "xlm_roberta",
        "XLMRobertaForSequenceClassification",
        "XLMRobertaModel",
        "classifier",
        "XLMRobertaClassificationHead",
    ),
    ("camembert", "CamembertForSequenceClassification", "CamembertModel", "classifier", "CamembertClassificationHead"),
    ("electra", "ElectraForSequenceClassification", "ElectraModel", "classifier", "ElectraClassificationHead"),
)


def _known_head(model: Any) -> bool:
    base = model.base_model
    for family, classifier, body, attribute, head in FAMILIES:
        if type(model).__name__ != classifier:
            continue
        try:
            module = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
        except ImportError:
            return False
        reader = getattr(model, attribute, None) or getattr(base, attribute, None)  # the pooler is the body's
        return (
            same_code(model, getattr(module, classifier))
            and same_code(base, getattr(module, body))
            and reader is not None
            and same_code(reader, getattr(module, head))
        )
    return False


def applies(model: Any) -> bool:
    """Whether `model` is a sequence classifier of a BERT-family architecture whose head reads only the
    first position (`FAMILIES`), with BERT's own layer code."""
    from transformers.models.bert import modeling_bert as bert

    base = getattr(model, "base_model", None)
    config = getattr(model, "config", None)
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if base is None or config is None or not isinstance(layers, nn.ModuleList) or not len(layers):
        return False
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return False
    if getattr(config, "chunk_size_feed_forward", 0) or not same_code(encoder, bert.BertEncoder):
        return False
    if not _known_head(model):
        return False
    return all(
        same_code(layer, bert.BertLayer)
        and same_code(layer, bert.BertLayer, "feed_forward_chunk")
        and same_code(getattr(layer, "attention", None), bert.BertAttention)
        and same_code(getattr(getattr(layer, "attention", None), "self", None), bert.BertSelfAttention)
        for layer in layers
    )


def install(model: Any) -> bool:
    """Make calls of `model` (its own forward) run its last layer for the first token only; returns
    whether it applies (see `applies`). Installing twice changes nothing."""
    if not settings().first_token or not applies(model):
        return False
    if getattr(model, "_textfit_first_token", False):
        return True
    for layer in model.base_model.encoder.layer:
        layer.forward = types.MethodType(_layer_forward, layer)  # a deep copy rebinds it to the copy
    model.register_forward_pre_hook(_enter, with_kwargs=True)
    model.register_forward_hook(_leave, always_call=True)
    model._textfit_first_token = True
    return True


@contextlib.contextmanager
def only(model: Any) -> Iterator[None]:
    """Inside: calls of the encoder itself (`model.base_model(...)`) also run the last layer for the first
    token alone, where `install` applied, so `last_hidden_state` is (batch, 1, hidden); for callers that read
    only `last_hidden_state[:, 0]` (the frozen backbone's features)."""
    if not getattr(model, "_textfit_first_token", False):
        yield
        return
    _enter(model, (), {})
    try:
        yield
    finally:
        _leave(model)


def _enter(model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    stack.append(getattr(_state, "layer", None))
    # every layer's every position asked for, by the call or else by the configuration
    whole = any(kwargs.get(k, getattr(model.config, k, None)) for k in ("output_hidden_states", "output_attentions"))
    _state.layer = None if whole else model.base_model.encoder.layer[-1]


def _leave(model: Any, *_: Any) -> None:
    stack = getattr(_state, "stack", None)
    _state.layer = stack.pop() if stack else None


def _layer_forward(
    self: Any, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args: Any, **kwargs: Any
) -> torch.Tensor:
    if getattr(_state, "layer", None) is not self:
        return type(self).forward(self, hidden_states, attention_mask, *args, **kwargs)
    _state.layer = None  # the layer's own submodules run as usual
    try:
        return first_token_layer(self, hidden_states, attention_mask, **kwargs)
    finally:
        _state.layer = self


def first_token_layer(
    layer: Any, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs: Any
) -> torch.Tensor:
    """BertLayer's output at the first position, (batch, 1, hidden), from `hidden_states` (batch,
    length, hidden): the first token's query against every token's key and value."""
    from transformers.models.bert.modeling_bert import ALL_ATTENTION_FUNCTIONS, eager_attention_forward

    kwargs.pop("encoder_attention_mask", None)
    kwargs.pop("cache", None)
    attention = layer.attention.self
    batch, length, _ = hidden_states.shape
    size = attention.attention_head_size
    first = hidden_states[:, :1]
    query = attention.query(first).view(batch, 1, -1, size).transpose(1, 2)
    key = attention.key(hidden_states).view(batch, length, -1, size).transpose(1, 2)
    value = attention.value(hidden_states).view(batch, length, -1, size).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        attention_mask = attention_mask[:, :, :1]  # a mask per query: the first query's row
    function = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager_attention_forward)
    out, _ = function(
        attention,
        query,
        key,
        value,
        attention_mask,
        dropout=0.0 if not attention.training else attention.dropout.p,
        scaling=attention.scaling,
        **kwargs,
    )
    out = layer.attention.output(out.reshape(batch, 1, -1).contiguous(), first)
    return layer.feed_forward_chunk(out)
