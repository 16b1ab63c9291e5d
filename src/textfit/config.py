"""Typed run configuration: the single place where defaults live.

`TrainConfig` is both the Python API and the CLI: `cli.py` turns every field into a
`--flag-name` whose help is the field's `help` metadata. A YAML file given with
`--config` overrides the defaults, and flags override the file:

    cfg = load_config("configs/sst2-minilm.yaml", {"epochs": 1})
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from textfit.errors import UsageError
from textfit.textfiles import read_yaml_text


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


# --epochs by default: AUTO_EPOCHS passes, fewer where that would be far more than AUTO_EXAMPLES examples
AUTO_EPOCHS, AUTO_EXAMPLES = 3, 120_000


@dataclass
class TrainConfig:
    # data
    data: str | None = _f(
        None,
        "data file (CSV, TSV, JSON, JSONL, Parquet; the first four also .gz, .bz2, .xz, .zst), a "
        "datasets.save_to_disk folder, or a hub data set id",
    )
    data_config: str | None = _f(None, "hub data set configuration, e.g. 'mrpc' for 'glue'")
    train: str | None = _f(None, "training file (instead of --data)")
    validation: str | None = _f(None, "validation file")
    test: str | None = _f(None, "test file")
    text_column: str | None = _f(
        None, "text column: a name, or a 0-based index for headerless files (default: detected)"
    )
    text_pair_column: str | None = _f(None, "second text column for sentence-pair tasks (default: detected)")
    label_column: str | None = _f(None, "label column: a name or a 0-based index (default: detected)")
    task: str = _f(
        "auto",
        "classification, multi-label (a list of labels per row), regression (a number per row), or auto: "
        "lists of labels (or labels joined by , | or ; whose parts are labels too) are multi-label, "
        "non-integer numbers are regression, anything else classification",
    )
    label_separator: str | None = _f(
        None,
        "multi-label labels written as one string, e.g. 'sports|politics': the separator (default: JSON lists, or ',')",
    )
    encoding: str = _f("utf-8", "text encoding of the data files, e.g. gb18030 or latin-1")
    quoting: str = _f(
        "auto",
        "how quotes in CSV/TSV files are read: auto (TSVs quote-free, as GLUE writes them, unless the file only "
        "parses with quoted fields), none (a quote is a character of the text), standard (quoted fields may hold "
        "tabs, newlines and doubled quotes)",
    )
    split: str = _f("80,10,10", "train,validation,test percentages used when a split is missing")
    max_train_samples: int | None = _f(None, "train on a seeded random sample of this many rows (quick runs)")
    # model
    model: str | None = _f(None, "hub id or local folder of a checkpoint, or static (default: the packaged MiniLM)")
    max_length: int | None = _f(
        None,
        "truncate texts to this many tokens (default: 256, or the model's limit if lower); batches pad only to their "
        "longest text",
    )
    layers: int | None = _f(
        None,
        "keep this many of the model's encoder layers, evenly spaced, the first and the last among them (a smaller, "
        "faster model, initialised as DistilBERT's student was); the run is an ordinary model of that many layers",
    )
    freeze_layers: int | None = _f(
        None,
        "keep the embeddings and this many of the lowest encoder layers fixed while fine-tuning: each takes a layer's "
        "backward off every step; 0 trains them all (default: a third of the layers of a model under 50M parameters "
        "such as MiniLM, measured in benchmarks/RESULTS.md; 0 for larger ones)",
    )
    trust_remote_code: bool = _f(False, "allow model code from the hub to run (only for checkpoints you trust)")
    freeze_backbone: bool = _f(False, "train only the classification head, keeping the encoder frozen")
    lora: int | None = _f(
        None,
        "train LoRA adapters of this rank (PEFT) on the attention and a fully trained head, instead of every weight",
    )
    lora_alpha: float | None = _f(None, "LoRA scaling alpha (default: twice the rank)")
    lora_dropout: float = _f(0.1, "dropout on the LoRA adapters' input")
    attention_dropout: str = _f(
        "0",
        "dropout on the attention probabilities while training: a probability, or 'model' for the "
        "checkpoint's own value (often 0.1); 0 trains faster on long texts on CPU at the same accuracy "
        "(see benchmarks/RESULTS.md)",
    )
    freeze_word_embeddings: bool = _f(
        True,
        "keep the input word-embedding matrix fixed: faster steps on CPU for MiniLM, same accuracy (see "
        "benchmarks/RESULTS.md)",
    )
    # few labels (train/fewshot.py) and none (train/zeroshot.py)
    method: str = _f(
        "auto",
        "finetune (every weight, on the labels), contrastive (SetFit's method: the encoder tuned on pairs of rows "
        "with the same and with different labels, then a logistic-regression head on its mean-pooled vectors; BERT "
        "architectures), zero-shot (as --zero-shot), static (a static student, as --model static), distill (set by "
        "'textfit distill'), or auto: contrastive under 1,000 training rows, finetune above (measured in "
        "benchmarks/RESULTS.md); one module each in train/methods",
    )
    zero_shot: bool = _f(
        False,
        "no training: classify by the similarity of a text's embedding to each --label-description's; labelled "
        "--data, --validation or --test files only measure it (and fit its probability scale)",
    )
    label_description: list[str] | None = _f(
        None, "with --zero-shot, once per label: LABEL=DESCRIPTION, e.g. '1=a positive movie review'", append=True
    )
    self_train: bool = _f(
        False,
        "with --zero-shot and --data FILE of unlabelled texts: label them with the zero-shot model, then train on "
        "the most confident share of each label",
    )
    # long texts
    truncation: str = _f(
        "head",
        "what a text longer than --max-length keeps: head (its first tokens), tail (its last), "
        "or head+tail (the first quarter of the budget from the start, the rest from the end; best on IMDb)",
    )
    long_text: str = _f(
        "truncate",
        "truncate (one --truncation cut per text) or window: overlapping windows of --max-length tokens "
        "cover the whole text; training uses every window, prediction pools the windows' logits",
    )
    stride: int | None = _f(
        None, "tokens shared by consecutive windows with --long-text window (default: a quarter of --max-length)"
    )
    window_pool: str = _f("mean", "how --long-text window combines a text's window logits: mean or max")
    # optimisation
    learning_rate: float | None = _f(
        None,
        "peak learning rate of AdamW (default: 1.5e-4 for models under 50M parameters such as MiniLM, 3e-5 for "
        "larger ones such as BERT-base, 1e-3 with --freeze-backbone, 2e-3 with --lora)",
    )
    layer_lr_decay: float | None = _f(
        None,
        "layer-wise learning-rate decay: the head and the top encoder layer train at --learning-rate, each layer "
        "below at this factor times the rate of the one above, the embeddings lowest; 1 turns it off (default: 0.8 "
        "for models under 50M parameters such as MiniLM, measured on MRPC and SST-2 in benchmarks/RESULTS.md; 1 for "
        "larger ones and with --lora or --freeze-backbone)",
    )
    weight_decay: float = _f(0.01, "AdamW weight decay (not applied to biases and LayerNorm)")
    warmup_ratio: float = _f(0.1, "share of the steps used for linear warmup")
    warmup_steps: int = _f(0, "warmup steps (overrides --warmup-ratio when > 0)")
    ema_decay: float = _f(
        0.0,
        "keep an exponential moving average of the weights with this decay (e.g. 0.999, warmed up over the first "
        "updates); evaluations, the best checkpoint and the saved model use the average; 0 turns it off",
    )
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 turns it off)")
    gradient_accumulation_steps: int = _f(1, "accumulate gradients over this many batches per optimizer step")
    epochs: float | None = _f(
        None,
        "number of passes over the training data (default: 3, fewer for large training splits: about "
        f"{AUTO_EXAMPLES:,} examples seen at most, never under one pass; measured in benchmarks/RESULTS.md)",
    )
    max_steps: int | None = _f(None, "stop after this many optimizer steps (overrides --epochs)")
    batch_size: int | None = _f(None, "training batch size per process (default: 16; 256 for --student static)")
    eval_batch_size: int = _f(64, "evaluation and prediction batch size")
    class_weights: str = _f(
        "none",
        "weights of the classes in the loss: none, auto (inversely proportional to their frequency in "
        "the training split), or one number per class in label order, e.g. 1,2.5",
    )
    tune_threshold: bool = _f(
        False,
        "binary classification: choose the decision threshold on the positive class's probability that "
        "maximises --metric-for-best-model on the validation split, and store it with the model "
        "(multi-label runs always tune one threshold per label)",
    )
    calibration: str = _f(
        "auto",
        "temperature: fit temperature scaling on the validation split after training so that probabilities "
        "match how often the model is right (predicted labels do not change); none: raw probabilities; auto: "
        "temperature for classification and multi-label runs that have a validation split",
    )
    precision: str = _f("auto", "auto (bf16 where the hardware supports it), bf16, fp16 or fp32")
    device: str = _f("auto", "auto (a CUDA GPU, else Apple's MPS, else the CPU), cuda, mps or cpu")
    # evaluation and checkpoints
    eval_steps: int | None = _f(None, "evaluate every N optimizer steps (default: at the end of each epoch)")
    logging_steps: int | None = _f(
        None,
        "log loss and learning rate every N optimizer steps (default: about 25 points per run, at most every 50 steps)",
    )
    metric_for_best_model: str | None = _f(
        None,
        "validation metric that picks the best checkpoint and drives early stopping "
        "(default: accuracy; f1_micro for multi-label; mse for regression)",
    )
    early_stopping_patience: int | None = _f(None, "stop after this many evaluations without improvement")
    load_best_model_at_end: bool = _f(True, "restore the best evaluated weights before saving")
    seed: int = _f(42, "random seed: two runs with the same seed are identical")
    seeds: str | None = _f(
        None,
        "train once per seed, e.g. 1,2,3, into OUTPUT/seed-N, on the same data split, and report every metric's mean "
        "and standard deviation",
    )
    split_seed: int | None = _f(
        None,
        "seed of the validation/test split made from the training data and of --max-train-samples (default: --seed; "
        "with --seeds, the first seed)",
    )
    # checkpoints and reproducibility
    save_steps: int | None = _f(None, "write a checkpoint-STEP folder into the run folder every N optimizer steps")
    save_total_limit: int | None = _f(None, "keep only the newest K checkpoints")
    resume: str | None = _f(
        None,
        "continue from the latest complete checkpoint of --output (--resume), or from PATH (--resume PATH)",
        optional_const="latest",
    )
    deterministic: bool = _f(False, "use PyTorch's deterministic algorithms (slower on some GPUs)")
    # output
    output: str | None = _f(None, "run folder (default: runs/<data name>, numbered if it exists)")
    overwrite: bool = _f(False, "replace an existing run folder")
    label_names: str | None = _f(None, "comma-separated names for integer labels 0,1,..., e.g. negative,positive")
    # the Hugging Face workflow
    report_to: str = _f(
        "none",
        "experiment trackers, comma-separated: tensorboard (event files in the run folder), mlflow, wandb "
        "(offline unless WANDB_MODE says otherwise), trackio, or none; log.jsonl is always written",
    )
    tracking_uri: str | None = _f(None, "MLflow tracking URI (default: the SQLite file mlflow.db in the run folder)")
    push_to_hub: str | None = _f(
        None, "after training, upload the run (model, tokenizer, model card) to this Hub repository, e.g. user/name"
    )

    # distillation: `textfit distill TEACHER` (train/distill.py)
    teacher: str | None = _f(None, "the teacher: a run folder, or a --seeds folder (its runs averaged)", distill=True)
    unlabeled: list[str] | None = _f(
        None, "files of texts without labels that the student learns from the teacher alone", distill=True, nargs="+"
    )
    teacher_predictions: str | None = _f(
        None,
        "an earlier distillation's run folder (or its teacher_predictions.safetensors) whose teacher predictions to "
        "reuse: same teacher, texts and split, so the teacher does not predict them again",
        distill=True,
    )
    alpha: float = _f(
        0.5,
        "share of the loss from the gold labels on labelled rows; the rest follows the teacher (measured in "
        "benchmarks/RESULTS.md)",
        distill=True,
    )
    distill_temperature: float = _f(
        2.0,
        "temperature that softens the teacher's and the student's distributions in the teacher's loss",
        distill=True,
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEFAULT_MAX_LENGTH = 256
SMALL_MODEL_PARAMS = 50e6  # below this, the default learning rate is SMALL_MODEL_LR, else LARGE_MODEL_LR
SMALL_MODEL_LR, LARGE_MODEL_LR = 1.5e-4, 3e-5
SMALL_MODEL_LAYER_DECAY = 0.8  # the default --layer-lr-decay under SMALL_MODEL_PARAMS (benchmarks/RESULTS.md)
FROZEN_LR = 1e-3  # the default with --freeze-backbone: only the head learns
LORA_LR = 2e-3  # the default with --lora: the best of the rates measured for MiniLM's adapters (benchmarks/RESULTS.md)
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def from_flags(args: Any) -> TrainConfig:
    """The TrainConfig of a command's parsed flags (the --config file, then the flags): built once per command
    and kept on `args`, so the command and the checks before it read the same one."""
    cfg = getattr(args, "train_config", None)
    if cfg is None:
        overrides = {k: v for k, v in vars(args).items() if k in FIELDS}  # `distill TEACHER`: the teacher too
        cfg = load_config(getattr(args, "config", None), overrides)
        args.train_config = cfg
    return cfg


def load_config(path: str | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults from code, then the YAML file at `path`, then `overrides`."""
    values: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise UsageError(f"--config {path}: no such file")
        try:
            loaded = yaml.safe_load(read_yaml_text(f"--config {path}", p)) or {}
        except yaml.YAMLError as e:
            raise UsageError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--config {path}: expected a mapping of option: value")
        for key, value in loaded.items():
            name = str(key).replace("-", "_")
            if name not in FIELDS:
                raise UsageError(f"--config {path}: unknown option '{key}'; known options: {', '.join(sorted(FIELDS))}")
            values[name] = value
    values.update(overrides)
    cfg = TrainConfig(**values)
    _check(cfg)
    return cfg


def _check(cfg: TrainConfig) -> None:
    for name, f in FIELDS.items():
        value = getattr(cfg, name)
        if value is None:
            continue
        kind = f.type if isinstance(f.type, str) else str(f.type)
        flag = "--" + name.replace("_", "-")
        if kind.startswith("int") and not (isinstance(value, int) and not isinstance(value, bool)):
            raise UsageError(f"{flag}: expected an integer, got {value!r}")
        if kind.startswith("float") and not isinstance(value, (int, float)):
            raise UsageError(f"{flag}: expected a number, got {value!r}")
        if kind.startswith("float") and not math.isfinite(value):
            raise UsageError(f"{flag}: expected a finite number, got {value!r}")
        if kind == "bool" and not isinstance(value, bool):
            raise UsageError(f"{flag}: expected true or false, got {value!r}")
        if kind.startswith("str") and not isinstance(value, str):
            setattr(cfg, name, str(value))
        if kind.startswith("list"):
            setattr(cfg, name, [str(v) for v in (value if isinstance(value, list) else [value])])
    for name in ("eval_batch_size", "gradient_accumulation_steps"):
        if getattr(cfg, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')}: must be at least 1")
    at_least_one = ("max_length", "logging_steps", "max_steps", "eval_steps", "max_train_samples", "layers")
    for name in (*at_least_one, "batch_size", "early_stopping_patience", "save_steps", "save_total_limit"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')}: must be at least 1")
    if not 0 <= cfg.seed < 2**32 or (cfg.split_seed is not None and not 0 <= cfg.split_seed < 2**32):
        raise UsageError(f"--seed {cfg.seed}: expected an integer from 0 to {2**32 - 1}")
    if cfg.weight_decay < 0 or cfg.max_grad_norm < 0:
        raise UsageError("--weight-decay and --max-grad-norm: must be 0 or more")
    if cfg.warmup_steps < 0:
        raise UsageError("--warmup-steps: must be 0 or more")
    if cfg.epochs is not None and cfg.epochs <= 0:
        raise UsageError("--epochs: must be positive")
    if cfg.learning_rate is not None and cfg.learning_rate <= 0:
        raise UsageError("--learning-rate: must be positive")
    if not 0 <= cfg.warmup_ratio < 1:
        raise UsageError("--warmup-ratio: must be in [0, 1)")
    if cfg.precision not in ("auto", "bf16", "fp16", "fp32"):
        raise UsageError(f"--precision: '{cfg.precision}' is not one of auto, bf16, fp16, fp32")
    choices = {
        "task": ("auto", "classification", "multi-label", "regression"),
        "truncation": ("head", "tail", "head+tail"),
        "long_text": ("truncate", "window"),
        "window_pool": ("mean", "max"),
        "device": ("auto", "cuda", "mps", "cpu"),
        "calibration": ("auto", "temperature", "none"),
        "quoting": ("auto", "none", "standard"),
    }
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise UsageError(f"--{name.replace('_', '-')}: '{getattr(cfg, name)}' is not one of {', '.join(allowed)}")
    if not 0 <= cfg.alpha <= 1 or cfg.distill_temperature <= 0:
        raise UsageError("--alpha must be in [0, 1] (e.g. 0.5) and --distill-temperature above 0 (e.g. 2)")
    if not 0 <= cfg.ema_decay < 1:
        raise UsageError(f"--ema-decay {cfg.ema_decay}: expected a decay in [0, 1), e.g. 0.999 (0 turns it off)")
    if cfg.layer_lr_decay is not None and not 0 < cfg.layer_lr_decay <= 1:
        raise UsageError(
            f"--layer-lr-decay {cfg.layer_lr_decay}: expected a factor in (0, 1], e.g. 0.8 (1 turns it off)"
        )
    if cfg.lora is not None and cfg.lora < 1:
        raise UsageError("--lora: the rank must be at least 1, e.g. --lora 8")
    if cfg.lora is not None and cfg.freeze_backbone:
        raise UsageError(
            "--lora and --freeze-backbone both given: LoRA already trains only adapters and the head; use one of them"
        )
    if not 0 <= cfg.lora_dropout < 1:
        raise UsageError("--lora-dropout: must be in [0, 1)")
    attention_dropout(cfg.attention_dropout)
    if cfg.stride is not None and cfg.stride < 0:
        raise UsageError("--stride: must be 0 or more")
    parse_seeds(cfg.seeds)
    if cfg.data is not None and cfg.train is not None:
        raise UsageError("--data and --train both given: use one of them")
    split_percentages(cfg.split)
    report_to(cfg.report_to)


# Parsers of the flags whose values are small languages (tracker lists, seed lists, split shares, attention
# dropout): one function each, used by `_check` and by the commands that take the same flags.
TRACKERS = ("tensorboard", "mlflow", "wandb", "trackio")


def report_to(text: str) -> list[str]:
    """--report-to as a list of trackers (empty for none)."""
    names = [x.strip() for x in str(text).split(",") if x.strip()]
    unknown = [x for x in names if x not in (*TRACKERS, "none")]
    if unknown or not names or ("none" in names and len(names) > 1):
        raise UsageError(
            f"--report-to {text}: expected none or trackers among {', '.join(TRACKERS)}, e.g. tensorboard,mlflow"
        )
    return [x for x in names if x != "none"]


def attention_dropout(text: str) -> float | None:
    """--attention-dropout as a probability, or None for the checkpoint's own value ('model')."""
    if str(text) == "model":
        return None
    try:
        p = float(text)
    except ValueError:
        p = -1.0
    if not 0 <= p < 1:
        raise UsageError(
            f"--attention-dropout {text}: expected a probability in [0, 1), e.g. 0.1, or 'model' for the "
            "checkpoint's own value"
        )
    return p


def parse_seeds(text: str | None) -> list[int]:
    if text is None:
        return []
    try:
        seeds = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text}: expected distinct integers separated by commas, e.g. 1,2,3")
    return seeds


def split_percentages(text: str) -> tuple[float, float, float]:
    try:
        parts = [float(x) for x in str(text).split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or any(not math.isfinite(p) or p < 0 for p in parts) or parts[0] <= 0:
        raise UsageError(f"--split {text}: expected three percentages train,validation,test such as 80,10,10")
    if abs(sum(parts) - 100) > 1e-6 and abs(sum(parts) - 1) > 1e-9:
        raise UsageError(f"--split {text}: the three parts add up to {sum(parts):g}, not 100; e.g. --split 80,10,10")
    total = sum(parts)
    return parts[0] / total, parts[1] / total, parts[2] / total
