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

from textfit.config import TrainConfig
from textfit.errors import UsageError
from textfit.run import MANIFEST, check_output


def is_run_folder(folder: Path) -> bool:
    """A folder textfit wrote: a run (textfit.json), a run in progress (checkpoints with their
    manifests), a --seeds folder (seeds.json, or seed-N runs), or a cross-validation (cv.json, or fold-N runs)."""
    if any((folder / name).is_file() for name in (MANIFEST, "seeds.json", "cv.json")):
        return True
    if any((p / "checkpoint.json").is_file() for p in folder.glob("checkpoint-*")):
        return True
    subs = [*folder.glob("seed-*"), *folder.glob("fold-*")]
    return any(is_run_folder(p) for p in subs if p.is_dir())


def check_replaceable(out: Path, inputs: list[str | None]) -> None:
    """--overwrite replaces an empty folder or a textfit run, never anything else and never the input data."""
    files = [p for p in sorted(out.rglob("*")) if p.is_file()]
    for given in inputs:
        if given and Path(given).exists() and Path(given).resolve().is_relative_to(out.resolve()):
            raise UsageError(
                f"--output {out} --overwrite: would delete the input data {given}; choose another --output"
            )
    if files and not is_run_folder(out):
        raise UsageError(
            f"--output {out} --overwrite: the folder is not a textfit run, and replacing it would delete "
            f"{files[0]}; choose another --output"
        )


def output_folder(cfg: TrainConfig) -> Path:
    """The run folder: --output, else runs/<data name>, numbered when that exists."""
    if cfg.output:
        out = Path(cfg.output)
        check_output(out, "--output", folder=True)
        if cfg.resume is not None:
            if (out / MANIFEST).exists():
                raise UsageError(f"--resume: {out} holds a finished run; pass another --output")
            return out
        if out.exists() and any(out.iterdir()):
            if not cfg.overwrite:
                raise UsageError(
                    f"--output {out}: the folder exists and is not empty; pass --overwrite to replace it, "
                    "or another --output"
                )
            check_replaceable(out, [cfg.data, cfg.train, cfg.validation, cfg.test, cfg.teacher, *(cfg.unlabeled or [])])
        return out
    if cfg.resume is not None:
        raise UsageError("--resume needs --output: the run folder that holds the checkpoints")
    return default_output(cfg)


def default_output(cfg: TrainConfig) -> Path:
    """runs/<data name>, numbered (-2, -3, ...) when that exists: where a run without --output goes."""
    from textfit.data.read import data_stem

    name = data_stem(cfg.data or cfg.train or "run").replace(" ", "_").replace("/", "_") or "run"
    out, n = Path("runs") / name, 1
    while out.exists():
        n += 1
        out = Path("runs") / f"{name}-{n}"
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(out: Path) -> None:
    """Temporary folders that a killed run left in this place: `.NAME.tmp-PID` beside the run (the
    process is gone) and `.checkpoint-STEP.tmp` inside it."""
    for p in out.parent.glob(f".{out.name}.tmp-*") if out.parent.is_dir() else []:
        pid = p.name.rsplit("-", 1)[-1]
        if p.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
    for p in out.glob(".checkpoint-*.tmp") if out.is_dir() else []:
        shutil.rmtree(p, ignore_errors=True)


class RunLog:
    """log.jsonl: one JSON record a line (main process only; the others write nothing)."""

    def __init__(self, path: Path | None, trackers: Any = None):
        self.file: IO[str] | None = open(path, "a", encoding="utf-8") if path is not None else None
        self.trackers = trackers  # --report-to: every record reaches them too (tracking.Trackers)

    def __call__(self, record: dict[str, Any]) -> None:
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        if self.trackers is not None and "epoch_end" not in record:
            self.trackers.log(record)

    def close(self) -> None:
        if self.file and not self.file.closed:
            self.file.close()
        if self.trackers is not None:
            self.trackers.finish()


def work_folder(out: Path, persistent: bool, main: bool, resumed_step: int | None) -> Path:
    """The folder the run is written into (see the module's docstring), made ready: an old run being
    replaced in place (checkpoints) goes first, with its checkpoints."""
    work = out if persistent else out.parent / f".{out.name}.tmp-{os.getpid()}"
    if not main:
        return work
    clean_stale(out)
    if persistent and resumed_step is None and out.is_dir() and any(out.iterdir()):
        shutil.rmtree(out)  # output_folder checked that it is a textfit run replaced with --overwrite
    if not persistent:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.jsonl"
    if resumed_step is not None and log.exists():  # drop what the lost steps logged
        keep = [r for r in log_records(log) if r.get("step", 0) <= resumed_step]
        tmp = log.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep), encoding="utf-8")
        os.replace(tmp, log)
    return work


def log_records(log: Path) -> list[dict[str, Any]]:
    """log.jsonl's records; a line a kill tore (the last one, half-written) is dropped with a warning."""
    records, torn = [], 0
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            torn += 1
            continue
        if isinstance(record, dict):
            records.append(record)
    if torn:
        print(f"textfit: warning: {log}: {torn} torn line(s) dropped (written when the run was stopped)", flush=True)
    return records


def umask_modes(folder: Path) -> None:
    """Every file of a run gets the mode the user's umask gives: safetensors writes its files 0600 (a
    temporary file renamed), which another account cannot read while the rest of the run is 0644."""
    mask = os.umask(0)
    os.umask(mask)
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            os.chmod(p, 0o666 & ~mask)


def folder_state(out: Path) -> tuple[bool, int]:
    """What is at `out` now (whether it exists, and its manifest's modification time): taken when a run starts,
    compared when it is moved into place, so that a run saved there meanwhile by another process is seen."""
    try:
        return out.exists(), (out / MANIFEST).stat().st_mtime_ns
    except OSError:
        return out.exists(), 0


def move_into_place(work: Path, out: Path, at_start: tuple[bool, int] | None = None) -> Path:
    """The finished run moved from its work folder to `out` (what was there at the start, which --overwrite
    replaces, goes first); returns where it went. Where another process saved a run into `out` while this one
    trained (two `textfit train` into one --output), neither replaces the other: this one goes to OUT-2
    (numbered as runs/NAME is), and the log says so."""
    if at_start is not None and out.exists() and folder_state(out) != at_start:
        n = 2
        while (other := out.parent / f"{out.name}-{n}").exists():
            n += 1
        print(
            f"textfit: warning: another run was saved into {out} while this one trained; this one is saved to "
            f"{other} instead",
            flush=True,
        )
        out = other
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(work, out)
    return out
