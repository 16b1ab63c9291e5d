"""Distillation: a teacher run's probabilities become the student's targets.

    textfit distill runs/sst2-mpnet --data sst2.tsv --unlabeled more.csv --output runs/sst2-student --layers 3

`prepare(cfg, data, say)` (called by `setup` before anything is written) checks the teacher against the
data, reads the unlabelled files, and has the teacher predict every training text once, through
`Classifier` (the one prediction path: batched, length-sorted, calibrated where the teacher has a
temperature); a `--seeds` folder is an ensemble whose runs' probabilities are averaged. The texts
without labels join the training split with the teacher's decision as a placeholder label that the loss
never reads. `Distillation.loss` mixes, per row, the gold label's loss (weight `--alpha`, labelled rows
only) and the loss to the teacher's distribution softened by `--distill-temperature` (Hinton et al.'s
KL divergence scaled by T^2; binary cross-entropy per label for multi-label; squared error to the
teacher's value for regression). The teacher's predictions are kept in the run folder
(teacher_predictions.safetensors, keyed by the teacher's files and the texts), so a second
distillation into the same --output (--overwrite, --resume), or into another one with
--teacher-predictions pointing at the first, does not predict them again.

Why not a library's: transformers has no distillation trainer, and SetFit's DistillationTrainer (read in
its source, not run here) distils sentence embeddings with a cosine loss for SetFit's own model format,
without gold labels, multi-label or regression targets; the loss here is a dozen lines inside textfit's
one loop, so checkpoints, resume, evaluation and the run folder stay those of `train`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from textfit.config import TrainConfig
from textfit.data import ReadOptions, Split, TrainingData, read_for_run
from textfit.errors import UsageError
from textfit.evaluate.card import HEADLINE
from textfit.metrics import decide
from textfit.run import MANIFEST, RunManifest, run_fingerprint

NAME = "distill"  # --method distill: the `textfit distill TEACHER` command
CACHE = "teacher_predictions.safetensors"
TEACHER_CHUNK = 5_000  # texts per progress line while the teacher predicts


@dataclass
class Distillation:
    """The teacher's scores for the training rows (and the validation rows, for agreement), and the loss."""

    teacher: str
    folders: list[Path]
    manifest: RunManifest  # the (first) teacher's
    scores: np.ndarray  # (training rows + unlabelled rows, labels): calibrated probabilities, or values
    labelled: np.ndarray  # bool per training row: has a gold label
    validation: np.ndarray | None  # the teacher's scores for the validation split
    key: str
    cached: bool  # read from an earlier run's teacher_predictions.safetensors
    seconds: float
    unlabeled_rows: int

    def loss(self, task: str, doc: np.ndarray, alpha: float, t: float, weights: Any) -> Any:
        """The loss over a batch of dataset items (`doc`: item -> training row, windows share their text's)."""
        targets = torch.as_tensor(self.scores[doc], dtype=torch.float32)
        gold_weight = alpha * torch.as_tensor(self.labelled[doc], dtype=torch.float32)
        w = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)

        def compute(logits: torch.Tensor, y: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
            z, target, g = logits.float(), targets[ix].to(logits.device), gold_weight[ix].to(logits.device)
            if task == "classification":
                soft = torch.softmax(torch.log(target.clamp_min(1e-8)) / t, -1)
                teacher = (soft * (torch.log(soft.clamp_min(1e-12)) - torch.log_softmax(z / t, -1))).sum(-1) * t * t
                gold = F.cross_entropy(z, y, weight=None if w is None else w.to(z.device), reduction="none")
            elif task == "multi-label":
                p = target.clamp(1e-6, 1 - 1e-6)
                soft = torch.sigmoid(torch.log(p / (1 - p)) / t)
                teacher = F.binary_cross_entropy_with_logits(z / t, soft, reduction="none").mean(-1) * t * t
                gold = F.binary_cross_entropy_with_logits(z, y.float(), reduction="none").mean(-1)
            else:
                teacher = (z[:, 0] - target[:, 0]) ** 2
                gold = (z[:, 0] - y.float()) ** 2
            return (g * gold + (1 - g) * teacher).mean()

        return compute

    def agreement(self, student_logits: np.ndarray, student: RunManifest) -> float | None:
        """The share of validation rows where the student decides as the teacher does (regression: None)."""
        from textfit.metrics import scores_from_logits

        if self.validation is None or student.task == "regression":
            return None
        mine = decide(
            scores_from_logits(student_logits, student.task, student.temperature), student.task, student.threshold
        )
        theirs = decide(self.validation, self.manifest.task, self.manifest.threshold)
        same = (mine == theirs).all(-1) if mine.ndim > 1 else mine == theirs
        return float(same.mean())

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        tensors = {"scores": np.ascontiguousarray(self.scores, dtype=np.float32)}
        if self.validation is not None:
            tensors["validation"] = np.ascontiguousarray(self.validation, dtype=np.float32)
        save_file(tensors, str(folder / CACHE), metadata={"key": self.key, "teacher": self.teacher})

    def describe(self, agreement: float | None) -> dict[str, Any]:
        """What textfit.json and the model card say of the teacher."""
        m = self.manifest
        return {
            "teacher": self.teacher,
            "teacher_runs": len(self.folders),
            "teacher_base_model": m.base_model,
            "teacher_validation": {k: v for k, v in (m.metrics.get("validation") or {}).items() if k in HEADLINE},
            "unlabeled_rows": self.unlabeled_rows,
            "teacher_seconds": round(self.seconds, 2),
            "teacher_predictions_cached": self.cached,
            "agreement_validation": agreement,
        }


def teacher_folders(path: str) -> list[Path]:
    """The run, or the runs of a --seeds folder (seed-N), that make the teacher."""
    p = Path(path)
    if (p / MANIFEST).is_file():
        return [p]
    seeds = sorted(q for q in p.glob("seed-*") if (q / MANIFEST).is_file()) if p.is_dir() else []
    if seeds:
        return seeds
    if not p.is_dir():
        raise UsageError(f"teacher {path}: no such folder; pass a run folder written by 'textfit train'")
    raise UsageError(
        f"teacher {path}: not a textfit run (no {MANIFEST}) nor a --seeds folder of runs; pass a folder written by "
        "'textfit train'"
    )


def check_teacher(path: str, manifests: list[RunManifest], data: TrainingData) -> None:
    """The teacher decides the data's task over the data's labels, on single texts or pairs as the data has."""
    schema = data.schema
    for m in manifests:
        if m.task != schema.task:
            raise UsageError(
                f"teacher {path} is a {m.task} run but the data is {schema.task}; distill a teacher trained on "
                "this task, or pass --task"
            )
        if m.task != "regression" and list(m.label_names) != list(schema.label_names):
            raise UsageError(
                f"teacher {path} has the labels {', '.join(m.label_names)} but the data has "
                f"{', '.join(schema.label_names)}; use a teacher trained on these labels (or --label-names to name "
                "them as the teacher does)"
            )
        if schema.text_pair_column is not None and not m.pairs:
            raise UsageError(
                f"teacher {path} classifies single texts but the data gives pairs (column "
                f"{schema.text_pair_column}); pass a pair teacher, or --text-pair-column none"
            )
        if schema.text_pair_column is None and m.pairs:
            raise UsageError(
                f"teacher {path} classifies sentence pairs but the data has no second text; pass --text-pair-column"
            )


def _key(folders: list[Path], texts: list[str], pairs: list[str] | None) -> str:
    """The teacher's files (`run_fingerprint` of each run) and every text, in order."""
    h = hashlib.sha256("".join(run_fingerprint(f) for f in folders).encode())
    h.update(json.dumps([texts, pairs], ensure_ascii=False).encode())
    return h.hexdigest()


def _cached(file: Path | None, key: str) -> dict[str, np.ndarray] | None:
    """The scores in a teacher_predictions.safetensors when they are for this key (teacher files and texts)."""
    if file is None or not file.is_file():
        return None
    try:
        return _read_cache(file, key)
    except (OSError, ValueError) as e:  # a damaged cache of the run's own is predicted again, and said so
        print(f"textfit: warning: {file} cannot be read ({_reason(e)}); the teacher predicts again", flush=True)
        return None


def _reason(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:160]


def _read_cache(file: Path, key: str) -> dict[str, np.ndarray] | None:
    """The file's scores, None when they are another key's; OSError or ValueError for a damaged file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), "np") as f:
            if (f.metadata() or {}).get("key") != key:
                return None
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    except SafetensorError as e:
        raise ValueError(f"not a safetensors file: {e}") from None


def _reused(given: str, key: str) -> tuple[Path, dict[str, np.ndarray]]:
    """--teacher-predictions: another run's cache, which must hold this teacher's scores for these texts."""
    file = Path(given) / CACHE if Path(given).is_dir() else Path(given)
    if not file.is_file():
        raise UsageError(
            f"--teacher-predictions {given}: no {CACHE} there; pass the folder of an earlier 'textfit distill' run"
        )
    try:
        hit = _read_cache(file, key)
    except (OSError, ValueError) as e:
        raise UsageError(
            f"--teacher-predictions {given}: {file} cannot be read ({_reason(e)}); drop the flag and the teacher "
            "predicts them again"
        ) from None
    if hit is None:
        raise UsageError(
            f"--teacher-predictions {given}: made by another teacher or for other texts (the teacher, --data, "
            "--unlabeled and the split must be the same); drop the flag and the teacher predicts them again"
        )
    return file, hit


def _predict(folders: list[Path], texts: list[str], pairs: list[str] | None, batch: int, say: Any) -> np.ndarray:
    """The teacher's calibrated scores; an ensemble's runs averaged."""
    from textfit.predict.classifier import Classifier

    total: Any = None
    for folder in folders:
        clf = Classifier.load(folder)
        parts = []
        for i in range(0, len(texts), TEACHER_CHUNK):
            sl = slice(i, i + TEACHER_CHUNK)
            parts.append(clf.predict_proba(texts[sl], None if pairs is None else pairs[sl], batch))
            if len(texts) > TEACHER_CHUNK:
                say(f"textfit: teacher {folder.name}: {min(len(texts), i + TEACHER_CHUNK)} of {len(texts)} texts")
        scores = np.concatenate(parts) if parts else np.zeros((0, len(clf.labels)), dtype=np.float32)
        total = scores if total is None else total + scores
    return (total / len(folders)).astype(np.float32)


def _unlabeled(cfg: TrainConfig, manifest: RunManifest) -> list[Split]:
    return [
        read_for_run(f, manifest, dataclasses.replace(ReadOptions.from_flags(cfg), label_column=None), labels=False)
        for f in cfg.unlabeled or []
    ]


def _placeholders(scores: np.ndarray, manifest: RunManifest) -> list[Any]:
    """Labels for the unlabelled rows that keep every label-reading step working; the loss gives them weight 0."""
    ids = decide(scores, manifest.task, manifest.threshold)
    if manifest.task == "regression":
        return [float(v) for v in ids]
    if manifest.task == "multi-label":
        return [[float(x) for x in row] for row in ids]
    return [int(v) for v in ids]


def prepare(cfg: TrainConfig, data: TrainingData, out: Path | None, say: Any) -> Distillation:
    """Check the teacher and read the unlabelled files (UsageError before anything is written); then the
    teacher's scores, from `out`'s cache when it holds these texts' (--overwrite, --resume), else from
    --teacher-predictions' (another run's, which must hold them), else predicted.
    The unlabelled rows are appended to data's training split."""
    assert cfg.teacher is not None
    folders = teacher_folders(cfg.teacher)
    manifests = [RunManifest.read(f) for f in folders]
    check_teacher(cfg.teacher, manifests, data)
    extra = _unlabeled(cfg, manifests[0])
    train = data.splits["train"]
    texts = train.texts + [t for s in extra for t in s.texts]
    pairs = None if train.pairs is None else train.pairs + [p for s in extra for p in s.pairs or []]
    val = data.splits.get("validation")
    every_text = texts + (val.texts if val is not None else [])
    every_pair = None if pairs is None else pairs + (val.pairs or [] if val is not None else [])
    key = _key(folders, every_text, every_pair)
    t0 = time.time()
    source = None if out is None else out / CACHE
    hit = _cached(source, key)
    if hit is None and cfg.teacher_predictions:
        source, hit = _reused(cfg.teacher_predictions, key)
    cached = hit is not None
    if hit is None:
        say(f"textfit: teacher {cfg.teacher} ({len(folders)} run(s)) predicts {len(every_text)} texts")
        scores = _predict(folders, every_text, every_pair, cfg.eval_batch_size, say)
        hit = {"scores": scores[: len(texts)], **({"validation": scores[len(texts) :]} if val is not None else {})}
    seconds = time.time() - t0
    n_extra = len(texts) - len(train.texts)
    where = f"read from {source}" if cached else "predicted"
    say(f"textfit: teacher scores for {len(texts)} training texts ({n_extra} unlabelled) {where} in {seconds:.1f}s")
    scores = hit["scores"]
    if n_extra:
        train.texts, train.pairs = texts, pairs
        train.labels = list(train.labels) + _placeholders(scores[len(train.texts) - n_extra :], manifests[0])
        train.rows = list(train.rows) + [r for s in extra for r in s.rows]
        data.notes.append(
            f"{n_extra} unlabelled texts from {', '.join(cfg.unlabeled or [])} join the training split with the "
            "teacher's probabilities as their only target"
        )
    labelled = np.arange(len(texts)) < len(texts) - n_extra
    return Distillation(
        cfg.teacher, folders, manifests[0], scores, labelled, hit.get("validation"), key, cached, seconds, n_extra
    )


def card_section(manifest: RunManifest, config: dict[str, Any]) -> str:
    """A distilled student: its teacher, the teacher's score, the mix of losses, and how often they agree."""
    d = manifest.distillation
    if not d:
        return ""
    scores = ", ".join(f"{k} {v:.4f}" for k, v in d["teacher_validation"].items() if k != "loss") or "not measured"
    agree = d.get("agreement_validation")
    return (
        f"\n## Distillation\n\nA student distilled with `textfit distill` from the teacher `{d['teacher']}` "
        f"({'a run' if d['teacher_runs'] == 1 else str(d['teacher_runs']) + ' runs averaged'}; base model "
        f"`{d['teacher_base_model']}`; teacher validation: {scores}). Loss: {config.get('alpha')} x the gold labels' "
        f"loss + the rest x the loss to the teacher's probabilities softened at temperature "
        f"{config.get('distill_temperature')}."
        + (f" {d['unlabeled_rows']} unlabelled texts learned from the teacher alone." if d["unlabeled_rows"] else "")
        + (
            f" The student decides as the teacher does on {100 * agree:.1f}% of the validation rows.\n"
            if agree is not None
            else "\n"
        )
    )


def teacher(cfg: TrainConfig, data: TrainingData, out: Path | None, say: Any) -> Distillation:
    """The spine's question: the teacher's scores for every training text (see `prepare`)."""
    return prepare(cfg, data, out, say)


def card(manifest: RunManifest, config: dict[str, Any]) -> dict[str, Any]:
    return {"section": card_section(manifest, config)}
