"""Hyperparameter search with Optuna: `textfit tune`, the train flags plus a search space.

    textfit tune --data sst2.csv --trials 20 --output runs/sst2-search          # SQLite study in the folder
    textfit tune --data sst2.csv --trials 20 --storage postgresql://host/db      # several machines, one study

Each trial is a normal run folder (OUTPUT/trial-N) trained on the same data split; the TPE sampler
proposes, and the median pruner stops trials whose intermediate evaluations (the ones training makes
anyway, every --eval-steps) fall behind. The study lives in an RDB storage (SQLite by default), so a
search survives a crash and a second `tune` into the same folder continues it: --trials is the number
of finished (complete or pruned) trials the study should have. At the end: best_config.yaml (which
`textfit train --config` takes), trials.csv, and plots of the optimisation history and the
parameters' importances.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Any

import yaml

from textfit.config import FIELDS, TrainConfig
from textfit.errors import UsageError
from textfit.metrics import LOWER_IS_BETTER
from textfit.run import check_output, write_json
from textfit.textfiles import read_yaml_text

DEFAULT_SPACE: dict[str, Any] = {
    "learning_rate": {"low": 1e-5, "high": 5e-4, "log": True},
    "batch_size": [16, 32],
    "epochs": {"low": 1, "high": 4},
    "warmup_ratio": {"low": 0.0, "high": 0.2},
    "weight_decay": {"low": 0.0, "high": 0.1},
    "layer_lr_decay": {"low": 0.6, "high": 1.0},
}
MARKER = "tune.json"


def load_space(path: str | None) -> dict[str, Any]:
    """The search space: a YAML mapping of train options to a list of choices or {low, high, log}."""
    if path is None:
        return DEFAULT_SPACE
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--tune-space {path}: no such file")
    try:
        space = yaml.safe_load(read_yaml_text(f"--tune-space {path}", p))
    except yaml.YAMLError as e:
        raise UsageError(f"--tune-space {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(space, dict) or not space:
        raise UsageError(
            f"--tune-space {path}: expected a mapping of option: choices, e.g. learning_rate: "
            f"{{low: 1e-5, high: 1e-3, log: true}}"
        )
    for key, value in space.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS or name in ("data", "train", "output", "seed", "seeds"):
            raise UsageError(f"--tune-space {path}: '{key}' is not a train option that can be searched")
        ok = (isinstance(value, list) and value) or (
            isinstance(value, dict)
            and {"low", "high"} <= set(value) <= {"low", "high", "log", "step"}
            and isinstance(value["low"], (int, float))
            and isinstance(value["high"], (int, float))
            and value["low"] < value["high"]
        )
        if not ok:
            raise UsageError(
                f"--tune-space {path}: '{key}' needs a list of choices or {{low, high}} with low < high (and log: true)"
            )
    return {str(k).replace("-", "_"): v for k, v in space.items()}


def suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            params[name] = trial.suggest_categorical(name, spec)
            continue
        kind = str(FIELDS[name].type)
        whole = isinstance(spec["low"], int) and isinstance(spec["high"], int) and not spec.get("log")
        if kind.startswith("int") or whole:
            value: Any = trial.suggest_int(name, int(spec["low"]), int(spec["high"]), step=int(spec.get("step", 1)))
            params[name] = float(value) if kind.startswith("float") else value
        else:
            params[name] = trial.suggest_float(name, spec["low"], spec["high"], log=bool(spec.get("log", False)))
    return params


def default_output(cfg: TrainConfig) -> Path:
    """runs/tune-<data name>: where a search without --output goes (a second search there resumes it)."""
    from textfit.data.read import data_stem

    return Path(f"runs/tune-{data_stem(cfg.data or cfg.train or 'data')}")


def _folder(cfg: TrainConfig) -> Path:
    out = Path(cfg.output) if cfg.output else default_output(cfg)
    check_output(out, "--output", folder=True)
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UsageError(
            f"--output {out}: the folder holds something other than a textfit search; pass another --output"
        )
    return out


def task_metric(cfg: TrainConfig) -> str:
    """The metric the search optimises: --metric-for-best-model, else the default of the data's task as training
    detects it (classification accuracy, multi-label micro F1, regression mean squared error), checked against
    what evaluation produces for that task. The data is read here, before anything is written."""
    from textfit.data import load_data
    from textfit.train import methods
    from textfit.train.checks import best_metric

    asked = methods.check(cfg)
    read = asked and methods.hook(asked, "read_data")
    return best_metric(cfg, read(cfg) if read else load_data(cfg))


def _study(cfg: TrainConfig, folder: Path, storage: str | None, name: str, metric: str) -> Any:
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    url = storage or f"sqlite:///{(folder / 'study.db').absolute()}"
    direction = "minimize" if metric in LOWER_IS_BETTER else "maximize"
    try:
        with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna 4: said once per run, not ours
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            rdb = optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
        study = optuna.create_study(
            study_name=name,
            storage=rdb,
            direction="minimize" if direction == "minimize" else "maximize",
            load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=cfg.seed),
            pruner=optuna.pruners.MedianPruner(n_warmup_steps=1),
        )
    except (ImportError, ValueError, OSError, SQLAlchemyError, optuna.exceptions.OptunaError) as e:
        shown = url if storage else "the study file"
        reason = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise UsageError(
            f"--storage {shown}: cannot open the study ({reason}); check the URL and that the database is running"
        ) from None
    optuna.storages.fail_stale_trials(study)  # trials of a crashed run: marked failed, tried again
    write_json(
        folder / MARKER,
        {"storage": url if storage else "study.db", "study": name, "metric": metric, "direction": direction},
    )
    return study, metric


def tune(
    cfg: TrainConfig,
    space: dict[str, Any],
    trials: int,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str = "textfit",
) -> dict[str, Any]:
    """Run (or continue) the search; returns the best trial's parameters and score."""
    import optuna
    from optuna.trial import TrialState

    from textfit.train import train

    if trials < 1:
        raise UsageError(f"--trials {trials}: must be at least 1")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise UsageError(f"--timeout {timeout}: must be a positive number of seconds")
    folder = _folder(cfg)
    metric = task_metric(cfg)
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        study, metric = _study(cfg, folder, storage, study_name, metric)
    except UsageError:
        if made and not any(folder.iterdir()):  # nothing half-written: the empty folder this call made goes
            folder.rmdir()
        raise
    split_seed = cfg.split_seed if cfg.split_seed is not None else cfg.seed  # every trial: the same split

    def objective(trial: Any) -> float:
        params = suggest(trial, space)
        run_cfg = dataclasses.replace(
            cfg,
            **params,
            output=str(folder / f"trial-{trial.number}"),
            overwrite=True,
            split_seed=split_seed,
            seeds=None,
            report_to="none",
            push_to_hub=None,
        )

        def report(step: int, metrics: dict[str, Any]) -> None:
            trial.report(float(metrics[metric]), step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")

        result = train(run_cfg, on_evaluate=report)
        if "validation" not in result.metrics:
            raise UsageError("textfit tune needs a validation split: pass --validation FILE or a --split with one")
        return float(result.metrics["validation"][metric])

    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if done < trials:
        study.optimize(
            objective,
            n_trials=trials - done,
            timeout=timeout,
            catch=(),
            callbacks=[optuna.study.MaxTrialsCallback(trials, states=finished)],
        )
    return _summarise(study, cfg, folder, metric)


def _summarise(study: Any, cfg: TrainConfig, folder: Path, metric: str) -> dict[str, Any]:
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    frame = study.trials_dataframe()
    frame.to_csv(folder / "trials.csv", index=False)
    print(frame.to_string(index=False, max_colwidth=24))
    if not complete:
        raise UsageError(f"no trial of the study in {folder} completed (all pruned or failed); raise --trials")
    best = study.best_trial
    defaults = TrainConfig(data="x").to_dict()
    base = {
        k: v for k, v in cfg.to_dict().items() if v != defaults.get(k) and k not in ("output", "overwrite", "seeds")
    }
    (folder / "best_config.yaml").write_text(yaml.safe_dump({**base, **best.params}, sort_keys=False), encoding="utf-8")
    _plots(study, folder)
    print(
        f"textfit: best trial {best.number}: validation {metric} {best.value:.4f} with "
        f"{json.dumps(best.params)}; wrote {folder / 'best_config.yaml'} (textfit train --config), trials.csv and plots"
    )
    return {"best_params": best.params, "best_value": best.value, "folder": str(folder), "trials": len(study.trials)}


def optuna_warning() -> type[Warning]:
    from optuna.exceptions import ExperimentalWarning

    return ExperimentalWarning


def _plots(study: Any, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import warnings

    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    warnings.filterwarnings("ignore", category=optuna_warning())
    warnings.filterwarnings("ignore", message="Target and region quantiles")
    for name, draw in (
        ("optimization_history.png", ovm.plot_optimization_history),
        ("param_importances.png", ovm.plot_param_importances),
    ):
        try:
            ax = draw(study)
        except (ValueError, RuntimeError, ZeroDivisionError):  # importances need two complete trials that differ
            continue
        figure: Any = ax.figure if hasattr(ax, "figure") else plt.gcf()
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        figure.savefig(folder / name, dpi=110)
        plt.close(figure)
