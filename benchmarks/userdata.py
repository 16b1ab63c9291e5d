"""Your own data for the benchmarks: any file textfit reads, split and labelled by textfit."""

from __future__ import annotations

from pathlib import Path


def read_user_data(path: str, seed: int):
    """A user's file as (train, validation) frames of text[, text_pair], label id, read and split by textfit."""
    import pandas as pd

    from textfit import TrainConfig
    from textfit.data import load_data
    from textfit.errors import UsageError

    if not Path(path).exists():
        raise SystemExit(f"--data {path}: expected sst2, imdb or the path of a data file")
    try:
        data = load_data(TrainConfig(data=path, seed=seed))
    except UsageError as e:
        raise SystemExit(f"--data {path}: {e}") from None
    splits, task = data.splits, data.schema.task
    if task != "classification":
        raise SystemExit(f"--data {path}: a {task} data set; the benchmark compares single-label classification")

    def frame(split):
        cols = {"text": split.texts, "label": split.labels}
        if split.pairs is not None:
            cols["text_pair"] = split.pairs
        return pd.DataFrame(cols)

    return frame(splits["train"]), frame(splits["validation"])


def data_label(name: str) -> str:
    """The data set's name in the table: sst2, imdb, or a file's stem."""
    if name in ("sst2", "imdb"):
        return name
    path = Path(name)
    stem = path.stem if path.stem.lower() not in ("train", "dev", "test", "validation", "data") else path.parent.name or path.stem
    return stem.replace(" ", "_")[:14]


def machine_kind() -> str:
    """The machine in one line: the GPU's name, or the CPU's model and the matrix units PyTorch sees."""
    import os
    import platform

    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name()}"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
    except OSError:
        pass
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    units = "AMX + AVX-512 bf16" if amx else "AVX-512 bf16, no AMX" if bf16 else "no bf16 matrix units"
    return f"CPU {model} ({units}), {os.cpu_count()} cores"
