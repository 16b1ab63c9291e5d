"""The evaluation report: the files a person reads after training or `textfit eval`.

    write_report(folder, texts, pairs, gold, probs, label_names, metrics, log_path, title)

writes into `folder`: confusion_matrix.csv and .png (label names on the axes),
misclassified.csv (most confident mistakes first), training_curves.png (when a training log is
given), and report.html, a single page with all of it (images embedded, no server needed).
"""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path
from typing import Any

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


MATRIX_CLASSES = 20  # beyond this many classes, the matrix shows the most confused ones and "(other)"


def confusion(gold: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(gold, pred, labels=list(range(n)))


def most_confused(gold: np.ndarray, pred: np.ndarray, n: int, k: int = MATRIX_CLASSES) -> tuple[np.ndarray, list[int]]:
    """The confusion matrix over the `k - 1` classes with the most errors (as the truth or as the
    prediction) and one "(other)" class for the rest, built without an n x n array."""
    wrong = gold != pred
    errors = np.bincount(gold[wrong], minlength=n) + np.bincount(pred[wrong], minlength=n)
    keep = sorted(np.argsort(-errors, kind="stable")[: k - 1].tolist())
    index = np.full(n, len(keep))
    index[keep] = np.arange(len(keep))
    cm = np.zeros((len(keep) + 1, len(keep) + 1), dtype=np.int64)
    np.add.at(cm, (index[gold], index[pred]), 1)
    return cm, keep


def plot_confusion(cm: np.ndarray, names: list[str], path: Path, title: str) -> None:
    plt = _plt()
    k = len(names)
    size = min(12, 2.6 + 0.6 * k)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), [n[:18] for n in names], rotation=30 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), [n[:18] for n in names])
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{100 * share[i, j]:.1f}%",
                ha="center",
                va="center",
                fontsize=10,
                color="white" if share[i, j] > 0.5 else "black",
            )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true label's rows")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(log_path: Path, metric: str, path: Path) -> bool:
    """Training loss and the validation metric over optimizer steps, from log.jsonl."""
    records = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval"].get(metric), r["eval"].get("loss")) for r in records if "eval" in r]
    if not train and not evals:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if train:
        ax.plot(*zip(*train), color="tab:blue", marker="." if len(train) < 30 else None, label="training loss")
    if evals and evals[0][2] is not None:
        ax.plot(
            [e[0] for e in evals],
            [e[2] for e in evals],
            color="tab:blue",
            linestyle="--",
            marker="o",
            label="validation loss",
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    lines, labels = ax.get_legend_handles_labels()
    if evals and metric != "loss" and evals[0][1] is not None:
        ax2 = ax.twinx()
        ax2.plot(
            [e[0] for e in evals], [e[1] for e in evals], color="tab:orange", marker="o", label=f"validation {metric}"
        )
        ax2.set_ylabel(f"validation {metric}")
        l2, lab2 = ax2.get_legend_handles_labels()
        lines, labels = lines + l2, labels + lab2
    ax.legend(lines, labels, loc="center right")
    ax.set_title("training curves")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _img(path: Path) -> str:
    return f'<img alt="{path.name}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


def _write_confusion(folder: Path, gold: np.ndarray, pred: np.ndarray, names: list[str], title: str) -> str:
    """confusion_matrix.csv and .png; with many classes the CSV lists the (true, predicted) pairs that
    occur and the picture shows the most confused classes, so neither grows with classes squared.
    Returns what the report says about it."""
    if len(names) <= MATRIX_CLASSES:
        cm = confusion(gold, pred, len(names))
        with open(folder / "confusion_matrix.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["true \\ predicted"] + names)
            for i, n in enumerate(names):
                w.writerow([n] + cm[i].tolist())
        plot_confusion(cm, names, folder / "confusion_matrix.png", f"confusion matrix: {title}")
        return ""
    pairs, counts = np.unique(np.stack([gold, pred], 1), axis=0, return_counts=True)
    with open(folder / "confusion_matrix.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["true", "predicted", "rows"])
        for (i, j), c in sorted(zip(pairs.tolist(), counts.tolist()), key=lambda x: -x[1]):
            w.writerow([names[i], names[j], c])
    cm, keep = most_confused(gold, pred, len(names))
    shown = [names[i] for i in keep] + [f"(other {len(names) - len(keep)})"]
    plot_confusion(cm, shown, folder / "confusion_matrix.png", f"most confused classes: {title}")
    return (
        f"{len(names)} classes: the matrix shows the {len(keep)} classes with the most errors and the other "
        f"{len(names) - len(keep)} as one; confusion_matrix.csv lists every (true, predicted) pair that occurs."
    )


def plot_reliability(logits: np.ndarray, gold: Any, task: str, temperature: Any, path: Path, title: str) -> None:
    """The reliability diagram: accuracy against confidence per bin, before and after calibration,
    with the diagonal of a perfectly calibrated model and the rows per bin below."""
    from textfit.calibration import ECE_BINS, apply_temperature, calibration_metrics, probabilities, reliability_bins

    plt = _plt()
    gold = np.asarray(gold)
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.2, 6.2), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], ls="--", color="#888", lw=1, label="perfectly calibrated")
    for name, z, colour in (
        ("before", logits, "#d62728"),
        ("after", apply_temperature(logits, temperature), "#1f77b4"),
    ):
        b = reliability_bins(probabilities(z, task), gold, task)
        seen = b["count"] > 0
        ece = calibration_metrics(z, gold, task)["ece"]
        ax.plot(b["confidence"][seen], b["accuracy"][seen], "o-", color=colour, label=f"{name} (ECE {ece:.3f})")
        edges = np.linspace(0, 1, ECE_BINS + 1)
        hist.bar(
            edges[:-1] + (0.25 if name == "after" else 0) / ECE_BINS,
            b["count"],
            width=0.5 / ECE_BINS,
            align="edge",
            color=colour,
            alpha=0.8,
        )
    shown = temperature if not isinstance(temperature, list) else f"{min(temperature):.2f}..{max(temperature):.2f}"
    shown = f"{shown:.3f}" if isinstance(shown, float) else shown
    ax.set(ylabel="share right" if task != "multi-label" else "share of labels on", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(f"{title}\ntemperature {shown}", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    hist.set(xlabel="confidence (probability of the predicted label)", ylabel="rows")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _calibration_section(folder: Path, c: dict[str, Any] | None) -> str:
    """The calibration table (before and after temperature scaling) and the reliability diagram."""
    if not c:
        return ""
    rows = "".join(
        f"<tr><td>{name}</td><td>{c['before'][k]:.4f}</td><td>{c['after'][k]:.4f}</td></tr>"
        for k, name in (
            ("ece", "expected calibration error"),
            ("brier", "Brier score"),
            ("nll", "negative log-likelihood"),
        )
    )
    t = c["temperature"]
    shown = f"{t:.3f}" if isinstance(t, (int, float)) else ", ".join(f"{x:.3f}" for x in t)
    img = _img(folder / "reliability.png") if (folder / "reliability.png").is_file() else ""
    return (
        f"<h2>Calibration</h2><p>Temperature scaling fitted on the validation split: temperature {shown}. "
        "The logits are divided by the temperature before the softmax: the order of the classes, and so the "
        "predicted labels, stay the same; only how sure the model says it is changes.</p>"
        f"<table><tr><th></th><th>before</th><th>after</th></tr>{rows}</table>{img}"
    )


def write_report(
    folder: Path,
    texts: list[str],
    pairs: list[str] | None,
    gold: np.ndarray,
    probs: np.ndarray,
    names: list[str],
    metrics: dict[str, Any],
    log_path: Path | None,
    title: str,
    metric: str = "accuracy",
    threshold: Any = None,
    max_mistakes: int = 50,
) -> None:
    from textfit.metrics import decide

    folder.mkdir(parents=True, exist_ok=True)
    gold = np.asarray(gold)
    pred = decide(probs, "classification", threshold)
    matrix_note = _write_confusion(folder, gold, pred, names, title)

    wrong = np.flatnonzero(pred != gold)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")]
    with open(folder / "misclassified.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text"] + (["text_pair"] if pairs is not None else []) + ["gold", "predicted", "probability"])
        for i in map(int, wrong):
            w.writerow(
                [texts[i]]
                + ([pairs[i]] if pairs is not None else [])
                + [names[gold[i]], names[pred[i]], f"{probs[i, pred[i]]:.4f}"]
            )

    curves = bool(log_path and log_path.is_file() and plot_curves(log_path, metric, folder / "training_curves.png"))

    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{c['precision']:.4f}</td><td>{c['recall']:.4f}</td><td>{c['f1']:.4f}</td><td>{c['support']}</td></tr>"
        for n, c in metrics["per_class"].items()
    )
    for avg in ("macro", "weighted"):
        support = sum(c["support"] for c in metrics["per_class"].values())
        rows += (
            f"<tr class='avg'><td>{avg} "
            f"average</td><td>{metrics[f'precision_{avg}']:.4f}</td><td>{metrics[f'recall_{avg}']:.4f}</td>"
            f"<td>{metrics[f'f1_{avg}']:.4f}</td><td>{support}</td></tr>"
        )
    heads = [k for k in ("accuracy", "precision", "recall", "f1", "f1_macro", "loss") if k in metrics]
    summary = " &middot; ".join(f"{k} <b>{metrics[k]:.4f}</b>" for k in heads)
    mistakes = "".join(
        f"<tr><td>{html.escape(texts[i][:400])}"
        + (f"<br><i>{html.escape(pairs[i][:300])}</i>" if pairs is not None else "")
        + f"</td><td>{html.escape(names[gold[i]])}</td><td>{html.escape(names[pred[i]])}</td>"
        + f"<td>{probs[i, pred[i]]:.3f}</td></tr>"
        for i in wrong[:max_mistakes]
    )
    calibration = _calibration_section(folder, metrics.get("calibration"))
    collapsed = metrics.get("collapsed")
    warning = f"<p><b>Warning:</b> {html.escape(collapsed)}</p>" if collapsed else ""
    shown = f"; the first {max_mistakes} shown, all in misclassified.csv" if len(wrong) > max_mistakes else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>textfit report: {html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 980px; margin: 2em auto; color: #222; line-height: 1.4; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }} tr.avg td {{ background: #fafafa; font-style: italic; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>textfit report</h1>
<p>{html.escape(title)}: {len(gold)} rows. {summary}</p>{warning}
<h2>Per class</h2>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{rows}</table>
<h2>Confusion matrix</h2>{f"<p>{html.escape(matrix_note)}</p>" if matrix_note else ""}
{_img(folder / "confusion_matrix.png")}
{calibration}
{"<h2>Training curves</h2>" + _img(folder / "training_curves.png") if curves else ""}
<h2>Misclassified examples</h2>
<p>{len(wrong)} of {len(gold)} rows, most confident mistakes first{shown}.</p>
<table><tr><th>text</th><th>gold</th><th>predicted</th><th>probability</th></tr>{mistakes}</table>
</body></html>
"""
    (folder / "report.html").write_text(page, encoding="utf-8")
