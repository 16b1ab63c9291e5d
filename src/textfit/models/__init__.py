"""The models package's face: what prediction, serving and export ask of a run's model, whatever kind it is.

    from textfit import models
    model, tokenizer = models.load(run)            # a `Run`: its weights (evaluation mode) and tokenizer
    models.explainable(run)                        # None, or the one-line reason it has no word explanations
    models.exportable(run)                         # None, or why `textfit export` is not offered for it
    models.torch_only(run)                         # None, or why --backend auto keeps it on PyTorch fp32
    models.has_attention(model)                    # False: batched big and kept in fp32 (`batch_size`)
    models.fast_logits(model, tokenizer, texts, max_length, long_text)  # a model's own fast path, or None

A run holds a transformer (`transformer.py`: Hugging Face sequence classification) or a static student
(`static.py`: token vectors and a small head); the run says which (`Run.kind`). Only this package tells
them apart: code outside it asks these questions instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from textfit.models import static, transformer
from textfit.run import LongText, Run


def load(run: Run, adapter: bool = False) -> tuple[Any, Any]:
    """The run's model (evaluation mode) and tokenizer, loaded once; `adapter`: a LoRA run's base model
    with its saved adapter instead of the merged weights."""
    if adapter:
        return transformer.load_adapter(run)
    return transformer.load_from_run(run)


def explainable(run: Run) -> str | None:
    """None when integrated gradients can explain the run's predictions, else the one-line reason."""
    return static.NO_EXPLANATIONS if run.kind == static.NAME else None


def exportable(run: Run) -> str | None:
    """None when `textfit export --format onnx` is offered for the run, else the one-line reason, worded to
    follow "RUN is " ("a static student: ONNX export is not offered ...")."""
    return static.NO_EXPORT if run.kind == static.NAME else None


def torch_only(run: Run) -> str | None:
    """Why --backend auto runs the model on PyTorch fp32 whatever the machine (None: the usual choice)."""
    return static.TORCH_ONLY if run.kind == static.NAME else None


def has_attention(model: Any) -> bool:
    """False for a model whose cost does not grow with a batch's padded width (a bag of token vectors): it is
    predicted in big batches without the CPU's token cap (`batch_size`), and kept in fp32 (bf16 would round
    its vectors and saves nothing on a lookup and a mean). None (an ONNX or OpenVINO backend): True."""
    return not static.is_static(model)


def batch_size(model: Any, asked: int) -> int:
    """Texts a padded batch for `model`: `asked`, or more for a model without attention."""
    return asked if has_attention(model) else max(asked, static.BATCH)


def fast_logits(
    model: Any, tokenizer: Any, texts: list[str], max_length: int, long_text: LongText
) -> np.ndarray | None:
    """The logits of single texts by the model's own fast path (no padding, no mask), or None where it has
    none or the run reads long texts in a way the fast path does not (windows, a cut other than the head)."""
    if not static.is_static(model) or long_text.mode != "truncate" or long_text.truncation != "head":
        return None
    return static.fast_logits(model, tokenizer, texts, max_length)
