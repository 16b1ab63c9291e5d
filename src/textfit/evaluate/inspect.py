"""Know the data before training: label balance, duplicates, leakage, lengths, vocabulary cover.

    report = inspect(cfg)              # what `textfit inspect` prints and writes as data_report.json
    report = analyse(splits, tok, 256) # the same checks on splits already loaded (run by `train`)

Each finding is a problem with a level: "error" (training would be meaningless; `train` stops
on it with a one-line message) or "warning" (`train` prints it and records it in the run).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from textfit.config import DEFAULT_MAX_LENGTH, TrainConfig, split_percentages
from textfit.data import Split, carve_splits, label_problems, read_splits, split_seed

UNK_WARN = 0.03  # unknown-token share above which the vocabulary does not cover the text
IMBALANCE_WARN = 5.0
TOKEN_SAMPLE = 20_000  # texts per split used for the token statistics


def _key(s: Split, i: int) -> tuple[str, str | None]:
    return (s.texts[i], s.pairs[i] if s.pairs is not None else None)


def _rows(rows: list[int], unit: str, k: int = 5) -> str:
    return f"{unit}s {', '.join(map(str, rows[:k]))}{', ...' if len(rows) > k else ''}"


Problem = Callable[[str, str, str], None]  # (level, kind, message)


def text_groups(s: Split) -> list[list[int]]:
    """The rows of each distinct text (and second text) of a split, in order of first appearance."""
    seen: dict[tuple, list[int]] = defaultdict(list)
    for i in range(len(s.texts)):
        seen[_key(s, i)].append(i)
    return list(seen.values())


def conflicting(s: Split, groups: list[list[int]], label_name: Callable[[Any], Any] = str) -> list[list[int]]:
    """The groups of `text_groups` whose rows carry more than one label."""
    return [ix for ix in groups if len({str(label_name(s.labels[i])) for i in ix}) > 1]


def _split_summary(s: Split, label_name: Callable[[Any], Any]) -> tuple[dict[str, Any], Counter]:
    """Rows and label counts of a split (regression: the range of its values)."""
    if s.task == "regression":  # values, not classes: their range instead of counts
        values = {"min": float(min(s.labels)), "mean": float(np.mean(s.labels)), "max": float(max(s.labels))}
        return {"rows": len(s.texts), "labels": {}, "values": values}, Counter()
    if s.task == "multi-label":  # how often each label occurs
        counts = Counter(x for v in s.labels for x in (label_name(v) or ("(none)",)))
    else:
        counts = Counter(label_name(v) for v in s.labels)
    return {"rows": len(s.texts), "labels": dict(sorted(counts.items()))}, counts


def _check_split(
    s: Split, label_name: Callable[[Any], Any], problem: Problem, problems: list[dict[str, str]]
) -> dict[str, Any]:
    info, counts = _split_summary(s, label_name)
    if counts:
        info["imbalance_ratio"] = round(max(counts.values()) / min(counts.values()), 3)
    said = any(p["kind"] == "empty_text" and p["message"].startswith(s.source + ":") for p in problems)
    if s.dropped and not said:
        left_out = f"{len(s.dropped)} rows with an empty text were left out ({_rows(s.dropped, s.unit)})"
        problem("warning", "empty_text", f"{s.source}: {left_out}")
    # Exact duplicates, and the same text under different labels.
    groups = text_groups(s)
    dupes = sum(len(ix) - 1 for ix in groups)
    conflicts = conflicting(s, groups, label_name)
    info["duplicate_rows"] = dupes
    info["conflicting_duplicates"] = len(conflicts)
    if dupes:
        problem("warning", "duplicates", f"{s.source}: {dupes} rows repeat an earlier text of the same split")
    if conflicts:
        ex = conflicts[0]
        rows = ", ".join(str(s.rows[i]) for i in ex[:4])
        labels = ", ".join(repr(label_name(s.labels[i])) for i in ex[:4])
        message = f"{s.source}: {len(conflicts)} texts appear with different labels (e.g. {s.unit}s {rows}: {labels})"
        problem("warning", "conflicting_labels", f"{message}; fix or remove them")
    # Labels written two ways: the normaliser merged spaces; case variants are separate classes.
    raw_by_norm: dict[str, set[str]] = defaultdict(set)
    for raw, v in zip(s.raw_labels, s.labels):
        raw_by_norm[str(v)].add(raw)
    for v, raws in raw_by_norm.items():
        if len(raws) > 1:
            shown = ", ".join(repr(r) for r in sorted(raws))
            problem(
                "warning", "label_spaces", f"{s.source}: labels {shown} differ only by spaces and were read as {v!r}"
            )
    return info


def _token_stats(s: Split, tokenizer: Any, max_length: int | None) -> dict[str, Any]:
    unk = getattr(tokenizer, "unk_token_id", None)
    special = set(getattr(tokenizer, "all_special_ids", [])) - {unk}  # [CLS], [SEP], ...: not text
    n = min(len(s.texts), TOKEN_SAMPLE)
    ids = tokenizer(s.texts[:n], s.pairs[:n] if s.pairs is not None else None, truncation=False)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    content = sum(1 for x in ids for t in x if t not in special)
    unks = sum(1 for x in ids for t in x if t == unk) if unk is not None else 0
    stats: dict[str, Any] = {f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 95, 99)}
    stats["max"] = int(lengths.max())
    stats["truncated_share"] = float((lengths > max_length).mean()) if max_length else 0.0
    stats["unk_rate"] = unks / max(1, content)
    stats["sampled_texts"] = n
    return stats


def _check_tokens(
    report: dict[str, Any], splits: dict[str, Split], tokenizer: Any, max_length: int | None, problem: Problem
) -> None:
    for name, s in splits.items():
        report["splits"][name]["tokens"] = _token_stats(s, tokenizer, max_length)
    t = report["splits"]["train"]["tokens"]
    if max_length and t["truncated_share"] > 0:
        problem(
            "warning",
            "truncation",
            f"{100 * t['truncated_share']:.1f}% of the training texts are longer than --max-length {max_length} "
            f"tokens and will be cut (median {t['p50']}, p95 {t['p95']}, longest {t['max']})",
        )
    rate = max(s["tokens"]["unk_rate"] for s in report["splits"].values())
    if rate > UNK_WARN:
        problem(
            "warning",
            "unknown_tokens",
            f"{100 * rate:.1f}% of the tokens are unknown ([UNK]) to the model's tokenizer: "
            "its vocabulary does not cover this text (another language?); choose a model made for it",
        )


def analyse(
    splits: dict[str, Split],
    tokenizer: Any | None,
    max_length: int | None,
    label_name: Callable[[Any], Any] = str,
    found: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """All checks on loaded splits; labels are values or ids, shown through `label_name`; `found`: problems
    the reader already reported (they come first)."""
    problems: list[dict[str, str]] = list(found or [])
    report: dict[str, Any] = {"splits": {}, "problems": problems}

    def problem(level: str, kind: str, message: str) -> None:
        problems.append({"level": level, "kind": kind, "message": message})

    train = splits["train"]
    for name, s in splits.items():
        report["splits"][name] = _check_split(s, label_name, problem, problems)
    imbalance = report["splits"]["train"].get("imbalance_ratio", 1.0)
    if imbalance > IMBALANCE_WARN:
        problem(
            "warning",
            "imbalance",
            f"{train.source}: the largest class has {imbalance:.1f}x the rows of the smallest; "
            "watch the per-class recall in the report",
        )
    for message in label_problems(splits):
        problem("error", "labels", message)
    # Texts shared between train and the held-out splits inflate the held-out scores.
    train_keys = {_key(train, i) for i in range(len(train.texts))}
    for name, s in splits.items():
        if name == "train":
            continue
        shared = [s.rows[i] for i in range(len(s.texts)) if _key(s, i) in train_keys]
        report["splits"][name]["shared_with_train"] = len(shared)
        if shared:
            problem(
                "warning",
                "leakage",
                f"{s.source}: {len(shared)} {name} rows also appear in the training data ({_rows(shared, s.unit)}); "
                "their scores measure memory, not generalisation",
            )
    if tokenizer is not None:
        _check_tokens(report, splits, tokenizer, max_length, problem)
    report["max_length"] = max_length
    return report


def inspect(cfg: TrainConfig) -> dict[str, Any]:
    """Read the data as `train` would and analyse it, reporting label problems instead of stopping."""
    from transformers import AutoConfig, AutoTokenizer

    from textfit.hub import resolve_model
    from textfit.models.transformer import max_positions, quiet_transformers

    found: list[dict[str, str]] = []  # problems with rows, reported with the rest instead of stopping
    splits, _, notes, _ = read_splits(cfg, found)
    if not label_problems(splits):
        splits = carve_splits(
            splits, split_percentages(cfg.split), split_seed(cfg), cfg.max_train_samples, notes, cfg.split
        )
    quiet_transformers()
    path = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    limit = max_positions(AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code), tokenizer)
    label_name = (
        (lambda v: v) if splits["train"].task != "classification" else str
    )  # multi-label: tuples of names already
    report = analyse(splits, tokenizer, min(cfg.max_length or DEFAULT_MAX_LENGTH, limit), label_name, found)
    report["notes"] = notes
    report["model"] = cfg.model or "all-MiniLM-L6-v2 (packaged)"
    return report


def label_namer(task: str, names: list[str]) -> Callable[[Any], Any]:
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
        per_row = np.asarray(labels).sum(1).mean()
        return ", ".join(f"{n} {c}" for n, c in zip(names, counts)) + f"; {per_row:.2f} labels per row"
    counts = np.bincount(labels, minlength=len(names))
    return ", ".join(f"{n} {c}" for n, c in zip(names, counts))


def format_report(report: dict[str, Any]) -> str:
    lines = []
    names = list(report["splits"])
    labels = sorted({label for s in report["splits"].values() for label in s["labels"]})
    width = max([8] + [len(x) for x in labels])
    lines.append(f"{'':<{width}}  " + "  ".join(f"{n:>10}" for n in names))
    lines.append(f"{'rows':<{width}}  " + "  ".join(f"{report['splits'][n]['rows']:>10}" for n in names))
    for label in labels:
        lines.append(
            f"{label:<{width}}  " + "  ".join(f"{report['splits'][n]['labels'].get(label, 0):>10}" for n in names)
        )
    if all("values" in report["splits"][n] for n in names):  # regression: the range of the targets
        for key in ("min", "mean", "max"):
            lines.append(
                f"{'value ' + key:<{width}}  "
                + "  ".join(f"{report['splits'][n]['values'][key]:>10.3g}" for n in names)
            )
    else:
        lines.append(
            f"{'imbal.':<{width}}  "
            + "  ".join(f"{report['splits'][n].get('imbalance_ratio', 0):>10.2f}" for n in names)
        )
    if all("tokens" in report["splits"][n] for n in names):
        for key in ("p50", "p95", "max"):
            lines.append(
                f"{'tok ' + key:<{width}}  " + "  ".join(f"{report['splits'][n]['tokens'][key]:>10}" for n in names)
            )
        lines.append(
            f"{'cut':<{width}}  "
            + "  ".join(f"{100 * report['splits'][n]['tokens']['truncated_share']:>9.1f}%" for n in names)
        )
        lines.append(
            f"{'[UNK]':<{width}}  "
            + "  ".join(f"{100 * report['splits'][n]['tokens']['unk_rate']:>9.1f}%" for n in names)
        )
    lines.append("")
    if not report["problems"]:
        lines.append("no problems found")
    for p in report["problems"]:
        lines.append(f"{p['level']}: {p['message']}")
    return "\n".join(lines)
