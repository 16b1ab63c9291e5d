"""The end of a run: the best weights restored, every split measured as `textfit eval` measures it, the
temperature and thresholds fitted, and the run folder written (reports, card, weights; textfit.json last).

    metrics, logits = finish(state, evaluator, log, work_folder, stats)

The folder's place, its work copy and the move into place are train/folder.py's.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import yaml

from textfit.calibration import fit_temperature, unusable
from textfit.evaluate.card import write_model_card
from textfit.evaluate.evaluate import evaluate, metrics_from_logits
from textfit.evaluate.report import plot_reliability, write_report
from textfit.metrics import scores_from_logits
from textfit.progress import quiet_libraries
from textfit.run import LoraInfo, write_json
from textfit.train import methods
from textfit.train.evaluator import Evaluator, current_classifier, tune_thresholds
from textfit.train.folder import RunLog, umask_modes
from textfit.train.setup import TrainState, calibrates


def _final_metrics(s: TrainState, ev: Evaluator) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every split's metrics and raw logits for the final weights, measured as `textfit eval` measures
    them; the validation split's from the evaluation of those weights during training. The temperature
    (--calibration) is fitted on the validation logits first, and thresholds tuned on calibrated scores."""
    from textfit.metrics import format_metrics

    metrics: dict[str, Any] = {}
    logits: dict[str, np.ndarray] = {}
    splits = s.data.splits
    # The final weights as `textfit eval` loads them: built only when a split is measured here.
    clf = None
    if s.features or "test" in splits:
        clf = current_classifier(s)
    if "validation" in splits:
        restored = s.cfg.load_best_model_at_end and ev.best_step is not None  # the weights are the best evaluated
        if clf is not None and s.features:  # the evaluations ran on cached features: measure the whole model once
            metrics["validation"], logits["validation"] = evaluate(
                clf, splits["validation"], s.cfg.eval_batch_size, None
            )
        else:
            metrics["validation"], logits["validation"] = ev.final(restored)
        gold = splits["validation"].labels
        if calibrates(s.cfg, s.data):
            t = fit_temperature(logits["validation"], gold, s.manifest.task)
            why = unusable(logits["validation"], gold, s.manifest.task, t)
            if why is None:
                s.manifest.temperature = t
                metrics["validation"], _ = metrics_from_logits(logits["validation"], gold, s.manifest, None)
            else:
                s.say(f"textfit: {'warning: ' if s.cfg.calibration == 'temperature' else ''}no calibration: {why}")
        scores = scores_from_logits(logits["validation"], s.manifest.task, s.manifest.temperature)
        s.manifest.threshold, tuned = tune_thresholds(s, metrics["validation"], scores)
        if s.manifest.threshold is not None:
            metrics["validation_untuned"], metrics["validation"] = metrics["validation"], tuned
        s.say(format_metrics(metrics["validation"], f"\nvalidation ({len(splits['validation'].texts)} rows)"))
        if "collapsed" in metrics["validation"]:
            s.say(f"textfit: warning: {metrics['validation']['collapsed']}")
    if clf is not None and "test" in splits:
        metrics["test"], logits["test"] = evaluate(clf, splits["test"], s.cfg.eval_batch_size, s.manifest.threshold)
        s.say(format_metrics(metrics["test"], f"\ntest ({len(splits['test'].texts)} rows)"))
    for name, m in metrics.items():
        if "calibration" in m and not name.endswith("_untuned"):
            c = m["calibration"]
            s.say(
                f"textfit: {name} calibration (temperature {_shown_temperature(c['temperature'])}): expected "
                f"calibration error {c['before']['ece']:.4f} -> {c['after']['ece']:.4f}, Brier "
                f"{c['before']['brier']:.4f} -> {c['after']['brier']:.4f}, NLL {c['before']['nll']:.4f} -> "
                f"{c['after']['nll']:.4f}"
            )
    return metrics, logits


def _shown_temperature(t: Any) -> str:
    return f"{t:.3f}" if isinstance(t, (int, float)) else "per label " + ", ".join(f"{x:.2f}" for x in t)


def finish(
    s: TrainState, ev: Evaluator, log: RunLog, work: Any, stats: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Restore the best weights, measure every split, and write the run folder (manifest last);
    returns every split's metrics and raw logits."""
    if s.cfg.load_best_model_at_end and ev.best_weights is not None and ev.best_step != s.step:
        s.say(f"textfit: restoring the best weights (step {ev.best_step}, {s.metric} {s.sign * ev.best_score:.4f})")
        s.model.load_state_dict(ev.best_weights)
    metrics, logits = _final_metrics(s, ev)
    if s.distillation is not None:
        agreement = s.distillation.agreement(logits["validation"], s.manifest) if "validation" in logits else None
        s.manifest.distillation = s.distillation.describe(agreement)
        if agreement is not None:
            s.say(f"textfit: the student decides as the teacher does on {100 * agreement:.1f}% of the validation rows")
    stats_line = (
        f", {stats['real_tokens_per_second']:.0f} tokens/s, {100 * stats['padding_share']:.1f}% padding"
        if stats["padded_tokens"]
        else " on cached features"
    )
    if stats["samples"]:
        s.say(
            f"textfit: trained {stats['samples']} samples in {stats['seconds']:.1f}s "
            f"({stats['samples_per_second']:.1f} samples/s{stats_line})"
        )
    summary = {n: {k: v for k, v in m.items() if k != "per_class"} for n, m in metrics.items()}
    log({"step": s.step, "final": summary})
    s.accelerator.wait_for_everyone()
    if not s.accelerator.is_main_process:
        return metrics, logits
    log.close()
    m = s.manifest
    m.steps, m.best_step, m.metrics, m.train_stats = s.step, ev.best_step, summary, stats
    m.train_seconds = round(time.time() - s.t_start, 2)
    report_split = "test" if "test" in metrics else "validation" if "validation" in metrics else None
    if report_split and m.temperature is not None:
        gold = s.data.splits[report_split].labels
        title = f"reliability, {report_split} split ({len(gold)} rows)"
        plot_reliability(logits[report_split], gold, m.task, m.temperature, work / "reliability.png", title)
    if report_split and m.task == "classification":
        rs = s.data.splits[report_split]
        write_report(
            work,
            rs.texts,
            rs.pairs,
            np.array(rs.labels),
            scores_from_logits(logits[report_split], m.task, m.temperature),
            m.label_names,
            metrics[report_split],
            work / "log.jsonl",
            f"{report_split} split",
            s.metric,
            m.threshold,
        )
    write_json(work / "metrics.json", metrics)
    write_json(work / "data_report.json", s.data_report)
    rows = s.data.split_rows
    if s.distillation is not None and s.distillation.unlabeled_rows:  # the --unlabeled files' rows, apart
        k = s.distillation.unlabeled_rows
        rows["train"], rows["unlabeled"] = rows["train"][:-k], rows["train"][-k:]
    write_json(work / "splits.json", {"unit": "line or row of the source file", **rows})
    (work / "train_config.yaml").write_text(
        yaml.safe_dump(s.cfg.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    final = s.model
    if s.cfg.lora:  # the adapter alone (small), and the merged weights as the run's model
        final.save_pretrained(work / "adapter")
        m.lora = LoraInfo(
            r=s.cfg.lora,
            alpha=final.peft_config["default"].lora_alpha,
            base_model_path=s.model_path if s.cfg.model else None,
        )
        final = final.merge_and_unload()
    if (record := methods.hook(s.method, "record")) is not None:  # what the method adds to textfit.json
        record(s, final)
    card = methods.hook(s.method, "card")
    sizes = {n: len(sp.texts) for n, sp in s.data.splits.items()}
    write_model_card(
        work,
        m,
        metrics,
        sizes,
        s.recipe(),
        s.cfg.data or s.cfg.train,
        s.cfg.push_to_hub,
        method_card=card(m, s.recipe()) if card is not None else None,
    )
    quiet_libraries()  # transformers' own bar while it writes the weights, with --quiet or off a terminal
    final.save_pretrained(work, safe_serialization=True)
    s.tokenizer.save_pretrained(work)
    m.write(work)  # textfit.json last: the run is complete
    umask_modes(work)
    return metrics, logits
