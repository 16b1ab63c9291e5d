"""Fine-tune a checkpoint into a classifier: set-up, the loop, and the run folder.

    from textfit import TrainConfig, train
    result = train(TrainConfig(data="reviews.csv", epochs=1))
    result.folder, result.metrics["validation"]["accuracy"]   # a TrainResult (train/result.py)

The spine, the same for every method (train/methods: each a module the spine asks the same questions):
`setup.setup` checks everything that can fail on the user's input before any file is written, picks the method
and returns a `TrainState`; `loop.fit` trains (or only evaluates, for a method that fitted the model itself);
`finish.finish` evaluates the final weights through the same `Classifier` path as `textfit eval` and writes the
run. The same code runs in one process and under `accelerate launch`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

from textfit.config import TrainConfig, report_to
from textfit.data import TrainingData
from textfit.errors import UsageError
from textfit.hub import push_run
from textfit.train.checkpoint import load_checkpoint, resolve_resume
from textfit.train.evaluator import Evaluator, measure_for
from textfit.train.finish import finish
from textfit.train.folder import RunLog, folder_state, move_into_place, work_folder
from textfit.train.loop import fit, resume_average
from textfit.train.result import TrainResult
from textfit.train.seeds import train_seeds
from textfit.train.setup import setup
from textfit.train.tracking import Trackers


def train(
    cfg: TrainConfig,
    on_evaluate: Callable[[int, dict[str, Any]], None] | None = None,
    data: TrainingData | None = None,
) -> TrainResult:
    """Train a run as `cfg` says; `on_evaluate(step, metrics)` hears every validation evaluation.
    `data`: splits already read and labelled (cross-validation's folds) instead of reading cfg's files.
    The result holds the run folder, every split's metrics and raw logits, and the history."""
    if cfg.seeds:
        return train_seeds(cfg, train)
    s = setup(cfg, data)
    acc = s.accelerator
    resume_from = resolve_resume(cfg.resume, s.out) if cfg.resume is not None else None
    persistent = cfg.save_steps is not None or resume_from is not None
    resumed_step = int(resume_from.name.split("-")[1]) if resume_from is not None else None
    fresh = resume_from is not None and not s.out.exists()  # --resume CHECKPOINT into a new --output
    at_start = folder_state(s.out)  # another process may save a run there while this one trains
    work = work_folder(s.out, persistent, acc.is_main_process, resumed_step)
    ev = Evaluator(
        measure_for(s), s.metric, s.sign, cfg.early_stopping_patience, cfg.load_best_model_at_end, on_evaluate
    )
    log = RunLog(None)
    try:
        if s.distillation is not None and acc.is_main_process:  # kept with the run: a later distillation reads them
            s.distillation.save(work)
        trackers = None
        names = report_to(cfg.report_to)
        if acc.is_main_process and names:
            trackers = Trackers(names, work, s.out.name, cfg.tracking_uri, s.recipe())
        log = RunLog(work / "log.jsonl" if acc.is_main_process else None, trackers)
        if s.features:
            log({"step": s.step, "features_seconds": round(s.features_seconds, 3)})
        if resume_from is not None:
            state, best_weights = load_checkpoint(resume_from, s.model, s.optimizer, s.scheduler)
            s.step, s.epoch, s.batches_in_epoch = state["step"], state["epoch"], state["batches_in_epoch"]
            ev.load_state_dict(state, best_weights, s.model)
            if s.ema is not None:
                resume_average(s, resume_from, state)
            s.say(f"textfit: resumed from {resume_from} (step {s.step}, epoch {s.epoch}, batch {s.batches_in_epoch})")
        stats = fit(s, ev, log)
        metrics, logits = finish(s, ev, log, work, stats)
        acc.wait_for_everyone()
        if acc.is_main_process and not persistent:
            s.out = move_into_place(work, s.out, at_start)
        s.say(f"textfit: saved the run to {s.out}")
        if cfg.push_to_hub and acc.is_main_process:
            s.say(f"textfit: pushed the run to {push_run(s.out, cfg.push_to_hub)}")
        acc.wait_for_everyone()
    except UsageError:
        if fresh and acc.is_main_process:  # nothing half-written: the folder this call made goes
            shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        log.close()
        if acc.is_main_process and not persistent and work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return TrainResult(
        folder=str(s.out),
        metrics=metrics,
        logits=logits,
        temperature=s.manifest.temperature,
        history=ev.history,
        steps=s.step,
        train_stats=stats,
    )
