"""Models in and out: a checkpoint with a new head for training, a run's model for prediction.

    model, tokenizer = load_for_training(path, ["negative", "positive"])
    model, tokenizer = load_from_run(Run.open("runs/sst2"))        # the merged weights
    model, tokenizer = load_adapter(Run.open("runs/sst2-lora"))    # a LoRA run's base and adapter

Weights are read from safetensors only: nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from textfit.errors import UsageError
from textfit.hub import default_model_path, resolve_model
from textfit.run import Run

PROBLEM_TYPES = {
    "classification": "single_label_classification",
    "multi-label": "multi_label_classification",
    "regression": "regression",
}
# The configuration keys that hold the dropout on attention probabilities, by model family:
# BERT, RoBERTa, ELECTRA, DeBERTa, MPNet; DistilBERT, ModernBERT, Funnel; GPT-2.
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")


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


def max_positions(config: Any, tokenizer: Any) -> int:
    """The longest input the model accepts, in tokens."""
    limit = getattr(config, "max_position_embeddings", None) or 512
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "longformer"):
        limit -= 2  # their position ids start after the padding index
    tok = getattr(tokenizer, "model_max_length", None)
    return min(limit, tok) if tok and tok < 1_000_000 else limit


def load_for_training(
    path: str,
    label_names: list[str],
    trust_remote_code: bool = False,
    task: str = "classification",
    attention_dropout: float | None = None,
    layers: int | None = None,
) -> tuple[Any, Any]:
    """The checkpoint with a new head for `label_names`; `attention_dropout` (when not None)
    replaces the configuration's dropout on attention probabilities; `layers`: keep that many of the
    encoder's layers (`keep_layers`)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    overrides: dict[str, Any] = {}
    if attention_dropout is not None:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        overrides = {
            k: attention_dropout for k in ATTENTION_DROPOUT_KEYS if isinstance(getattr(config, k, None), (int, float))
        }
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        problem_type=PROBLEM_TYPES[task],
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)},
        ignore_mismatched_sizes=True,  # a checkpoint fine-tuned for other labels gets a new head
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
        **overrides,
    )
    if layers is not None:
        keep_layers(model, layers)
    return model, tokenizer


def encoder_layers(model: Any) -> torch.nn.ModuleList:
    """The encoder's stack of layers: the ModuleList inside the base model as long as the configuration's
    num_hidden_layers (BERT, RoBERTa, MPNet, ELECTRA: encoder.layer; DistilBERT: transformer.layer)."""
    n = getattr(model.config, "num_hidden_layers", None)
    for _name, module in model.base_model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise UsageError(f"--layers: cannot find the encoder's {n} layers in a {type(model).__name__}; train without it")


def keep_layers(model: Any, k: int) -> list[int]:
    """Keep `k` evenly spaced layers of the encoder, the first and the last among them (as DistilBERT
    and TinyBERT initialise their students from a deeper model), in place; the configuration says `k`,
    so `save_pretrained` writes an ordinary model of `k` layers. Returns the kept layers' indices."""
    stack = encoder_layers(model)
    n = len(stack)
    if not 1 <= k <= n:
        raise UsageError(f"--layers {k}: the model has {n} layers; pass a number from 1 to {n}")
    kept = sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)}) if k > 1 else [n - 1]
    for i in reversed(range(n)):
        if i not in kept:
            del stack[i]  # the list numbers the rest 0..k-1, as the saved weights name them
    model.config.num_hidden_layers = k
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = [model.config.layer_types[i] for i in kept]
    return kept


def require_safetensors(folder: str | Path, name: str = "model", where: str = "the run folder") -> None:
    """The one refusal of pickled weights, wherever weights are read (a run, its adapter, an export's
    source): NAME.safetensors (or its shards) must be there; a folder with only pickles is named so."""
    f = Path(folder)
    if (f / f"{name}.safetensors").is_file() or any(f.glob(f"{name}-*.safetensors")):
        return
    pickles = [p.name for p in f.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")] if f.is_dir() else []
    found = f" (only {', '.join(pickles)}, which textfit never unpickles)" if pickles else ""
    raise UsageError(f"{folder}: no {name}.safetensors in {where}{found}; retrain the run or restore its weights")


def load_from_run(run: Run | str | Path) -> tuple[Any, Any]:
    """The run's model (in evaluation mode) and tokenizer; a static student's (`run.kind`) through static.py."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from textfit.models import static

    run = Run.open(run)
    if run.kind == static.NAME:
        return static.load(run.path)
    folder = run.path
    require_safetensors(folder)
    quiet_transformers()
    remote = run.manifest.trust_remote_code  # recorded at training: the run loads as it was trained
    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=remote)
    try:  # SDPA predicts fastest where the architecture has it
        model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), use_safetensors=True, attn_implementation="sdpa", trust_remote_code=remote
        )
    except (ValueError, ImportError):
        model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), use_safetensors=True, trust_remote_code=remote
        )
    return model.eval(), tokenizer


def inference_copy(model: Any) -> Any:
    """A copy of a model being trained, as `load_from_run` would load it once saved: adapters
    merged, SDPA attention, evaluation mode. Training's evaluations predict with it, so that they
    run exactly the computation `textfit eval` runs on the saved run."""
    import copy

    from textfit.accel import release

    snapshot = copy.deepcopy(model)
    release(snapshot)  # a copy made inside `steady` keeps its layer norms, bound to the original's weights
    if "_original_forward" in snapshot.__dict__:  # Accelerate's autocast wrapper: the run has none
        del snapshot.__dict__["forward"], snapshot.__dict__["_original_forward"]
    if hasattr(snapshot, "peft_config"):
        snapshot = snapshot.merge_and_unload()
    if hasattr(snapshot, "set_attn_implementation"):
        try:
            snapshot.set_attn_implementation("sdpa")
        except (ValueError, ImportError, NotImplementedError):
            pass
    return snapshot.eval()


def load_adapter(run: Run) -> tuple[Any, Any]:
    """A LoRA run as trained: its base model with the adapter (and trained head) from RUN/adapter."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    manifest = run.manifest
    lora = manifest.lora
    if lora is None or not (run.path / lora.adapter).is_dir():
        raise UsageError(f"--adapter: {run} was not trained with --lora (no adapter folder); load it without --adapter")
    require_safetensors(run.path / lora.adapter, "adapter_model", "the run's adapter folder")
    base_path = lora.base_model_path or default_model_path()
    if not Path(base_path).is_dir():
        base_path = resolve_model(manifest.base_model)
    base, _ = load_for_training(  # a fresh head, as training began
        base_path, manifest.label_names, manifest.trust_remote_code, task=manifest.task
    )
    with quiet_peft():
        model = PeftModel.from_pretrained(base, str(run.path / lora.adapter))
    return model.eval(), AutoTokenizer.from_pretrained(str(run.path), trust_remote_code=manifest.trust_remote_code)


def head_parameter_names(model: Any) -> set[str]:
    """The classification head: every parameter outside the encoder, plus its pooler."""
    base = model.base_model_prefix
    return {n for n, _ in model.named_parameters() if not n.startswith(base + ".") or n.startswith(base + ".pooler.")}


LAYER_INDEX = re.compile(r"\.(?:layer|layers|block|blocks)\.(\d+)\.")


def layer_depths(model: Any) -> dict[str, int]:
    """How far below the top each parameter sits, for layer-wise learning-rate decay: 0 for the head, the
    pooler and the top encoder layer, k for the layer k below the top, one more than the lowest layer for
    the embeddings (and anything else inside the encoder that is not a numbered layer)."""
    head = head_parameter_names(model)
    index = {n: int(m.group(1)) for n, _ in model.named_parameters() if (m := LAYER_INDEX.search(n)) and n not in head}
    top = max(index.values(), default=-1)
    return {n: 0 if n in head else top - index[n] if n in index else top + 1 for n, _ in model.named_parameters()}


def start_at_mean(model: Any, mean: float) -> None:
    """Regression: the output layer's bias starts at the mean target, so training learns the
    variation around it instead of first spending its steps (or collapsing) on the offset."""
    head = head_parameter_names(model)
    for name, module in reversed(list(model.named_modules())):
        is_out = isinstance(module, torch.nn.Linear) and module.out_features == 1 and module.bias is not None
        if is_out and f"{name}.weight" in head:
            with torch.no_grad():
                module.bias.fill_(mean)
            return


def add_lora(model: Any, rank: int, alpha: float | None, dropout: float) -> Any:
    """Wrap the model with PEFT LoRA adapters; the head (classifier and pooler) is trained fully
    and saved with them."""
    from peft import LoraConfig, TaskType, get_peft_model

    head = sorted({n.rsplit(".", 1)[0] for n in head_parameter_names(model)})
    kw: dict[str, Any] = dict(
        task_type=TaskType.SEQ_CLS, r=rank, lora_alpha=alpha or 2 * rank, lora_dropout=dropout, modules_to_save=head
    )
    with quiet_peft():
        try:
            return get_peft_model(model, LoraConfig(**kw))
        except ValueError:  # an architecture PEFT has no default target modules for: every linear layer
            return get_peft_model(model, LoraConfig(target_modules="all-linear", **kw))
