"""The training methods, one module each, and the one place that picks one (`--method`).

    method = methods.requested(cfg)                       # the name asked for: auto, finetune, contrastive, ...
    module, why = methods.pick(cfg, data, model, processes)   # the module that runs, and why (for the log)
    methods.register("majority", "my_package.majority")   # a method from outside: one module, one line

The spine (train/setup.py -> train/loop.py -> train/finish.py) asks the chosen module the same few questions
and names no method. A method module is a plain module of functions and constants, no base class; each is
optional but NAME, and `hook(module, name)` gives the spine's default when a module leaves one out:

    NAME                    the --method value
    LOOP = True             the shared loop trains the model; False: `fit` makes it, the loop only evaluates
    LAYERS = True           the model has encoder layers (layer-wise rate decay, --freeze-layers apply)
    FP32 = False            trains in fp32 whatever --precision says
    BATCH_SIZE, EPOCHS, LEARNING_RATE   its defaults (None: the spine's, by model size)
    DEFAULTS_FOR            how the log names whose defaults those are, e.g. "a static student"
    check(cfg)                              refusals of flags, before any data is read
    read_data(cfg) -> TrainingData          its own training data (default: the --data files)
    build(cfg, data, say) -> (path, model, tokenizer)   its own model (default: the checkpoint, a new head)
    teacher(cfg, data, out, say) -> Distillation | None  a teacher's scores, when it learns from one
    fit(state)                              its own fitting (LOOP False), or what it prepares before the loop
    record(state, final, logits)            what it adds to the manifest once trained
    card(manifest, config) -> dict          its model-card section (and the card's usage, library and tags)

`--method auto` picks fine-tuning or the contrastive method by the size of the training split
(`auto_choice`). The flags that named a method before `--method` did (`--zero-shot`,
`--model static`, `--student static`, the `distill` command's teacher) are read here, and only here.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from textfit.errors import UsageError

METHODS: dict[str, str] = {
    "finetune": "textfit.train.methods.finetune",
    "contrastive": "textfit.train.methods.contrastive",
    "zero-shot": "textfit.train.methods.zeroshot",
    "distill": "textfit.train.methods.distill",
    "static": "textfit.train.methods.static",
}
STATIC_MODEL = "static"  # --model static / --student static: the static student, as those flags name it
CHOICES = ("auto", *METHODS)

_DEFAULTS: dict[str, Any] = {
    "LOOP": True,
    "LAYERS": True,
    "FP32": False,
    "BATCH_SIZE": None,
    "EPOCHS": None,
    "LEARNING_RATE": None,
    "DEFAULTS_FOR": "this model size",
}


def register(name: str, module: str) -> None:
    """Add a method: `module` (an importable module name) answers the spine's questions for `--method name`."""
    METHODS[name] = module


def get(name: str) -> ModuleType:
    if name not in METHODS:
        raise UsageError(f"--method {name}: not one of {', '.join(('auto', *METHODS))}")
    return importlib.import_module(METHODS[name])


def hook(module: ModuleType, name: str) -> Any:
    """`module`'s answer to `name` (a constant or a function), or the spine's default (None for a function)."""
    return getattr(module, name, _DEFAULTS.get(name))


def requested(cfg: Any) -> str:
    """The method the flags ask for: --method, or the flags that named one before it did."""
    method = cfg.method
    if method not in ("auto", *METHODS):
        raise UsageError(f"--method: '{method}' is not one of {', '.join(('auto', *METHODS))}")
    implied = []
    if cfg.zero_shot:
        implied.append(("--zero-shot", "zero-shot"))
    if cfg.model == STATIC_MODEL:
        implied.append((f"--model {STATIC_MODEL}", "static"))
    elif cfg.teacher:
        implied.append(("textfit distill", "distill"))
    for flag, name in implied:
        if method not in ("auto", name) and not (name == "distill" and method == "static"):
            raise UsageError(f"{flag} trains by the {name} method, not --method {method}; drop one of them")
    if method == "auto" and implied:
        method = implied[0][1]
    if method == "distill" and not cfg.teacher:
        raise UsageError("--method distill: needs a teacher; run 'textfit distill TEACHER_RUN --data FILE'")
    return method


def check(cfg: Any) -> ModuleType | None:
    """The requested method's refusals of flags (nothing read yet); its module, or None for auto."""
    name = requested(cfg)
    for other in METHODS:  # a method's own flags given to another one are named, not silently left aside
        refuse = getattr(importlib.import_module(METHODS[other]), "refuse_elsewhere", None)
        if other != name and refuse is not None:
            refuse(cfg, name)
    module = None if name == "auto" else get(name)
    if (module is None or hook(module, "read_data") is None) and cfg.data is None and cfg.train is None:
        raise UsageError("no data: pass --data FILE (or a folder or hub id), or --train FILE")
    if module is not None and (fn := hook(module, "check")) is not None:
        fn(cfg)
    return module


def pick(cfg: Any, data: Any, model: Any, processes: int = 1) -> tuple[ModuleType, str]:
    """The method that runs, and why (the log says it)."""
    name = requested(cfg)
    flag = f"--method {name}" if cfg.method == name else {"zero-shot": "--zero-shot"}.get(name, "")
    if name == "auto":
        name, why = auto_choice(cfg, data, model, processes)
    else:
        why = {
            "static": "a static student",
            "distill": "textfit distill: the student learns the teacher's scores",
            "zero-shot": "--zero-shot: the labels' descriptions, no training rows",
        }.get(name, flag)
    module = get(name)
    if processes > 1 and not hook(module, "LOOP"):
        raise UsageError(
            f"{flag or '--method ' + name}: runs in one process; start textfit without torchrun / accelerate launch"
        )
    if (fn := getattr(module, "check_model", None)) is not None:
        fn(cfg, data, model)
    return module, why


def auto_choice(cfg: Any, data: Any, model: Any, processes: int = 1) -> tuple[str, str]:
    """--method auto: "contrastive" or "finetune", and why (for the log line). The contrastive pass runs in one
    process (its cost is seconds to minutes, and the head is fitted in closed form)."""
    from textfit.train.methods.contrastive import FEW_SHOT_ROWS, SUPPORTED, smallest_class, supports

    rows, task = len(data.splits["train"].texts), data.schema.task
    if processes > 1:
        return "finetune", f"{processes} processes: the contrastive method runs in one, fine-tuning in several"
    if task == "regression":
        return "finetune", "a regression task (the contrastive method needs classes)"
    if rows >= FEW_SHOT_ROWS:
        return "finetune", f"{rows:,} training rows, at least the {FEW_SHOT_ROWS:,} where fine-tuning overtakes"
    if not supports(model):
        return "finetune", f"{rows:,} training rows, but the contrastive method supports {SUPPORTED} only"
    if cfg.lora or cfg.layers or cfg.teacher or cfg.long_text == "window":
        return "finetune", f"{rows:,} training rows, but --lora/--layers/distillation/windows fine-tune"
    smallest = smallest_class(data)
    if smallest[1] < 2:
        return "finetune", f"{rows:,} training rows, but label {smallest[0]} has a single row to pair"
    return "contrastive", f"{rows:,} training rows, under the {FEW_SHOT_ROWS:,} where fine-tuning overtakes"
