"""Few labels: SetFit's contrastive method, written into an ordinary sequence-classification model.

    method, why = choose(cfg, data, model)   # "contrastive" or "finetune", and the reason, for the log
    seconds = tune_body(state)                # the encoder, on pairs of rows with the same / different labels
    append_mean_layer(model)                  # one more encoder layer whose [CLS] output is the mean-pooled vector
    fit_head(state)                           # logistic regression on the cached vectors -> pooler and classifier

The method is SetFit's (Tunstall et al. 2022, arXiv 2209.11055): pairs drawn from the labelled rows, the body
trained so that the cosine similarity of two rows' mean-pooled embeddings is 1 for the same label and 0 for
different ones (multi-label: the Jaccard overlap of their label sets), then a logistic-regression head on the
tuned embeddings. The setfit library (1.2.0) runs with the installed transformers and is the reference of
benchmarks/bench_fewshot.py; textfit keeps its own ~40-line pair loop because setfit's `Trainer` wraps the
Hugging Face `Trainer` (callbacks, trackers switched on by default, a pickled sklearn head, its own model
format) while this one runs in textfit's precision and kernels and ends in the run folder every command reads.

The run stays a standard sequence-classification model (BERT, MPNet or RoBERTa): `append_mean_layer` adds a last
encoder layer whose attention is uniform over the text's tokens (zero queries and keys, the padding masked as
always; MPNet's relative-position bias makes it a per-head weighted mean, see there) and whose value projection is
large beside the residual, so the first position's output is the LayerNorm of the mean of the tokens' vectors, the
quantity the contrastive loss tuned (up to centring, which the cosine hardly sees: measured on SST-2 and IMDb
zero-shot, within 0.002). The head's dense layer is a near-identity (`tanh(x / 100)`) and its output layer holds
the regression's weights, so `pipeline`, eval, export and every backend reproduce the method's predictions.
zeroshot.py builds on the same layer.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from textfit.accel import cpu_kind
from textfit.data import make_collate
from textfit.errors import UsageError
from textfit.train.frozen import TANH_HEADS, use_cached_features

if TYPE_CHECKING:
    from textfit.config import TrainConfig
    from textfit.data import TrainingData
    from textfit.run import RunManifest
    from textfit.train.setup import TrainState

FEW_SHOT_ROWS = 1000  # --method auto: contrastive below this many training rows (benchmarks/RESULTS.md)
PAIRS_PER_ROW = 20  # SetFit's num_iterations: one same-label and one other-label partner per row, this many times
MAX_PAIRS = 8_000  # the pairs of larger splits are capped: the cost grows with the pairs, the gain does not
BODY_LR = 2e-5  # SetFit's body learning rate
ROW_STEP_LR = 2  # steps of rows (`_row_steps`) take twice BODY_LR: 400 SST-2 rows, draw 0: 0.813 against 0.798
# A split of at most 2 x --batch-size rows (8 or 16 a class): every step encodes each of its rows once whatever its
# pairs, so a step takes this many times --batch-size pairs, twice the partners a row and 4x the body rate: on SST-2
# (5 draws, AMD EPYC Zen 3) 8 a class 0.678 in 4.1 s against 0.679 in 13.7 s, 16 a class 0.701 in 14.4 s against
# 0.710 in 34.8 s (setfit 1.2: 0.648 in 9.9 s, 0.686 in 26.8 s; benchmarks/RESULTS.md)
WHOLE_SPLIT_STEP = 8
VALUE_SCALE = 1e4  # the mean layer's value projection: the residual it is added to weighs 1e-4 beside it
POOLER_SCALE = 1e-2  # tanh(x * POOLER_SCALE) / POOLER_SCALE differs from x by under 0.2% for |x| < 4


def _layer_parts(layer: Any) -> tuple[Any, ...] | None:
    """One encoder layer's (query, key, value, attention output, its norm, intermediate, output, its norm), for the
    two layouts known here: BERT's (BERT, MiniLM, RoBERTa, XLM-R) and MPNet's."""
    att, inter, out = (cast(Any, getattr(layer, n, None)) for n in ("attention", "intermediate", "output"))
    if att is None or not hasattr(inter, "dense") or not hasattr(out, "LayerNorm"):
        return None
    if hasattr(att, "self") and hasattr(att, "output"):  # BERT's layout
        a, o = att.self, att.output
        return a.query, a.key, a.value, o.dense, o.LayerNorm, inter.dense, out.dense, out.LayerNorm
    if hasattr(att, "attn") and hasattr(att, "LayerNorm"):  # MPNet's
        a = att.attn
        return a.q, a.k, a.v, a.o, att.LayerNorm, inter.dense, out.dense, out.LayerNorm
    return None


def _head(model: Any) -> tuple[Any, Any] | None:
    """The classifier's (dense before the tanh, output projection): BERT's pooler and classifier, or the
    classification head of MPNet and RoBERTa, which reads the first position the same way."""
    pooler: Any = getattr(model.base_model, "pooler", None)
    classifier: Any = getattr(model, "classifier", None)
    if hasattr(pooler, "dense") and isinstance(classifier, torch.nn.Linear):
        return pooler.dense, classifier
    if getattr(model.config, "model_type", "") in TANH_HEADS and hasattr(classifier, "out_proj"):
        return classifier.dense, classifier.out_proj
    return None


def supports(model: Any) -> bool:
    """Models whose layer and head are known here: BERT (MiniLM, bert-base-chinese...), MPNet
    (all-mpnet-base-v2) and RoBERTa (XLM-R, CamemBERT)."""
    layers: Any = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    return bool(layers) and _layer_parts(layers[-1]) is not None and _head(model) is not None


SUPPORTED = "BERT, MPNet and RoBERTa architectures (BERT, MiniLM, bert-base-chinese, all-mpnet-base-v2, XLM-R)"


NAME = "contrastive"
LOOP = False  # the encoder is tuned on pairs and the head fitted in closed form: the loop only evaluates


def smallest_class(data: TrainingData) -> tuple[str, int]:
    names, labels = data.schema.label_names, data.splits["train"].labels
    if data.schema.task == "multi-label":
        counts = np.asarray(labels).sum(0)
    else:
        counts = np.bincount(np.asarray(labels), minlength=len(names))
    k = int(np.argmin(counts))
    return names[k], int(counts[k])


def check_model(cfg: TrainConfig, data: TrainingData, model: Any) -> None:
    """--method contrastive's refusals, before anything is written."""
    if data.schema.task == "regression":
        raise UsageError(
            "--method contrastive: pairs need classes, and this is a regression task; use --method finetune"
        )
    if not supports(model):
        kind = getattr(model.config, "model_type", "this model")
        raise UsageError(f"--method contrastive: supports {SUPPORTED}, not {kind}; use --method finetune")
    label, count = smallest_class(data)
    if count < 2:
        raise UsageError(
            f"--method contrastive: label {label} has {count} training row(s); a same-label pair needs 2: add rows of "
            "it, or use --method finetune"
        )


def pair_targets(labels: Any, multi: bool) -> np.ndarray:
    """The target similarity of every two rows (n x n): 1 for the same label and 0 for another; multi-label,
    the Jaccard overlap of their label sets (1 for two rows without labels)."""
    y = np.asarray(labels, dtype=np.float32 if multi else np.int64)
    if not multi:
        return (y[:, None] == y[None, :]).astype(np.float32)
    inter = y @ y.T
    union = y.sum(1)[:, None] + y.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0).astype(np.float32)


def make_pairs(labels: list[Any], multi: bool, per_row: int, seed: int) -> list[tuple[int, int, float]]:
    """(row, partner, target similarity): for every row, `per_row` times, a partner of the same label and one of
    another (SetFit's pair generation). Multi-label: partners sharing a label / sharing none, the target their
    label sets' Jaccard overlap."""
    rng = np.random.default_rng(seed)
    targets = pair_targets(labels, multi)
    n, pairs = len(targets), []
    same, other = targets > 0, targets == 0
    np.fill_diagonal(same, False)
    for _ in range(per_row):
        for i in range(n):
            for pool in (np.flatnonzero(same[i]), np.flatnonzero(other[i])):
                if len(pool):
                    j = int(rng.choice(pool))
                    pairs.append((i, j, float(targets[i, j])))
    order = rng.permutation(len(pairs))
    return [pairs[k] for k in order]


def _mean_pool(body: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    hidden = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def tune_body(s: TrainState) -> tuple[int, float]:
    """The contrastive pass over the encoder (`--epochs` passes, default 1); returns the number of pairs scored and
    the seconds it took. Two kinds of step, by the size of the split:
    - at most 2 x --batch-size rows: SetFit's pairs (`make_pairs`), WHOLE_SPLIT_STEP x --batch-size of them a step;
    - more rows: `_row_steps`, --batch-size rows a step, every pair among them scored."""
    t = time.time()
    ds, cfg, device = s.train_dl.dataset, s.cfg, s.accelerator.device
    assert cfg.batch_size is not None  # setup resolved the default
    multi = s.data.schema.task == "multi-label"
    whole = len(ds) <= 2 * cfg.batch_size  # each step holds every row: more pairs a step cost (almost) nothing more
    per_row = max(1, min(PAIRS_PER_ROW * (2 if whole else 1), MAX_PAIRS // max(1, 2 * len(ds))))
    epochs = cfg.epochs or 1
    if whole:
        pairs = make_pairs(ds.labels, multi, per_row, cfg.seed)
        bs, lr = cfg.batch_size * WHOLE_SPLIT_STEP, cfg.learning_rate or BODY_LR * 4
        steps = max(1, math.ceil(epochs * math.ceil(len(pairs) / bs)))
        scored, plan = len(pairs), _pair_steps(pairs, bs, steps)
        what = (
            f"{len(pairs):,} pairs of training rows ({per_row} same-label and {per_row} other-label partners a row), "
            f"{steps} steps of {bs} pairs (all {len(ds)} rows in every step)"
        )
    else:
        size, lr = cfg.batch_size, cfg.learning_rate or BODY_LR * ROW_STEP_LR
        steps = max(1, math.ceil(epochs * per_row * len(ds) / size))
        scored, plan = steps * size * (size - 1) // 2, _row_steps(ds.labels, multi, size, steps, cfg.seed)
        what = (
            f"{steps} steps of {size} rows ({steps * size / len(ds):.0f} passes over {len(ds):,}), every pair among "
            f"a step's rows scored ({scored:,} pairs)"
        )
    body = s.model.base_model.to(device)
    body.train()
    params = [p for p in body.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, fused=device.type == "cpu")
    warm = max(1, int(cfg.warmup_ratio * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min((k + 1) / warm, max(0.0, (steps - k) / steps)))
    collate = make_collate(s.tokenizer, ds)
    # bf16 only where it pays: on a CPU without AMX these short, small batches ran faster in fp32 (SST-2, 8 rows
    # a class, 40 steps: 16.8 s fp32 against 27.8 s bf16 on an avx512-bf16 Xeon, benchmarks/RESULTS.md)
    amp = s.amp if device.type != "cpu" or cfg.precision == "bf16" or cpu_kind().amx else None
    s.say(f"textfit: contrastive: {what}, body learning rate {lr:g}")
    for step, (rows, a, b, target, weight) in enumerate(plan):
        batch = {k: v.to(device) for k, v in collate(rows).items()}
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            vectors = F.normalize(_mean_pool(body, batch).float(), dim=-1)
        cos = (vectors[a] * vectors[b]).sum(-1)
        loss = (weight * (cos - target) ** 2).sum()
        if not math.isfinite(value := loss.item()):
            raise UsageError(
                f"the training loss became {value} by step {step} of the contrastive pass (body learning rate "
                f"{lr:.3g}); nothing was saved; train again with a lower --learning-rate (e.g. {BODY_LR:g})"
            )
        loss.backward()
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    body.eval()
    return scored, time.time() - t


Step = tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # rows, sides a and b, target, weight


def _pair_steps(pairs: list[tuple[int, int, float]], size: int, steps: int) -> Iterator[Step]:
    """`size` pairs a step, in turn; each row of the step encoded once, however many of its pairs the step holds
    (on a 16-row split, 32 sides a step name about 14 rows); the loss is the mean over the pairs."""
    for step in range(steps):
        chunk = [pairs[(step * size + k) % len(pairs)] for k in range(size)]
        rows = sorted({i for i, _, _ in chunk} | {j for _, j, _ in chunk})
        at = {r: n for n, r in enumerate(rows)}
        a = torch.tensor([at[i] for i, _, _ in chunk])
        b = torch.tensor([at[j] for _, j, _ in chunk])
        yield rows, a, b, torch.tensor([target for *_, target in chunk]), torch.full((size,), 1.0 / size)


def _row_steps(labels: Any, multi: bool, size: int, steps: int, seed: int) -> Iterator[Step]:
    """`size` rows a step, from a seeded shuffle of the split pass after pass (no row twice in a step), each
    encoded once, and every pair among them scored: the same-label pairs (multi-label: sharing a label, the target
    their Jaccard overlap) weigh half the loss and the other-label pairs the other half.

    SetFit draws a fixed list of pairs and encodes both sides of each; a step of rows scores 120 pairs for the
    encoder work of 16 rows. On 400 SST-2 rows (3 draws, AMD EPYC Zen 4) this gave the pairs' accuracy (0.803
    against 0.806) in about a quarter of the time (66-76 s against 259 s; benchmarks/RESULTS.md)."""
    targets = torch.from_numpy(pair_targets(labels, multi))
    g = torch.Generator().manual_seed(seed)
    a, b = torch.triu_indices(size, size, 1)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < size:  # the next pass, its rows already waiting in this step moved to its end
            waiting = set(order)
            fresh = torch.randperm(len(targets), generator=g).tolist()
            order += [r for r in fresh if r not in waiting] + [r for r in fresh if r in waiting]
        rows, order = order[:size], order[size:]
        ix = torch.tensor(rows)
        target = targets[ix[a], ix[b]]
        same = target > 0
        weight = torch.where(same, 0.5 / same.sum().clamp(min=1), 0.5 / (~same).sum().clamp(min=1))
        yield rows, a, b, target, weight


@torch.no_grad()
def append_mean_layer(model: Any) -> None:
    """One more encoder layer whose first position outputs LayerNorm(mean of the last layer's token vectors),
    and a head whose dense layer passes it on (nearly) unchanged; the classifier's output then reads that vector.

    MPNet adds a relative-position bias to every layer's attention scores, and the appended layer shares it:
    with zero queries and keys its first position weighs the tokens by each head's bias (a position-weighted mean,
    head by head) instead of uniformly. The contrastive pass still tunes the plain mean, and the head is fitted
    on what this layer outputs, so the run reproduces its own predictions exactly. all-mpnet-base-v2, pretrained,
    logistic regression on SST-2 (5 draws): 0.722 against the plain mean's 0.727 at 8 a class, 0.841 against
    0.841 at 64 (benchmarks/RESULTS.md)."""
    layer = copy.deepcopy(model.base_model.encoder.layer[-1])
    parts, head = _layer_parts(layer), _head(model)
    assert parts is not None and head is not None, "call only where supports(model)"
    query, key, value, attn_out, norm1, inter, out, norm2 = parts
    eye = torch.eye(model.config.hidden_size)
    for lin in (query, key, inter, out):
        lin.weight.zero_()
        lin.bias.zero_()
    value.weight.copy_(eye * VALUE_SCALE)
    value.bias.zero_()
    attn_out.weight.copy_(eye)
    attn_out.bias.zero_()
    for norm in (norm1, norm2):
        norm.weight.fill_(1.0)
        norm.bias.zero_()
    model.base_model.encoder.layer.append(layer)
    model.config.num_hidden_layers += 1
    head[0].weight.copy_(eye * POOLER_SCALE)
    head[0].bias.zero_()


def pooled(features: torch.Tensor) -> np.ndarray:
    """What the classifier's weights multiply, in the units of the mean layer's output."""
    return (torch.tanh(features.float() * POOLER_SCALE) / POOLER_SCALE).numpy()


@torch.no_grad()
def set_classifier(model: Any, weight: np.ndarray, bias: np.ndarray) -> None:
    """classifier(pooler(h)) = weight @ h + bias, for h the mean layer's output."""
    out = cast(Any, _head(model))[1]
    out.weight.copy_(torch.as_tensor(weight / POOLER_SCALE, dtype=torch.float32))
    out.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


def fit_head(s: TrainState) -> None:
    """SetFit's head on the cached training vectors (`logistic_head`), written into the classifier."""
    balanced = s.cfg.class_weights == "auto"
    x = pooled(s.train_dl.dataset.features)
    if not np.isfinite(x).all():
        raise UsageError(
            "the contrastive pass left the encoder's vectors infinite or NaN; nothing was saved; train again with a "
            f"lower --learning-rate (e.g. {BODY_LR:g})"
        )
    weight, bias = logistic_head(
        x, s.train_dl.dataset.labels, s.data.schema.task, len(s.data.schema.label_names), balanced
    )
    set_classifier(s.model, weight, bias)


def logistic_head(x: np.ndarray, labels: Any, task: str, n: int, balanced: bool) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression (scikit-learn, C=1) on vectors: binary and multi-class as one multinomial model,
    multi-label one model per label. Returns the (n, hidden) weights and the n biases."""
    from sklearn.linear_model import LogisticRegression

    weighting = "balanced" if balanced else None
    y = np.asarray(labels)
    weight, bias = np.zeros((n, x.shape[1])), np.zeros(n)
    if task == "multi-label":
        for k in range(n):
            if y[:, k].min() == y[:, k].max():  # a label on every row or on none: a constant
                bias[k] = 6.0 if y[0, k] else -6.0
                continue
            lr = LogisticRegression(max_iter=2000, class_weight=weighting).fit(x, y[:, k])
            weight[k], bias[k] = lr.coef_[0], lr.intercept_[0]
        return weight, bias
    lr = LogisticRegression(max_iter=2000, class_weight=weighting).fit(x, y)
    if len(lr.classes_) == 2 and n == 2:
        weight[1], bias[1] = lr.coef_[0], lr.intercept_[0]
    else:
        weight[lr.classes_], bias[lr.classes_] = lr.coef_, lr.intercept_
        missing = np.setdiff1d(np.arange(n), lr.classes_)
        bias[missing] = -30.0  # a class without training rows is never predicted
    return weight, bias


def fit(s: TrainState) -> None:
    """The encoder tuned on pairs, the mean layer appended, every split's vectors cached, the head fitted."""
    pairs, seconds = tune_body(s)
    s.manifest.method = {"name": NAME, "pairs": pairs, "seconds": round(seconds, 2)}
    head_on_the_mean(s, fit_head)


def head_on_the_mean(s: TrainState, fit: Any) -> None:
    """The mean layer appended, the encoder frozen, every split's vectors cached, then `fit(s)` sets the head on
    them (this method's logistic regression, zero-shot's descriptions)."""
    append_mean_layer(s.model)
    for p in s.model.parameters():
        p.requires_grad = False
    use_cached_features(s)
    fit(s)


def card(manifest: RunManifest, config: dict[str, Any]) -> dict[str, Any]:
    """The model card's section: how the encoder and head were made."""
    m = manifest.method
    return {
        "section": (
            f"\n## Contrastive (SetFit's method)\n\nThe encoder was tuned on {m['pairs']:,} pairs of training rows "
            f"(cosine similarity of their mean-pooled embeddings towards 1 for the same label, 0 for different ones) "
            f"in {m['seconds']:.0f} s, then a logistic-regression head fitted on the tuned embeddings; the model's "
            "last encoder layer computes that mean, so the folder is an ordinary sequence-classification model.\n"
        )
        if m
        else ""
    }
