"""Texts to token ids: truncation (head, tail, head+tail) or overlapping windows, and window pooling.

    enc, doc = encode_long(tokenizer, texts, pairs, 256, LongText())   # ids per example, example -> text
    logits = pool_windows(window_logits, doc, len(texts), "mean")

Token ids are not padded here: `batching` pads each batch to its own width.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from textfit.errors import UsageError
from textfit.run import LongText

KEYS = ("input_ids", "attention_mask", "token_type_ids")


def encode(tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int) -> dict[str, list[list[int]]]:
    """Token ids per example, truncated to max_length and not padded."""
    out = tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=False)
    return {k: v for k, v in out.items() if k in KEYS}


def special_counts(tokenizer: Any) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a single text ([CLS] and [SEP]: 1, 1)."""
    with_special = tokenizer("a")["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start : start + len(plain)] == plain:
            return start, len(with_special) - start - len(plain)
    return 0, 0


def head_tail_split(budget: int) -> tuple[int, int]:
    """First and last tokens kept by head+tail: a quarter from the start, the rest from the end
    (128 + 382 for BERT's 510, the best truncation on IMDb in Sun et al., 2019)."""
    head = round(budget * 128 / 510)
    return head, budget - head


def _cut(tokenizer: Any, texts: list[str], max_length: int, truncation: str) -> dict[str, list[list[int]]]:
    before, after = special_counts(tokenizer)
    full = tokenizer(texts, padding=False)  # no truncation: cut below
    budget = max_length - before - after
    head, tail = (0, budget) if truncation == "tail" else head_tail_split(budget)
    enc: dict[str, list[list[int]]] = {k: [] for k in KEYS if k in full}
    for i in range(len(texts)):
        ids = full["input_ids"][i]
        if len(ids) <= max_length:
            keep = list(range(len(ids)))
        else:
            body = range(before, len(ids) - after)
            end = list(range(len(ids) - after, len(ids)))
            keep = list(range(before)) + list(body[:head]) + list(body[len(body) - tail :]) + end
        for k in enc:
            row = full[k][i]
            enc[k].append([row[j] for j in keep])
    return enc


def encode_long(
    tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int, long: LongText
) -> tuple[dict[str, list[list[int]]], list[int]]:
    """Token ids per example and the text each example comes from: one example per text, cut
    as `long.truncation` says, or with `long.mode == "window"` overlapping windows of
    max_length tokens (the tokenizer's own overflow with a stride) that cover every token."""
    if long.mode == "truncate" and long.truncation == "head":
        return encode(tokenizer, texts, pairs, max_length), list(range(len(texts)))
    if pairs is not None:
        raise UsageError(
            "--truncation tail/head+tail and --long-text window work on single texts, not sentence pairs; "
            "use the default --truncation head"
        )
    if long.mode == "window":
        stride = long.window_stride(max_length)
        if stride >= max_length - 2:
            raise UsageError(
                f"--stride {stride}: must be smaller than --max-length {max_length} minus the special tokens"
            )
        out = tokenizer(
            texts, truncation=True, max_length=max_length, stride=stride, return_overflowing_tokens=True, padding=False
        )
        return {k: v for k, v in out.items() if k in KEYS}, list(out["overflow_to_sample_mapping"])
    return _cut(tokenizer, texts, max_length, long.truncation), list(range(len(texts)))


def pool_windows(logits: np.ndarray, doc: list[int] | np.ndarray, n_docs: int, how: str) -> np.ndarray:
    """A text's logits from its windows' logits (mean or max); identity when one example is one text."""
    doc = np.asarray(doc)
    if len(doc) == n_docs and (doc == np.arange(n_docs)).all():
        return logits
    out = np.full((n_docs, logits.shape[1]), -np.inf if how == "max" else 0.0, dtype=np.float32)
    if how == "max":
        np.maximum.at(out, doc, logits)
        return out
    np.add.at(out, doc, logits)
    return out / np.bincount(doc, minlength=n_docs)[:, None]
