"""The model card: README.md in every run folder, the page the Hub shows for the model.

    write_model_card(folder, manifest, metrics, sizes, config, data_name)

Built with huggingface_hub's `ModelCard` and `ModelCardData`: YAML metadata the Hub reads (base
model, library, pipeline tag, data set, license, the evaluation results as model-index) and a body
made from the run: task, labels, data sizes, the recipe, the evaluation and per-class tables, how to
load the model with `pipeline`, and the data warnings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textfit.hub import DEFAULT_MODEL_NAME
from textfit.run import RunManifest

PACKAGED = {"base_model": "sentence-transformers/all-MiniLM-L6-v2", "license": "apache-2.0"}
HEADLINE = ("accuracy", "f1", "precision", "recall", "f1_macro", "f1_micro", "pearson", "spearman", "mse", "loss")
RECIPE = (
    "learning_rate",
    "batch_size",
    "epochs",
    "max_steps",
    "warmup_ratio",
    "weight_decay",
    "layer_lr_decay",
    "ema_decay",
    "max_length",
    "layers",
    "freeze_layers",
    "seed",
    "freeze_backbone",
    "lora",
    "class_weights",
    "precision",
)
TEMPLATE = """---
{{ card_data }}
---

# {{ name }}

A {{ task }} model fine-tuned with [textfit](https://pypi.org/project/textfit/) from `{{ base }}`.

- Labels: {{ labels }}
- Data: {{ data }}
- Training: {{ steps }} steps{{ took }}

## Evaluation

{{ evaluation }}
{{ per_class }}
## Use it
{{ usage }}{{ calibration }}

## Training recipe

{{ recipe }}
{{ method }}{{ warnings }}"""

EXAMPLE = "a text to classify"

USAGE = """
```python
from transformers import pipeline

classifier = pipeline("text-classification", model="{repo}")
classifier("{example}")
```

or with textfit: `textfit predict {repo} "{example}"` on the downloaded folder."""


def _base(manifest: RunManifest) -> tuple[str | None, str | None]:
    """The base model's hub id (None for a local folder) and its license where known."""
    if manifest.base_model == DEFAULT_MODEL_NAME:
        return PACKAGED["base_model"], PACKAGED["license"]
    if Path(manifest.base_model).exists():
        return None, None
    license_ = None
    try:
        from huggingface_hub import ModelCard, try_to_load_from_cache

        cached = try_to_load_from_cache(manifest.base_model, "README.md")
        if isinstance(cached, str):
            license_ = ModelCard.load(cached).data.to_dict().get("license")
    except Exception:  # noqa: BLE001 - a card we cannot read only leaves the license out
        license_ = None
    return manifest.base_model, license_


def _table(metrics: dict[str, Any]) -> str:
    splits = [s for s in ("validation", "test") if s in metrics]
    keys = [k for k in HEADLINE if any(k in metrics[s] for s in splits)]
    if not splits:
        return "No validation or test split was evaluated."
    rows = ["| split | rows | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for s in splits:
        m = metrics[s]
        rows.append(f"| {s} | {m.get('n', '')} | " + " | ".join(f"{m[k]:.4f}" if k in m else "" for k in keys) + " |")
    return "\n".join(rows) + "\n"


def _per_class(metrics: dict[str, Any]) -> str:
    split = "test" if "test" in metrics else "validation" if "validation" in metrics else None
    per = metrics.get(split, {}).get("per_class") if split else None
    if not per:
        return ""
    shown = list(per.items())[:50]
    rows = [
        f"\nPer class ({split} split{'' if len(per) <= 50 else ', the first 50 classes'}):\n",
        "| class | precision | recall | f1 | support |",
        "|---|---|---|---|---|",
    ]
    rows += [f"| {n} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | {c['support']} |" for n, c in shown]
    return "\n".join(rows) + "\n"


def model_card(
    manifest: RunManifest,
    metrics: dict[str, Any],
    sizes: dict[str, int],
    config: dict[str, Any],
    data_name: str | None,
    repo: str | None = None,
    method_card: dict[str, Any] | None = None,
) -> Any:
    """The card of a run. `method_card`: what the run's training method adds (train/methods; its `card`): a
    `section` of the card, and where the method's model is not a transformers one, its `usage` (a template with
    {repo} and {example}), `library_name` and `tags`."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    extra = method_card or {}
    base, license_ = _base(manifest)
    local = bool(data_name) and (Path(str(data_name)).exists() or Path(str(data_name).split()[0]).exists())
    hub_data = data_name if data_name and not local else None
    results = [
        EvalResult(
            task_type="text-classification",
            dataset_type=hub_data or "custom",
            dataset_name=hub_data or "custom",
            dataset_split=split,
            metric_type=k,
            metric_value=round(float(metrics[split][k]), 6),
        )
        for split in ("validation", "test")
        if split in metrics
        for k in HEADLINE
        if k in metrics[split] and k != "loss"
    ]
    data = ModelCardData(
        base_model=base,
        library_name=extra.get("library_name", "transformers"),
        pipeline_tag="text-classification",
        license=license_,
        datasets=[hub_data.split()[0]] if hub_data else None,
        tags=["textfit", "text-classification", manifest.task] + list(extra.get("tags", [])),
        metrics=sorted({r.metric_type for r in results}) or None,
        model_name=repo or "textfit-model",
        eval_results=results or None,
    )
    recipe = "\n".join(f"- {k}: {config[k]}" for k in RECIPE if config.get(k) not in (None, False, "none"))
    warnings = "".join(f"- {w}\n" for w in manifest.data_warnings)
    return ModelCard.from_template(
        data,
        template_str=TEMPLATE,
        name=repo or "textfit model",
        task=manifest.task,
        base=manifest.base_model,
        labels=", ".join(f"`{n}`" for n in manifest.label_names[:30])
        + (" ..." if len(manifest.label_names) > 30 else ""),
        data=", ".join(f"{n} {k} rows" for n, k in sizes.items()) + (f" ({data_name})" if data_name else ""),
        steps=manifest.steps,
        took=f" in {manifest.train_seconds:.0f} s" if manifest.train_seconds else "",
        evaluation=_table(metrics),
        per_class=_per_class(metrics),
        repo=repo or "PATH/TO/RUN",
        example=EXAMPLE,
        recipe=recipe,
        warnings=("\n## Data warnings (textfit inspect)\n\n" + warnings) if warnings else "",
        calibration=_calibration(manifest, metrics),
        usage=extra.get("usage", USAGE).format(repo=repo or "PATH/TO/RUN", example="a text to classify"),
        method=extra.get("section", ""),
    )


def _calibration(manifest: RunManifest, metrics: dict[str, Any]) -> str:
    """What the pipeline does not know: textfit's probabilities are divided by a temperature first."""
    t = manifest.temperature
    if t is None:
        return ""
    shown = f"{t:.4f}" if isinstance(t, float) else "one per label: " + ", ".join(f"{x:.4f}" for x in t)
    split = "test" if "calibration" in metrics.get("test", {}) else "validation"
    c = metrics.get(split, {}).get("calibration")
    figures = (
        f" On the {split} split, the expected calibration error went from {c['before']['ece']:.4f} to "
        f"{c['after']['ece']:.4f}."
        if c
        else ""
    )
    return (
        f"\n\ntextfit calibrates the probabilities with temperature scaling fitted on the validation split: "
        f"the logits are divided by {shown} before the softmax{' (sigmoid)' if manifest.task == 'multi-label' else ''}"
        f" (`temperature` in textfit.json).{figures} `pipeline` gives the uncalibrated probabilities; the "
        "predicted labels are the same."
    )


def write_model_card(folder: Path, *args: Any, **kwargs: Any) -> None:
    model_card(*args, **kwargs).save(str(folder / "README.md"))
