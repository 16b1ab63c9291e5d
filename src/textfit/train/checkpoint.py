"""Checkpoints that survive a crash: `checkpoint-STEP` folders written atomically.

    save_checkpoint(run_folder, step, model, optimizer, scheduler, state, best_state, limit=3)
    path = latest_checkpoint(run_folder)        # newest complete one, or None
    state = load_checkpoint(path, model, optimizer, scheduler)

A checkpoint holds the model (safetensors), the optimizer and scheduler states and the RNG
states (`training_state.pt`, tensors and numbers only, read back with `weights_only=True`),
the best weights so far when they differ from the current ones, the weight average with --ema-decay
(`ema.safetensors`), and `trainer_state.json`
(step, epoch, position in the epoch, best metric, history). Everything is written into a hidden
temporary folder, each file fsynced, then `checkpoint.json` (the file list with sizes and
SHA-256) last, and the folder renamed into place: a crash mid-save leaves no folder that looks
complete. A folder whose `checkpoint.json` is missing or does not match its files is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from textfit.errors import UsageError

PATTERN = re.compile(r"^checkpoint-(\d+)$")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    folder: Path,
    step: int,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    state: dict[str, Any],
    best_state: dict[str, torch.Tensor] | None,
    limit: int | None = None,
    ema_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    final = folder / f"checkpoint-{step}"
    tmp = folder / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
        tmp / "training_state.pt",
    )
    if best_state is not None:
        save_file({k: v.contiguous() for k, v in best_state.items()}, str(tmp / "best.safetensors"))
    if ema_state is not None:
        save_file(ema_state, str(tmp / "ema.safetensors"))
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
    files = sorted(p.name for p in tmp.iterdir())
    for name in files:
        _fsync(tmp / name)
    manifest = {
        "step": step,
        "files": {n: {"bytes": (tmp / n).stat().st_size, "sha256": _sha256(tmp / n)} for n in files},
    }
    (tmp / "checkpoint.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    _fsync(tmp / "checkpoint.json")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(folder)
    if limit:
        for old in checkpoints(folder)[limit:]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def is_complete(path: Path) -> bool:
    try:
        manifest = json.loads((path / "checkpoint.json").read_text(encoding="utf-8"))
        return all(
            (path / n).is_file() and (path / n).stat().st_size == f["bytes"] for n, f in manifest["files"].items()
        )
    except (OSError, ValueError, KeyError):
        return False


def checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints in the folder, newest first."""
    if not folder.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.match(p.name)) and p.is_dir() and is_complete(p)
    ]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(folder: Path) -> Path | None:
    found = checkpoints(folder)
    return found[0] if found else None


def mismatch(path: Path) -> str | None:
    """Why a checkpoint's files do not match the sizes and SHA-256 its checkpoint.json recorded, or None."""
    try:
        manifest = json.loads((path / "checkpoint.json").read_text(encoding="utf-8"))
        for name, f in manifest["files"].items():
            p = path / name
            if not p.is_file() or p.stat().st_size != f["bytes"]:
                return f"{name} is missing or has another size"
            if _sha256(p) != f["sha256"]:
                return f"{name} does not match its recorded SHA-256 (changed after it was saved)"
    except (OSError, ValueError, KeyError, TypeError):
        return "no valid checkpoint.json"
    return None


def resolve_resume(resume: str, output: Path) -> Path:
    """--resume (the latest complete checkpoint of --output whose files match their SHA-256; others are
    skipped with a note) or --resume PATH (a checkpoint, refused when it does not match, or a run folder)."""
    p = output if resume == "latest" else Path(resume)
    if PATTERN.match(p.name):
        why = mismatch(p)
        if why:
            raise UsageError(f"--resume {resume}: {why}; pass another checkpoint")
        return p
    for path in checkpoints(p):
        why = mismatch(path)
        if why is None:
            return path
        print(f"textfit: skipped {path}: {why}", file=sys.stderr)
    where = "--resume" if resume == "latest" else f"--resume {resume}"
    raise UsageError(
        f"{where}: no complete checkpoint with matching files in {p}; pass --resume PATH or train without --resume"
    )


def load_average(path: Path) -> dict[str, torch.Tensor] | None:
    """The weight average (--ema-decay) a checkpoint holds, or None."""
    return load_file(str(path / "ema.safetensors")) if (path / "ema.safetensors").is_file() else None


def load_checkpoint(
    path: Path, model: Any, optimizer: Any, scheduler: Any
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Restore model, optimizer, scheduler and RNG states; returns the trainer state and the best weights."""
    load_model(model, str(path / "model.safetensors"))
    try:  # tensors and numbers only: nothing is unpickled
        blob = torch.load(path / "training_state.pt", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for a file it will not load
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise UsageError(
            f"--resume {path}: training_state.pt holds more than tensors ({first}); textfit never unpickles it"
        ) from None
    try:
        optimizer.load_state_dict(blob["optimizer"])
    except ValueError:  # torch: "loaded state dict contains a parameter group that doesn't match the size..."
        raise UsageError(
            f"--resume {path}: its optimizer state is for another set of trained weights; resume with the flags the "
            "run started with (--freeze-layers, --freeze-word-embeddings, --lora, --freeze-backbone)"
        ) from None
    scheduler.load_state_dict(blob["scheduler"])
    set_rng_state(blob["rng"])
    best = load_file(str(path / "best.safetensors")) if (path / "best.safetensors").is_file() else None
    return json.loads((path / "trainer_state.json").read_text(encoding="utf-8")), best
