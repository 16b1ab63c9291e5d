"""Set-up of a training run: data, model, optimizer and schedule -> a `TrainState` for `loop.fit`.

Everything that can fail on the user's input is checked here, before any file is written.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from textfit import accel
from textfit.config import AUTO_EPOCHS, AUTO_EXAMPLES, DEFAULT_MAX_LENGTH, TrainConfig, report_to
from textfit.config import attention_dropout as parse_attention_dropout
from textfit.data import (
    EncodedDataset,
    LengthGroupedBatches,
    TrainingData,
    encode_long,
    load_data,
    make_collate,
    width_plan,
)
from textfit.errors import UsageError
from textfit.evaluate.inspect import analyse, describe_labels, label_namer
from textfit.hub import DEFAULT_MODEL_NAME, check_hub_access, resolve_model
from textfit.metrics import LOWER_IS_BETTER, class_weight_vector, loss_function
from textfit.models.transformer import add_lora, head_parameter_names, load_for_training, max_positions, start_at_mean
from textfit.run import LongText, RunManifest, library_versions
from textfit.train import methods
from textfit.train.checks import check_options
from textfit.train.ema import WeightAverage
from textfit.train.folder import output_folder
from textfit.train.optim import adamw, freeze_layers
from textfit.train.tracking import check_installed
from textfit.version import __version__

if TYPE_CHECKING:
    from textfit.train.methods.distill import Distillation

PRECISION_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}  # the autocast dtype as the run says it


@dataclass
class TrainState:
    """What the loop needs, and where it is: the step counters change as it runs."""

    cfg: TrainConfig
    accelerator: Any
    data: TrainingData
    manifest: RunManifest  # filled in by `finish` (threshold, metrics, statistics)
    model: Any  # the Hugging Face model (a PEFT wrapper with --lora), not prepared by Accelerate
    tokenizer: Any
    trainable: Any  # what the loop calls: the prepared model, or the head over cached features
    optimizer: Any
    scheduler: Any
    train_dl: Any
    sampler: LengthGroupedBatches
    compute_loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, labels, item index)
    metric: str
    out: Path
    total_steps: int
    steps_per_epoch: int
    eval_every: int
    log_every: int
    clip_in_step: bool
    amp: torch.dtype | None
    model_path: str = ""
    data_report: dict[str, Any] = field(default_factory=dict)  # inspect's analysis, written as data_report.json
    # --freeze-backbone: the cached vectors of the validation and test splits (and their window -> text map)
    features: dict[str, tuple[torch.Tensor, Any]] = field(default_factory=dict)
    features_seconds: float = 0.0
    t_start: float = field(default_factory=time.time)
    distillation: Distillation | None = None  # textfit distill: the teacher's scores and the loss to them
    method: Any = None  # the training method's module (train/methods), which the spine asks its questions
    ema: WeightAverage | None = None  # --ema-decay: the average that evaluations and the saved model use
    resolved: dict[str, Any] = field(default_factory=dict)  # defaults decided for this run: rate, decay, epochs...
    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0

    @property
    def sign(self) -> float:
        return -1.0 if self.metric in LOWER_IS_BETTER else 1.0

    def say(self, text: str) -> None:
        self.accelerator.print(text)

    def recipe(self) -> dict[str, Any]:
        """The flags with the values this run resolved for those left to textfit (for the card and trackers)."""
        return {**self.cfg.to_dict(), **self.resolved}


def _accelerator(cfg: TrainConfig, fp32: bool) -> tuple[Any, torch.dtype | None]:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import set_seed

    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    device_type = accel.pick_device(cfg.device)
    amp = None if fp32 else accel.autocast_dtype(cfg.precision, torch.device(device_type))  # the method's FP32
    mixed = {None: "no", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp]
    # A second train() in one Python process (a notebook, the tests) may use another precision:
    # Accelerate keeps its state per process, so start from a clean one (the process group stays).
    AcceleratorState._reset_state()
    GradientState._reset_state()
    # cpu=True on a machine without a GPU: Accelerate then runs torchrun/accelerate-launch
    # processes as one gloo group (MULTI_CPU) instead of independent single processes.
    accelerator = Accelerator(
        mixed_precision=mixed, gradient_accumulation_steps=cfg.gradient_accumulation_steps, cpu=device_type == "cpu"
    )
    set_seed(cfg.seed)
    return accelerator, amp


def calibrates(cfg: TrainConfig, data: TrainingData) -> bool:
    """Whether the run fits a temperature after training (see --calibration)."""
    usable = data.schema.task != "regression" and "validation" in data.splits
    return cfg.calibration == "temperature" or (cfg.calibration == "auto" and usable)


def _prepare_model(cfg: TrainConfig, model: Any, data: TrainingData, method: Any, say: Any) -> tuple[Any, int]:
    """Regression bias, LoRA, frozen parts: the model whose trainable parameters the optimizer gets, and how many
    of its lowest layers are kept fixed (--freeze-layers)."""
    if data.schema.task == "regression":
        start_at_mean(model, float(np.mean(data.splits["train"].labels)))
    if cfg.lora:
        model = add_lora(model, cfg.lora, cfg.lora_alpha, cfg.lora_dropout)
    elif cfg.freeze_backbone:
        head = head_parameter_names(model)
        for n, p in model.named_parameters():
            p.requires_grad = n in head
    if cfg.freeze_word_embeddings and not cfg.lora and methods.hook(method, "LAYERS"):  # not a model of vectors
        # Half of a small encoder's parameters, hardly moved by fine-tuning: its dense gradient,
        # clipping and AdamW update cost a large share of each step (benchmarks/RESULTS.md).
        model.get_input_embeddings().weight.requires_grad = False
    return model, freeze_layers(cfg, model, method, say)


def _describe(
    s: Callable[[str], None],
    cfg: TrainConfig,
    data: TrainingData,
    report: dict[str, Any],
    model: Any,
    accelerator: Any,
    amp: torch.dtype | None,
    weights: torch.Tensor | None,
) -> None:
    schema = data.schema
    for note in data.notes:
        s(f"textfit: {note}")
    for p in report["problems"]:
        s(f"textfit: {p['level']}: {p['message']}")
    for name, split in data.splits.items():
        s(
            f"textfit: {name}: {len(split.labels)} rows "
            f"({describe_labels(schema.task, split.labels, schema.label_names)})"
        )
    if weights is not None:
        shown = ", ".join(f"{n} {w:.3g}" for n, w in zip(schema.label_names, weights.tolist()))
        s(f"textfit: class weights in the loss: {shown}")
    precision = PRECISION_NAMES[amp]
    kind = f" ({accel.describe_cpu()})" if accelerator.device.type == "cpu" else ""
    s(
        f"textfit: model {cfg.model or 'all-MiniLM-L6-v2 (packaged)'}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
        f"parameters, precision {precision}, device {accelerator.device}{kind}, "
        f"{accelerator.num_processes} process(es)"
    )


def _load_model(cfg: TrainConfig, data: TrainingData, path: str, say: Any) -> tuple[str, Any, Any]:
    """The checkpoint at `path` with a new head (a method that builds its own model says how in its `build`)."""
    dropout = parse_attention_dropout(cfg.attention_dropout)
    model, tokenizer = load_for_training(
        path, data.schema.label_names, cfg.trust_remote_code, data.schema.task, dropout, cfg.layers
    )
    return path, model, tokenizer


def setup(cfg: TrainConfig, data: TrainingData | None = None) -> TrainState:
    """Data (read from cfg's files unless given), model, optimizer and schedule for `cfg`; nothing is
    written yet."""
    from transformers import get_linear_schedule_with_warmup

    t_start = time.time()
    asked = methods.check(cfg)  # the method's refusals of flags; None: --method auto, decided on the data below
    if cfg.batch_size is None:
        cfg.batch_size = (asked and methods.hook(asked, "BATCH_SIZE")) or 16
    accelerator, amp = _accelerator(cfg, bool(asked and methods.hook(asked, "FP32")))
    if accelerator.device.type == "cpu":
        accel.tune_allocator()  # before the data and the model are allocated: they come from the kept heap
    say = accelerator.print
    check_installed(report_to(cfg.report_to))
    if cfg.push_to_hub:
        check_hub_access(cfg.push_to_hub)
    read_data = asked and methods.hook(asked, "read_data")
    data = data if data is not None else read_data(cfg) if read_data else load_data(cfg)
    build = asked and methods.hook(asked, "build")
    model_path = None if build else resolve_model(cfg.model)
    out = output_folder(cfg)
    metric = check_options(cfg, data)
    schema, splits = data.schema, data.splits
    weights = class_weight_vector(cfg.class_weights, splits["train"].labels, schema.label_names, schema.task)
    long = LongText(cfg.truncation, cfg.long_text, cfg.stride, cfg.window_pool)
    model_path, model, tokenizer = build(cfg, data, say) if build else _load_model(cfg, data, str(model_path), say)
    method, why = methods.pick(cfg, data, model, accelerator.num_processes)
    loop = methods.hook(method, "LOOP")
    cpu = accelerator.device.type == "cpu"
    accel.enable(model, "train", accelerator.device)
    limit = max_positions(model.config, tokenizer)
    if cfg.max_length is not None and cfg.max_length > limit:
        raise UsageError(
            f"--max-length {cfg.max_length}: the model accepts at most {limit} tokens; pass --max-length {limit} or "
            "less"
        )
    max_length = cfg.max_length or min(DEFAULT_MAX_LENGTH, limit)
    # --teacher: checked, and its scores for every training text, before the data is described
    teacher = methods.hook(method, "teacher")
    distillation = teacher(cfg, data, out if out.is_dir() else None, say) if teacher else None
    report = analyse(splits, tokenizer, max_length, label_namer(schema.task, schema.label_names))
    _describe(say, cfg, data, report, model, accelerator, amp, weights)

    # Token ids once; batches of similar length, padded per batch.
    train = splits["train"]
    enc, doc = encode_long(tokenizer, train.texts, train.pairs, max_length, long)
    train_ds = EncodedDataset(enc, [train.labels[d] for d in doc])
    if long.mode == "window":
        say(
            f"textfit: --long-text window: {len(train_ds)} windows of up to {max_length} tokens from "
            f"{len(train.texts)} training texts, {long.window_stride(max_length)} tokens shared, "
            f"logits pooled by {long.pool}"
        )
    sampler = LengthGroupedBatches(
        train_ds.lengths, cfg.batch_size, cfg.seed, share_widths=width_plan(accelerator.device.type, amp)
    )
    # The loader has a generator of its own: starting an iteration then never draws from the
    # global RNG that dropout uses, so a resumed run replays the same dropout masks.
    train_dl = torch.utils.data.DataLoader(
        train_ds,
        batch_sampler=sampler,
        collate_fn=make_collate(tokenizer, train_ds, sampler.widths),
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    model, frozen = _prepare_model(cfg, model, data, method, say)
    # no optimizer of the loop's where the method fits the model itself: its rates would only mislead
    optimizer, resolved = adamw(cfg, model, accelerator.device, method, say if loop else (lambda _: None))
    manifest = RunManifest(
        schema=schema,
        max_length=max_length,
        long_text=long,
        class_weights=None if weights is None else weights.tolist(),
        base_model=cfg.model or DEFAULT_MODEL_NAME,
        trust_remote_code=cfg.trust_remote_code,
        seed=cfg.seed,
        data_fingerprint=data.fingerprint,
        data_warnings=[p["message"] for p in report["problems"]],
        precision=PRECISION_NAMES[amp],
        num_processes=accelerator.num_processes,
        versions=library_versions(),
        textfit_version=__version__,
    )
    state = TrainState(
        cfg=cfg,
        accelerator=accelerator,
        data=data,
        manifest=manifest,
        model=model,
        tokenizer=tokenizer,
        trainable=model,
        optimizer=optimizer,
        scheduler=None,
        train_dl=train_dl,
        sampler=sampler,
        compute_loss=(
            distillation.loss(schema.task, np.asarray(doc), cfg.alpha, cfg.distill_temperature, weights)
            if distillation is not None
            else _ignore_index(loss_function(schema.task, weights))
        ),
        distillation=distillation,
        method=method,
        metric=metric,
        out=out,
        model_path=model_path,
        data_report=report,
        total_steps=0,
        steps_per_epoch=0,
        eval_every=0,
        log_every=0,
        amp=amp,
        t_start=t_start,
        resolved={**resolved, "precision": manifest.precision, "method": method.NAME, "freeze_layers": frozen},
        # CPU, one process or several over gloo, no loss scaler: the clip is done inside the fused AdamW step
        clip_in_step=cpu and accelerator.scaler is None and accelerator.distributed_type in ("NO", "MULTI_CPU"),
    )
    say(f"textfit: method {method.NAME} ({why})")
    if not loop and cfg.save_steps:
        say(
            f"textfit: --save-steps: the {method.NAME} method fits without the training loop, in one pass, and "
            "writes no checkpoints; the flag is left aside"
        )
    if (fit := methods.hook(method, "fit")) is not None:
        fit(state)  # a method that fits without the loop does it here; others prepare what the loop reads
    state.trainable, state.optimizer, state.train_dl = accelerator.prepare(state.trainable, optimizer, state.train_dl)
    _schedule(state, resolved["learning_rate"], get_linear_schedule_with_warmup)
    if not loop:  # the method has fitted the model: the loop only evaluates
        state.total_steps = 0
    if cfg.ema_decay:
        state.ema = WeightAverage(model, cfg.ema_decay)
    return state


def _ignore_index(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Any:
    return lambda logits, y, _ix: loss(logits, y)


def auto_epochs(examples: int) -> int:
    """--epochs when it is not given: AUTO_EPOCHS passes, fewer on large training splits, so that a run
    sees about AUTO_EXAMPLES examples (rounded to whole passes, at least one). SST-2's 53,880 training
    rows get 2 passes: dev accuracy 2 passes vs 3 measured in benchmarks/RESULTS.md."""
    return max(1, min(AUTO_EPOCHS, round(AUTO_EXAMPLES / max(1, examples))))


def _schedule(s: TrainState, lr: float, make: Any) -> None:
    """The learning-rate schedule and the evaluation and logging intervals, in optimizer steps of
    this process (its shard of the batches)."""
    cfg = s.cfg
    s.steps_per_epoch = max(1, math.ceil(len(s.train_dl) / cfg.gradient_accumulation_steps))
    examples = len(s.train_dl.dataset)  # type: ignore[arg-type]
    epochs = cfg.epochs if cfg.epochs is not None else methods.hook(s.method, "EPOCHS") or auto_epochs(examples)
    s.total_steps = cfg.max_steps or math.ceil(epochs * s.steps_per_epoch)
    s.resolved["epochs"] = round(s.total_steps / s.steps_per_epoch, 2) if cfg.max_steps else epochs
    warmup = cfg.warmup_steps or int(cfg.warmup_ratio * s.total_steps)
    s.scheduler = make(s.optimizer, warmup, s.total_steps)
    s.eval_every = cfg.eval_steps or s.steps_per_epoch
    s.log_every = cfg.logging_steps or max(1, min(50, s.total_steps // 25))
    global_batch = cfg.batch_size * s.accelerator.num_processes * cfg.gradient_accumulation_steps
    kind = methods.hook(s.method, "DEFAULTS_FOR")
    default = "" if cfg.learning_rate else f" (default for {kind})"
    why = "" if cfg.epochs is not None or cfg.max_steps else f", the default for {examples:,} training examples"
    why = f", the default for {kind}" if why and methods.hook(s.method, "EPOCHS") else why
    if not methods.hook(s.method, "LOOP"):
        return
    s.say(
        f"textfit: {s.total_steps} steps of {global_batch} examples ({s.total_steps / s.steps_per_epoch:.2f} epochs"
        f"{why}), "
        f"learning rate {lr:g}{default} with {warmup} warmup steps, evaluation every {s.eval_every} steps"
    )
