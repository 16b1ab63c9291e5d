"""The training loop: `fit(state, evaluator, log, work)`, top to bottom.

forward -> loss -> backward -> clip -> step -> schedule -> log -> evaluate -> checkpoint, once per
optimizer step, on Accelerate (one process, or several under `accelerate launch`). SIGTERM and
Ctrl-C end training at the next step boundary, after a checkpoint.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from textfit.accel import governor_for, steady
from textfit.errors import Interrupted, UsageError
from textfit.train.checkpoint import load_average, save_checkpoint
from textfit.train.ema import WeightAverage
from textfit.train.evaluator import Evaluator
from textfit.train.folder import RunLog
from textfit.train.setup import TrainState


def clip_in_optimizer_step(optimizer: torch.optim.Optimizer, parameters: Any, max_norm: float) -> torch.Tensor:
    """Clip the gradients' total norm to `max_norm` inside the next fused AdamW step.

    Measured against `clip_grad_norm_`, which rescales every gradient in a pass of its own
    (benchmarks/RESULTS.md): the fused kernel divides each gradient by a scale as it reads it (its
    `grad_scale` input, which AMP's GradScaler uses), the factor max(1, (norm + 1e-6) / max_norm).
    The caller removes `grad_scale` after the step. Returns the norm, as clip_grad_norm_ does."""
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, 2.0)
    optimizer.grad_scale = torch.clamp((norm + 1e-6) / max_norm, min=1.0).to(torch.float32)  # type: ignore[attr-defined]
    return norm


class Meter:
    """Throughput and loss between log lines, and of the whole loop (evaluation time excluded)."""

    def __init__(self, device: torch.device):
        self.loss, self.n, self.samples_window, self.t_window = torch.zeros((), device=device), 0, 0, time.time()
        self.real_tokens = torch.zeros((), dtype=torch.long, device=device)
        self.padded_tokens, self.samples, self.t_start = 0, 0, time.time()

    def add(self, loss: torch.Tensor, batch: dict[str, torch.Tensor], rows: int, processes: int) -> None:
        self.loss += loss.detach()  # no sync: read once per logging window
        self.n += 1
        self.samples_window += rows * processes
        self.samples += rows
        if "attention_mask" in batch:  # (cached features have no tokens)
            self.padded_tokens += batch["attention_mask"].numel()
            self.real_tokens += batch["attention_mask"].sum()

    def window(self, s: TrainState) -> dict[str, Any]:
        """The mean loss and rate since the last call (one sync point per logging window)."""
        mean_loss = s.accelerator.reduce(self.loss, "mean").item() / max(1, self.n)
        rate = self.samples_window / (time.time() - self.t_window)
        self.loss.zero_()
        self.n, self.samples_window, self.t_window = 0, 0, time.time()
        return {"loss": mean_loss, "learning_rate": s.scheduler.get_last_lr()[0], "samples_per_second": rate}

    def totals(self, s: TrainState, eval_seconds: float) -> dict[str, Any]:
        seconds = time.time() - self.t_start - eval_seconds
        counts = torch.tensor([self.samples, self.padded_tokens, int(self.real_tokens)], device=s.accelerator.device)
        samples, padded, real = s.accelerator.reduce(counts, "sum").tolist()
        return {
            "seconds": round(seconds, 3),
            "samples": samples,
            "samples_per_second": samples / seconds,
            "real_tokens": real,
            "padded_tokens": padded,
            "padding_share": 1 - real / padded if padded else 0.0,
            "real_tokens_per_second": real / seconds,
        }


def check_finite(loss: float, s: TrainState) -> None:
    """A loss that became NaN or infinite stops training: nothing is saved as the final model."""
    if not math.isfinite(loss):
        lr = s.scheduler.get_last_lr()[0]
        raise UsageError(
            f"the training loss became {loss} by step {s.step} (learning rate {lr:.3g}); nothing was saved as the "
            f"final model; train again with a lower --learning-rate (e.g. {lr / 10:.1g}) or --max-grad-norm 1"
        )


@contextmanager
def stop_signals() -> Iterator[dict[str, int]]:
    """SIGTERM and Ctrl-C set `received["signum"]` instead of killing the process."""
    received = {"signum": 0}
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda n, _f: received.update(signum=n))
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def checkpoint(s: TrainState, ev: Evaluator) -> Path | None:
    """The complete training state as OUT/checkpoint-STEP (the main process writes)."""
    s.accelerator.wait_for_everyone()
    path = None
    if s.accelerator.is_main_process:
        state = {
            "step": s.step,
            "epoch": s.epoch,
            "batches_in_epoch": s.batches_in_epoch,
            "seed": s.cfg.seed,
            **ev.state_dict(),
            **({"ema_updates": s.ema.updates} if s.ema is not None else {}),
        }
        keep_best = ev.best_weights if ev.best_weights is not None and ev.best_step != s.step else None
        path = save_checkpoint(
            s.out,
            s.step,
            s.model,
            s.optimizer,
            s.scheduler,
            state,
            keep_best,
            s.cfg.save_total_limit,
            None if s.ema is None else s.ema.state_dict(),
        )
    s.accelerator.wait_for_everyone()
    return path


def resume_average(s: TrainState, path: Path, state: dict[str, Any]) -> None:
    """--ema-decay on --resume: the checkpoint's average, or a new one from its weights when it has none."""
    assert s.ema is not None
    tensors = load_average(path)
    if tensors is None:
        s.ema = WeightAverage(s.model, s.cfg.ema_decay)
        s.say(f"textfit: {path} holds no weight average (trained without --ema-decay): it starts from these weights")
    else:
        s.ema.load_state_dict(tensors, int(state.get("ema_updates", 0)), path)


def _stop_requested(s: TrainState, received: dict[str, int]) -> int:
    signum = received["signum"]
    if s.accelerator.num_processes > 1:  # every process stops at the same step
        signum = int(s.accelerator.reduce(torch.tensor(signum, device=s.accelerator.device), "max"))
    return signum


def fit(s: TrainState, ev: Evaluator, log: RunLog) -> dict[str, Any]:
    """Train until the step budget is spent or early stopping says so; returns throughput figures."""
    from tqdm.auto import tqdm

    from textfit.progress import bar_wanted

    acc = s.accelerator
    validate = "validation" in s.data.splits
    meter = Meter(acc.device)
    bar = tqdm(
        total=s.total_steps,
        initial=s.step,
        disable=not acc.is_local_main_process or not bar_wanted(),  # a terminal only: never in a log file
        file=sys.stderr,
        desc="train",
        dynamic_ncols=True,
        mininterval=1.0,
    )

    def say(text: str) -> None:
        if acc.is_main_process:
            bar.write(text, file=sys.stderr)

    s.trainable.train()
    governor = governor_for(acc.device, acc.num_processes)  # fewer threads while other work shares the CPU
    # On the CPU the gradients do not follow the thread count, which the governor may change (steady.py).
    try:
        with steady(s.model) if acc.device.type == "cpu" else nullcontext():
            _steps(s, ev, log, meter, bar, say, governor)
    finally:
        bar.close()  # before any message: an error never shares the bar's line
        if governor is not None:
            governor.close()
    stats = meter.totals(s, ev.seconds)
    if s.ema is not None:  # from here on the model is the average
        s.ema.copy_to_model()
    if validate and (not ev.history or ev.history[-1]["step"] != s.step):
        ev.run(s.step, round(s.step / s.steps_per_epoch, 4), s.model, log, say)
    return stats


def _steps(s: TrainState, ev: Evaluator, log: RunLog, meter: Meter, bar: Any, say: Any, governor: Any) -> None:
    """The epochs of `fit`: every optimizer step until the budget is spent, early stopping or a signal."""
    cfg, acc = s.cfg, s.accelerator
    validate = "validation" in s.data.splits
    epoch_start = time.time()
    with stop_signals() as received:
        while s.step < s.total_steps and not ev.stop:
            # After a resume, the first epoch skips the batches already trained on.
            loader = acc.skip_first_batches(s.train_dl, s.batches_in_epoch) if s.batches_in_epoch else s.train_dl
            # Accelerate's loaders pass their own iteration count to the batch sampler as the epoch:
            # set it, or a resumed run would replay epoch 0's order.
            loader.set_epoch(s.epoch)
            s.sampler.set_epoch(s.epoch)
            for batch in loader:
                s.batches_in_epoch += 1
                index = batch.pop("index")  # the dataset items: distillation's teacher scores are looked up by it
                labels = batch.pop("labels")
                with acc.accumulate(s.trainable):
                    loss = s.compute_loss(s.trainable(**batch).logits, labels, index)
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.max_grad_norm > 0:
                        if s.clip_in_step:
                            clip_in_optimizer_step(s.optimizer.optimizer, s.trainable.parameters(), cfg.max_grad_norm)
                        else:
                            acc.clip_grad_norm_(s.trainable.parameters(), cfg.max_grad_norm)
                    s.optimizer.step()
                    s.optimizer.optimizer.__dict__.pop("grad_scale", None)
                    s.optimizer.zero_grad(set_to_none=True)
                meter.add(loss, batch, labels.shape[0], acc.num_processes)
                if not acc.sync_gradients:  # accumulating: no optimizer step yet
                    continue
                s.scheduler.step()
                if s.ema is not None:
                    s.ema.update()
                s.step += 1
                bar.update(1)
                threads = governor.tick() if governor is not None else None
                if threads is not None:
                    log({"step": s.step, "threads": threads})
                    if len(governor.changes) == 1:
                        say(f"textfit: other work is using the CPU: training on {threads} thread(s) while it lasts")
                epoch = round(s.step / s.steps_per_epoch, 4)
                if s.step % s.log_every == 0 or s.step == s.total_steps:
                    w = meter.window(s)
                    check_finite(w["loss"], s)
                    bar.set_postfix(
                        loss=f"{w['loss']:.4f}",
                        lr=f"{w['learning_rate']:.2e}",
                        samples_s=f"{w['samples_per_second']:.1f}",
                    )
                    log({"step": s.step, "epoch": epoch, **w})
                if validate and s.step % s.eval_every == 0:
                    with s.ema.applied() if s.ema is not None else nullcontext():
                        ev.run(s.step, epoch, s.model, log, say)
                signum = _stop_requested(s, received)
                if signum:
                    path = checkpoint(s, ev)
                    raise Interrupted(
                        f"stopped by {signal.Signals(signum).name} at step {s.step}; checkpoint saved in "
                        f"{path or s.out}; continue with: textfit train ... --output {s.out} --resume",
                        signum,
                    )
                if cfg.save_steps and s.step % cfg.save_steps == 0:
                    checkpoint(s, ev)
                if s.step >= s.total_steps or ev.stop:
                    break
            log({"epoch_end": s.epoch, "step": s.step, "seconds": round(time.time() - epoch_start, 3)})
            s.epoch, s.batches_in_epoch, epoch_start = s.epoch + 1, 0, time.time()
