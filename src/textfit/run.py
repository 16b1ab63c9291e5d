"""The run folder format, written and read here only.

    run = Run.open("runs/sst2")                   # once per command: the folder and its manifest
    run.path, run.kind, run.task, run.label_names # kind: "transformer" or "static"
    manifest = RunManifest.read("runs/sst2")      # UsageError for a missing, older-than-known or foreign folder
    manifest.task, manifest.label_names, manifest.long_text.mode
    manifest.write(folder)                         # textfit.json, atomically

A run folder is a standard Hugging Face model folder (config.json with the label names,
model.safetensors, tokenizer files) plus `textfit.json`, this dataclass as JSON. Every module
that needs to know how a run was trained (the reader's columns and labels, the tokens' long-text
settings, the decision thresholds) asks a `RunManifest`; none reads the JSON by key. A command opens
its run once (`Run.open`, which reads textfit.json) and hands the `Run` on: the classifier, the explainer,
the server and the export take it instead of a folder name, so nothing reads the manifest again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textfit.errors import UsageError

MANIFEST = "textfit.json"
FORMAT_VERSION = 3  # 1: textfit 0.1 folders (no format_version key, the same fields); 3: temperature added
TASKS = ("classification", "multi-label", "regression")
# textfit 0.1 wrote transformers' problem types
OLD_TASK_NAMES = {"single_label_classification": "classification", "multi_label_classification": "multi-label"}


@dataclass(frozen=True)
class LongText:
    """How a text longer than max_length is read: evaluation, prediction and the server read
    texts the way training did."""

    truncation: str = "head"  # head, tail or head+tail
    mode: str = "truncate"  # truncate or window
    stride: int | None = None  # tokens shared by consecutive windows
    pool: str = "mean"  # how window logits become a text's logits

    def window_stride(self, max_length: int) -> int:
        """Tokens shared by consecutive windows: --stride, else a quarter of the window."""
        return self.stride if self.stride is not None else max_length // 4


@dataclass
class Schema:
    """What the reader learned from the training data and applies unchanged to every later file."""

    task: str
    text_column: str
    text_pair_column: str | None
    label_column: str
    label_names: list[str]
    label_values: list[Any]  # the raw label values, in id order
    label_separator: str | None = None  # multi-label cells written as strings


@dataclass
class LoraInfo:
    r: int
    alpha: float
    adapter: str = "adapter"  # the adapter's folder inside the run
    base_model_path: str | None = None


@dataclass
class RunManifest:
    schema: Schema
    max_length: int
    long_text: LongText = field(default_factory=LongText)
    threshold: float | list[float] | None = None  # a binary run's tuned threshold, or one per label (multi-label)
    temperature: float | list[float] | None = None  # calibration: logits are divided by it (one per label: multi-label)
    class_weights: list[float] | None = None
    lora: LoraInfo | None = None
    distillation: dict[str, Any] | None = None  # textfit distill: the teacher, its scores, the student's agreement
    static: dict[str, Any] | None = None  # --student static: the vectors' size and source, the pooling, its speed
    method: dict[str, Any] | None = None  # contrastive or zero-shot runs (train/fewshot.py, zeroshot.py): how
    base_model: str = ""
    # --trust-remote-code: the model's own code from the hub ran when it was trained, and runs again wherever the
    # run is loaded (eval, predict, serve, export); a run trained without it never runs code from its folder
    trust_remote_code: bool = False
    seed: int = 0
    data_fingerprint: str = ""
    data_warnings: list[str] = field(default_factory=list)
    steps: int = 0
    best_step: int | None = None
    train_seconds: float = 0.0
    train_stats: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    num_processes: int = 1
    versions: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    textfit_version: str = ""
    format_version: int = FORMAT_VERSION

    # Shortcuts for the fields every reader of a run asks for.
    @property
    def task(self) -> str:
        return self.schema.task

    @property
    def label_names(self) -> list[str]:
        return self.schema.label_names

    @property
    def pairs(self) -> bool:
        return self.schema.text_pair_column is not None

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON layout of textfit.json (the schema's fields at the top level)."""
        d = dataclasses.asdict(self)
        return {**d.pop("schema"), **d}

    def write(self, folder: str | Path) -> None:
        write_json(Path(folder) / MANIFEST, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = MANIFEST) -> RunManifest:
        version = d.get("format_version", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise UsageError(
                f"{where}: run format {version!r} is newer than this textfit reads ({FORMAT_VERSION}); upgrade textfit"
            )
        try:
            task = OLD_TASK_NAMES.get(d.get("task", "classification"), d.get("task", "classification"))
            schema = Schema(
                task=task,
                text_column=d["text_column"],
                text_pair_column=d.get("text_pair_column"),
                label_column=d["label_column"],
                label_names=list(d["label_names"]),
                label_values=list(d.get("label_values", d["label_names"])),
                label_separator=d.get("label_separator"),
            )
            known = {f.name for f in dataclasses.fields(cls)} - {"schema", "long_text", "lora"}
            rest = {k: v for k, v in d.items() if k in known}
            lora = d.get("lora")
            return cls(
                schema=schema,
                long_text=LongText(**(d.get("long_text") or {})),
                lora=LoraInfo(**lora) if lora else None,
                **{**rest, "format_version": FORMAT_VERSION},
            )
        except (KeyError, TypeError) as e:
            raise UsageError(
                f"{where}: not a textfit run manifest ({type(e).__name__}: {e}); retrain the run"
            ) from None

    @classmethod
    def read(cls, folder: str | Path) -> RunManifest:
        p = Path(folder)
        if not p.is_dir():
            raise UsageError(f"{folder}: no such run folder; pass a folder written by 'textfit train'")
        path = p / MANIFEST
        if not path.is_file():
            raise UsageError(f"{folder}: not a textfit run (no {MANIFEST}); pass a folder written by 'textfit train'")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UsageError(f"{path}: cannot be read as JSON ({e}); retrain the run") from None
        if not isinstance(d, dict):
            raise UsageError(f"{path}: not a textfit run manifest (expected a JSON object); retrain the run")
        return cls.from_dict(d, str(path))


@dataclass(frozen=True)
class Run:
    """A run folder opened once: where it is and what its manifest says. Made by `Run.open` at the start
    of a command (which refuses a folder that is not a run in one line, before any model loads) and handed
    to everything that reads the run; `str(run)` and `os.fspath(run)` give the folder."""

    path: Path
    manifest: RunManifest

    @classmethod
    def open(cls, folder: str | Path | Run) -> Run:
        """The run in `folder` (textfit.json read here, once); a `Run` is returned as it is."""
        if isinstance(folder, Run):
            return folder
        return cls(Path(folder), RunManifest.read(folder))

    @property
    def kind(self) -> str:
        """What model the run holds: "static" (a static student: token vectors and a head) or "transformer"."""
        return "static" if self.manifest.static is not None else "transformer"

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def label_names(self) -> list[str]:
        return self.manifest.label_names

    @property
    def pairs(self) -> bool:
        return self.manifest.pairs

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)


def run_fingerprint(folder: str | Path) -> str:
    """A run's files as they are now: the name, size and modification time of its weights, exports and JSON
    (textfit.json among them). Shared by predict --resume and distillation's cache of teacher predictions."""
    files = [
        f for f in sorted(Path(folder).iterdir()) if f.suffix in (".safetensors", ".onnx", ".json") and f.is_file()
    ]
    return hashlib.sha256(
        "".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns};" for f in files).encode()
    ).hexdigest()[:16]


def write_json(path: Path, obj: Any) -> None:
    """Written to a temporary file, then renamed: a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)  # check_output has checked that it can be made
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def library_versions() -> dict[str, str]:
    import accelerate
    import datasets
    import sklearn
    import torch
    import transformers

    from textfit.version import __version__

    return {
        "textfit": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
        "scikit-learn": sklearn.__version__,
    }


def check_output(path: Path, flag: str, folder: bool, fix: str = "choose another location") -> None:
    """`path` can be written here: every name short enough, its nearest existing folder writable, and it
    is not a file where a folder goes (`folder`), or a folder where a file goes."""
    for part in path.parts:
        if len(part.encode()) > 255:
            raise UsageError(f"{flag} {str(path)[:60]}...: a name in the path is over 255 bytes; choose a shorter one")
    if len(str(path.absolute()).encode()) > 4000:
        raise UsageError(f"{flag} {str(path)[:60]}...: the path is too long; choose a shorter one")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: {parent} is a file, not a folder; {fix}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: cannot write in {parent} (permission denied); {fix}")
    if folder and path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: is a file; pass a folder")
    if not folder and path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; pass a file name")
