"""One batcher and one padder for every pass: training, evaluation and prediction.

    batches = LengthGroupedBatches(lengths, batch_size=16, seed=42)              # training: shuffled groups
    batches = length_sorted_batches(lengths, 64, max_tokens=8192)                # evaluation, prediction
    batch = pad(tokenizer, enc, ix, width)                                       # tensors for rows ix

Batches hold texts of similar length, so padding nearly disappears. On CPUs a bf16 training batch is padded
to a width that other batches of the same pass share (`shared_widths`): oneDNN builds its matrix-product
kernels for every new shape, so fewer distinct widths cost less (measured in benchmarks/RESULTS.md); an fp32
one is padded to its own longest text (`width_plan`).
CPU prediction pads to the rungs of one fixed ladder (`ladder_batches`), so that the chunks of a streamed
prediction run one set of shapes and memory stays flat. On CUDA a batch is padded to a multiple of 16
tokens (`bucketed_widths`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch


def shared_widths(widths: Iterable[int]) -> dict[int, int]:
    """Each batch width mapped to the width its batch is padded to on a CPU: a wider one that other
    batches of the same pass use, at most max(2, width // 32) tokens wider. Depends on the set of
    widths only, so a resumed run pads as the uninterrupted one did."""
    out: dict[int, int] = {}
    canonical = None
    for w in sorted(set(int(x) for x in widths), reverse=True):
        if canonical is None or w + max(2, w // 32) < canonical:
            canonical = w
        out[w] = canonical
    return out


LADDER_FINE_UP_TO = 40  # rungs 2 tokens apart up to here; above, each rung an eighth above the last
RARE_RUNG_SHARE = 4  # a pass's top rungs that at most a quarter of a batch's rows reach: batches of that quarter


@functools.cache
def ladder_width(width: int) -> int:
    """The rung of one fixed ladder at or above `width`: 2, 4, ... 40, then each rung an eighth above the last
    (45, 50, 56, 63, 70, 78, ...: 17 rungs from 41 to 256 tokens, against 64 before). It depends on nothing
    else, so every chunk of a large prediction meets the shapes the first chunks met.

    Why coarse above 40: every new rung's bf16 kernels keep state (about 12 MB each), and the rungs of a
    corpus's sparse long tail are first met chunks into a large prediction, so its memory rose with the rows
    (rungs 2 tokens apart: five new rungs after the first 10,000 SST-2 rows, the last in chunk 40; an eighth
    apart: one). The padding it adds is measured in benchmarks/RESULTS.md (issue 30)."""
    rung = 2
    while rung < width:
        rung += 2 if rung < LADDER_FINE_UP_TO else rung // 8
    return rung


def ladder_batches(
    lengths: np.ndarray, batch_size: int, max_tokens: int, limit: int
) -> list[tuple[np.ndarray, int, int]]:
    """Prediction batches on a CPU, as (indices, rows, width): longest texts first, each batch padded to its
    longest text's `ladder_width` (at most `limit`, the model's length), with `max_tokens // width` rows
    (at most `batch_size`). A pass of several batches pads its last, short batch to that many rows too (the
    caller repeats a row and drops its outputs: at most one batch of a pass), so the shapes a pass runs
    depend on the ladder alone, never on how many texts a chunk holds. The top rungs of a sparse long tail (a
    rung that at most a quarter of the batch's rows reach) run as batches of that quarter, so the widest full
    batch is set by the common lengths, not by the few longest texts a chunk happens to hold.

    Why: oneDNN and PyTorch's bf16 kernels keep state for every (rows, width) shape they meet; with
    `shared_widths` each chunk of a streamed prediction chose its own widths, and resident memory grew
    with every chunk; and SST-2's rare 64-66 token texts, first met chunks into a large table, made its widest
    batch 64 x 70 where the first chunk's was 64 x 63 (benchmarks/RESULTS.md, issue 30)."""
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    out: list[tuple[np.ndarray, int, int]] = []
    s = 0
    tail = True  # no full batch yet: the pass is still among its longest, rarest texts

    def rung(i: int) -> int:
        return min(ladder_width(int(lengths[order[i]])), limit)

    while s < len(order):
        top = rung(s)
        width = max(int(lengths[order[s]]), top)
        rows = max(1, min(batch_size, max_tokens // width))
        few = rows // RARE_RUNG_SHARE
        if tail and few and s + rows < len(order) and rung(s + few) < top:
            rows = few  # the sparse long tail's top rung: a small batch, and the rest at their own rung
        else:
            tail = False
        out.append((order[s : s + rows], rows, width))
        s += rows
    if len(out) == 1:
        ix, _, width = out[0]
        out[0] = (ix, len(ix), width)  # one short pass (a request): its own rows, no more
    return out


GPU_WIDTH_MULTIPLE = 16


def bucketed_widths(widths: Iterable[int]) -> dict[int, int]:
    """Each batch width mapped to the next multiple of GPU_WIDTH_MULTIPLE (never past the widest batch of the
    pass, which the model accepts): on a GPU, tensor-core tiles want such widths, and a handful of shapes lets
    kernels chosen (or compiled) for one batch serve the others. Untimed here: no GPU was at hand."""
    ws = set(int(x) for x in widths)
    top = max(ws, default=0)
    return {w: min(-(-w // GPU_WIDTH_MULTIPLE) * GPU_WIDTH_MULTIPLE, top) for w in ws}


def width_plan(device_type: str, dtype: torch.dtype | None = None) -> Callable[[Iterable[int]], dict[int, int]] | None:
    """How a pass pads its batches on this device and autocast dtype (None: fp32): shared widths on a CPU
    in bf16 or fp16, bucketed widths on CUDA, each batch to its own longest text elsewhere. CPU fp32
    products run MKL's GEMM, which builds nothing per shape, so there a shared width is only padding:
    each batch to its own width trained 7% faster on an AMD EPYC Zen 3 (AVX2, no bf16; RESULTS.md)."""
    if device_type == "cpu":
        return shared_widths if dtype in (torch.bfloat16, torch.float16) else None
    return {"cuda": bucketed_widths}.get(device_type)


def length_sorted_batches(lengths: np.ndarray, batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Indices in batches, longest texts first, so that each batch pads to almost nothing: at
    most `batch_size` texts, and (when `max_tokens` is given) at most that many padded tokens,
    but always at least one text."""
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    batches, s = [], 0
    while s < len(order):
        n = batch_size if max_tokens is None else max(1, min(batch_size, max_tokens // max(1, int(lengths[order[s]]))))
        batches.append(order[s : s + n])
        s += n
    return batches


def pad(
    tokenizer: Any, enc: dict[str, list[list[int]]], ix: Iterable[int], width: int | None = None
) -> dict[str, torch.Tensor]:
    """Rows `ix` of the encoded texts, padded to the longest of them (or to `width`), as int64 tensors,
    with the tokenizer's own padding values and side. Built with numpy: `tokenizer.pad` cost a
    measurable share of prediction (benchmarks/RESULTS.md)."""
    ix = list(ix)
    longest = max(len(enc["input_ids"][i]) for i in ix)
    width = max(width or 0, longest)
    if tokenizer.pad_token_id is None:  # the tokenizer's own error message
        rows = [{k: v[i] for k, v in enc.items()} for i in ix]
        return dict(tokenizer.pad(rows, padding="max_length", max_length=width, return_tensors="pt"))
    pad_values = {
        "input_ids": tokenizer.pad_token_id,
        "token_type_ids": tokenizer.pad_token_type_id,
        "attention_mask": 0,
    }
    left = tokenizer.padding_side == "left"
    batch = {}
    for key, rows_of_key in enc.items():
        arr = np.full((len(ix), width), pad_values.get(key, 0), dtype=np.int64)
        for j, i in enumerate(ix):
            row = rows_of_key[i]
            if left:
                arr[j, width - len(row) :] = row
            else:
                arr[j, : len(row)] = row
        batch[key] = torch.from_numpy(arr)
    return batch


class EncodedDataset(torch.utils.data.Dataset):
    """Token ids (unpadded) and targets, one item per example; `collate` pads a batch of them."""

    def __init__(self, enc: dict[str, list[list[int]]], labels: list[Any] | None = None):
        self.enc, self.labels = enc, labels
        self.lengths = [len(x) for x in enc["input_ids"]]

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> int:
        return i  # the collate function gathers rows by index: one numpy pass per batch


def make_collate(
    tokenizer: Any, dataset: EncodedDataset, widths: dict[int, int] | None = None
) -> Callable[[list[int]], dict[str, torch.Tensor]]:
    """Pads each batch to its longest example, or to `widths[longest]` when given (shared_widths)."""

    def collate(ix: list[int]) -> dict[str, torch.Tensor]:
        longest = max(dataset.lengths[i] for i in ix)
        batch = pad(tokenizer, dataset.enc, ix, widths.get(longest, longest) if widths else None)
        batch["index"] = torch.tensor(ix)
        if dataset.labels is not None:
            batch["labels"] = torch.tensor([dataset.labels[i] for i in ix])
        return batch

    return collate


class LengthGroupedBatches(torch.utils.data.Sampler):
    """Batches of similar length in a random, seeded order (training).

    Each epoch: shuffle all indices, cut them into chunks of `group` batches, sort each chunk
    by length, cut it into batches, and shuffle the batches. The randomness per epoch comes
    from (seed, epoch) only, so the order is reproducible and resumable.
    """

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        seed: int,
        group: int = 50,
        share_widths: Callable[[Iterable[int]], dict[int, int]] | None = None,
    ):
        self.lengths, self.batch_size, self.seed, self.group = lengths, batch_size, seed, group
        self.epoch = 0
        # share_widths (`width_plan`): `widths` maps each batch's width to the width it is padded to in
        # this pass; the collate function pads to it. Updated in place at each pass.
        self.share_widths = share_widths
        self.widths: dict[int, int] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        n = len(self.lengths)
        lengths = torch.tensor(self.lengths)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(n, generator=g)
        chunk = self.batch_size * self.group
        out: list[list[int]] = []
        for s in range(0, n, chunk):
            chunk_ix = perm[s : s + chunk]
            part = chunk_ix[torch.argsort(lengths[chunk_ix], descending=True, stable=True)].tolist()
            out += [part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        out = [out[i] for i in torch.randperm(len(out), generator=g).tolist()]
        if self.share_widths:
            self.widths.clear()
            self.widths.update(self.share_widths(max(self.lengths[i] for i in b) for b in out))
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)
