"""Where a run is written: the run folder, the temporary folder it is built in, and log.jsonl.

Without checkpoints the run is written into a hidden temporary folder next to the run folder and
renamed into place when complete; with checkpoints (or a resume), into the run folder itself, whose
textfit.json is written last.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import IO, Any

from ..config import TrainConfig
from ..errors import UsageError
from ..run import MANIFEST


def output_folder(cfg: TrainConfig) -> Path:
    """The run folder: --output, else runs/<data name>, numbered when that exists."""
    if cfg.output:
        out = Path(cfg.output)
        if cfg.resume is not None:
            if (out / MANIFEST).exists():
                raise UsageError(f"--resume: {out} holds a finished run; pass another --output")
            return out
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cfg.overwrite:
            raise UsageError(
                f"--output {out}: the folder exists and is not empty; pass --overwrite to replace it, or another "
                "--output"
            )
        return out
    if cfg.resume is not None:
        raise UsageError("--resume needs --output: the run folder that holds the checkpoints")
    name = Path((cfg.data or cfg.train or "run").rstrip("/")).stem.replace(" ", "_").replace("/", "_") or "run"
    out, n = Path("runs") / name, 1
    while out.exists():
        n += 1
        out = Path("runs") / f"{name}-{n}"
    return out


class RunLog:
    """log.jsonl: one JSON record a line (main process only; the others write nothing)."""

    def __init__(self, path: Path | None):
        self.file: IO[str] | None = open(path, "a", encoding="utf-8") if path is not None else None

    def __call__(self, record: dict[str, Any]) -> None:
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file and not self.file.closed:
            self.file.close()


def work_folder(out: Path, persistent: bool, main: bool, resumed_step: int | None) -> Path:
    """The folder the run is written into (see the module's docstring), made ready."""
    work = out if persistent else out.parent / f".{out.name}.tmp-{os.getpid()}"
    if not main:
        return work
    if not persistent:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.jsonl"
    if resumed_step is not None and log.exists():  # drop what the lost steps logged
        lines = log.read_text(encoding="utf-8").splitlines()
        keep = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= resumed_step]
        log.write_text("".join(x + "\n" for x in keep), encoding="utf-8")
    return work


def move_into_place(work: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(work, out)
