"""Data in: files, folders and hub ids to labelled splits, then to token ids and batches.

    data = load_data(cfg)                          # training: splits, the learned schema, notes
    split = read_for_run("holdout.csv", manifest)  # eval/predict: the run's schema applied
    enc, doc = encode_long(tokenizer, split.texts, split.pairs, 256, LongText())

Modules: `read` (files -> frames), `schema` (columns, task, labels), `splits`, `load` (the two
entry points above), `tokens` (truncation, windows), `batching` (one batcher, one padder).
"""

from textfit.data.batching import (
    EncodedDataset,
    LengthGroupedBatches,
    length_sorted_batches,
    make_collate,
    pad,
    shared_widths,
    width_plan,
)
from textfit.data.load import (
    ReadOptions,
    TrainingData,
    label_problems,
    load_data,
    read_for_run,
    read_splits,
    split_seed,
)
from textfit.data.splits import Split, carve_splits
from textfit.data.tokens import encode_long, pool_windows

__all__ = [
    "EncodedDataset",
    "LengthGroupedBatches",
    "ReadOptions",
    "Split",
    "TrainingData",
    "carve_splits",
    "encode_long",
    "label_problems",
    "length_sorted_batches",
    "load_data",
    "make_collate",
    "pad",
    "pool_windows",
    "read_for_run",
    "read_splits",
    "shared_widths",
    "width_plan",
    "split_seed",
]
