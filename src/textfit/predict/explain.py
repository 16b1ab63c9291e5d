"""Why the model said that: each word's contribution to a prediction, by integrated gradients.

    ex = Explainer.from_classifier(clf)    # the classifier's model and tokenizer (a `Classifier.load`)
    ex = Explainer.load("runs/sst2")       # or a run (a `Run`, or its folder) loaded for explanations alone
    e = ex.explain("a gripping , beautifully shot film")
    e.label, e.score, e.words[0]   # {"word": "gripping", "start": 2, "end": 10, "attribution": 0.41, "part": 0}

Captum's `LayerIntegratedGradients` integrates the gradient of the explained output along a straight
path from a baseline (every text token replaced by the padding token; [CLS] and [SEP] kept) to the
text, at the word-embedding layer. The explained output is the (calibrated) log-probability of the
predicted label (of the chosen label, for a multi-label run), or a regression value. The log keeps the
path informative: a fine-tuned model's probability is flat near 0 and near 1 and jumps in between,
where a few integration steps miss the jump (measured on a planted-cue model: the probability's
attributions summed to 0.0007 of a change of 0.999, the log-probability's to the change, within the
delta below).
Token attributions are summed into the words they came from (the fast tokenizer's word ids and
character offsets), so each word of the input gets one number: positive pushed towards the label,
negative away from it. Captum's convergence delta (how far the attributions' sum is from the
output's change along the path) is checked: over 5% of the change, the steps are doubled (64 to 512);
it is returned with every explanation. On a MiniLM model fine-tuned on SST-2 (CPU): 64 steps left a delta
under 0.02 on the sentences tried, in 0.3-0.4 s a sentence; 32 steps left up to 0.2.

The explainer needs the run's model in fp32 without textfit's bf16 or int8 inference kernels (gradients need
the plain model): `from_classifier` takes a PyTorch classifier's model as it is when the classifier runs it in
fp32, and loads the run's weights once more otherwise (ONNX Runtime, OpenVINO, bf16 or int8 weights). Texts
longer than the run's max_length are explained on their first max_length tokens.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textfit.errors import UsageError
from textfit.run import Run, RunManifest

STEPS = 64  # integration steps to start with (see `Explainer.explain`)
MAX_STEPS = 512
TOLERANCE = 0.05  # of the output's change: Captum's convergence delta beyond this doubles the steps
INTERNAL_BATCH = 16


@dataclass
class Explanation:
    text: str
    text_pair: str | None
    label: str  # the explained label (or "value" for regression)
    score: float  # its probability, or the value
    words: list[dict[str, Any]]  # in text order
    convergence_delta: float
    truncated: bool = False
    method: str = "integrated gradients of the label's log-probability on the embeddings, Captum"

    def ranked(self) -> list[dict[str, Any]]:
        """The words by attribution, strongest push towards the label first."""
        return sorted(self.words, key=lambda w: -w["attribution"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": self.score,
            "method": self.method,
            "convergence_delta": self.convergence_delta,
            "truncated": self.truncated,
            "words": self.words,
        }


class Explainer:
    """A run's model in fp32 with Captum's integrated gradients; one explanation at a time (a lock)."""

    def __init__(self, model: Any, tokenizer: Any, manifest: RunManifest, steps: int = STEPS):
        from captum.attr import LayerIntegratedGradients

        if not getattr(tokenizer, "is_fast", False):
            raise UsageError("explanations need a fast tokenizer (word offsets); this run's tokenizer is a slow one")
        self.model, self.tokenizer, self.manifest, self.steps = model.float().eval(), tokenizer, manifest, steps
        self.labels = list(manifest.label_names)
        self.lock = threading.Lock()
        # The embedding layer's output (words, positions and segments summed and normalised), as in Captum's
        # BERT tutorial; models without such a module: the word embeddings.
        layer = getattr(getattr(model, "base_model", model), "embeddings", None)
        self.ig = LayerIntegratedGradients(self._output, layer if layer is not None else model.get_input_embeddings())

    @classmethod
    def load(cls, run: Run | str | Path, steps: int = STEPS) -> Explainer:
        """The run's weights loaded for explanations alone (a folder is opened here, once)."""
        from textfit import models

        run = Run.open(run)
        check(run)
        model, tokenizer = models.load(run)
        return cls(model, tokenizer, run.manifest, steps)

    @classmethod
    def from_classifier(cls, clf: Any, steps: int = STEPS) -> Explainer:
        """The explainer of a `Classifier.load`ed classifier, sharing its model and tokenizer where the
        classifier runs the plain PyTorch model in fp32 (a PyTorch backend, no bf16 weights, no int8, no
        autocast): the weights are loaded once. Any other backend (ONNX Runtime, OpenVINO, an int8 or bf16
        PyTorch model) predicts with weights gradients cannot go through: the run's fp32 PyTorch weights are
        loaded once more, for the explainer alone."""
        from textfit import models

        run = clf.run
        if run is None:
            raise UsageError("explanations need a classifier loaded from a run (Classifier.load)")
        check(run)
        model = plain_model(clf)
        if model is None:
            model, tokenizer = models.load(run)
            return cls(model, tokenizer, run.manifest, steps)
        return cls(model, clf.tokenizer, clf.manifest, steps)

    def _output(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: Any, target: int) -> Any:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
        task, t = self.manifest.task, self.manifest.temperature
        if task == "regression":
            return logits[:, 0]
        if t is not None:
            logits = logits / torch.as_tensor(t, dtype=logits.dtype, device=logits.device)
        if task == "multi-label":
            return torch.nn.functional.logsigmoid(logits)[:, target]
        return torch.log_softmax(logits, dim=-1)[:, target]

    def _target(self, enc: dict[str, torch.Tensor], label: str | None) -> tuple[int, str, float]:
        """The label to explain (the predicted one unless `label` names another), its name and score."""
        with torch.no_grad():
            logits = self.model(**enc).logits.float().cpu().numpy()
        from textfit.metrics import decide, scores_from_logits

        task = self.manifest.task
        scores = scores_from_logits(logits, task, self.manifest.temperature)[0]
        if task == "regression":
            return 0, "value", float(scores[0])
        if label is not None:
            if label not in self.labels:
                raise UsageError(f"label {label!r}: not one of this run's labels ({', '.join(self.labels)})")
            j = self.labels.index(label)
        elif task == "multi-label":
            j = int(np.argmax(scores))
        else:
            j = int(decide(scores[None], task, self.manifest.threshold)[0])
        return j, self.labels[j], float(scores[j])

    def explain(self, text: str, text_pair: str | None = None, label: str | None = None) -> Explanation:
        if not isinstance(text, str) or not text.strip():
            raise UsageError("empty text: an explanation needs some text")
        if self.manifest.pairs and text_pair is None:
            raise UsageError("this model classifies sentence pairs: give a second text to explain")
        m = self.manifest
        enc = self.tokenizer(
            text,
            text_pair,
            truncation=True,
            max_length=m.max_length,
            return_offsets_mapping=True,
            return_overflowing_tokens=False,
            return_tensors="pt",
        )
        full = len(self.tokenizer(text, text_pair, truncation=False)["input_ids"])
        offsets = enc.pop("offset_mapping")[0].tolist()
        words, parts = enc.word_ids(0), enc.sequence_ids(0)
        device = next(self.model.parameters()).device  # a GPU classifier's model explains on its GPU
        inputs = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        with self.lock:
            target, name, score = self._target(inputs, label)
            ids = inputs["input_ids"]
            special = torch.tensor([p is None for p in parts], device=device)
            baseline = torch.where(special, ids, torch.full_like(ids, self.tokenizer.pad_token_id or 0))
            steps = self.steps
            while True:
                attributions, delta = self.ig.attribute(
                    ids,
                    baselines=baseline,
                    additional_forward_args=(inputs["attention_mask"], inputs.get("token_type_ids"), target),
                    n_steps=steps,
                    internal_batch_size=INTERNAL_BATCH,
                    return_convergence_delta=True,
                )
                change = float(attributions.sum()) - float(delta)  # F(text) - F(baseline)
                if abs(float(delta)) <= TOLERANCE * abs(change) + 1e-3 or steps >= MAX_STEPS:
                    break
                steps *= 2
        per_token = attributions.sum(dim=-1)[0].detach().float().cpu().numpy()
        merged = _merge_words(per_token, words, parts, offsets, text, text_pair)
        return Explanation(
            text,
            text_pair,
            name,
            score,
            merged,
            float(delta.abs().max()),
            truncated=full > int(ids.shape[1]),
            method=f"integrated gradients ({steps} steps) of the label's log-probability on the embeddings, Captum",
        )


def check(run: Run) -> None:
    """A run whose model cannot be explained is refused in one line, before any weights load."""
    from textfit import models

    if (why := models.explainable(run)) is not None:
        raise UsageError(f"--explain: {run}: {why}")


def plain_model(clf: Any) -> Any:
    """The classifier's PyTorch model when gradients can go through it as it is (fp32 weights, no autocast,
    no quantized layers), else None."""
    from textfit.predict.classifier import TorchBackend

    backend = clf.backend
    if not isinstance(backend, TorchBackend) or backend.dtype is not None:
        return None
    model = backend.model
    if any(p.dtype != torch.float32 for p in model.parameters()):
        return None
    if any("quantized" in type(m).__module__ for m in model.modules()):
        return None
    return model


def _merge_words(
    per_token: np.ndarray,
    words: list[int | None],
    parts: list[int | None],
    offsets: list[list[int]],
    text: str,
    text_pair: str | None,
) -> list[dict[str, Any]]:
    """Token attributions summed per word of the input, with the word's characters (part 0: the text,
    1: the second text of a pair)."""
    merged: dict[tuple[int, int], dict[str, Any]] = {}
    for i, (w, p) in enumerate(zip(words, parts)):
        if w is None or p is None:
            continue
        start, end = offsets[i]
        entry = merged.setdefault((p, w), {"start": start, "end": end, "attribution": 0.0, "part": p})
        entry["start"], entry["end"] = min(entry["start"], start), max(entry["end"], end)
        entry["attribution"] += float(per_token[i])
    out = []
    for (p, _), e in sorted(merged.items(), key=lambda kv: (kv[0][0], kv[1]["start"])):
        source = text if p == 0 else (text_pair or "")
        out.append({"word": source[e["start"] : e["end"]], **e, "attribution": round(e["attribution"], 6)})
    return out


def coloured(e: Explanation) -> str:
    """The text with each word on a background from red (against the label) to green (for it), ANSI."""
    biggest = max((abs(w["attribution"]) for w in e.words), default=0.0) or 1.0
    pieces, at = [], 0
    for w in (x for x in e.words if x["part"] == 0):
        pieces.append(e.text[at : w["start"]])
        level = min(5, int(math.ceil(5 * abs(w["attribution"]) / biggest)))
        colour = (16 + 6 * level if w["attribution"] > 0 else 16 + 36 * level) if level else None  # xterm 256
        shown = e.text[w["start"] : w["end"]]
        pieces.append(f"\033[48;5;{colour}m{shown}\033[0m" if colour else shown)
        at = w["end"]
    pieces.append(e.text[at:])
    return "".join(pieces)


def ranked_lines(e: Explanation, k: int = 10) -> list[str]:
    """The k words that pushed hardest towards the label, then the strongest push against it."""
    top = e.ranked()
    lines = [f"  {w['attribution']:+.4f}  {w['word']}" for w in top[:k]]
    against = [w for w in top[k:] if w["attribution"] < 0][-3:]
    if against:
        lines.append("  ...")
        lines += [f"  {w['attribution']:+.4f}  {w['word']}" for w in against]
    return lines
