"""Experiment tracking through Accelerate's trackers (`--report-to tensorboard,mlflow,...`).

    trackers = Trackers(["tensorboard"], work_folder, "sst2", None, config)
    trackers.log({"loss": 0.4}, step=10); trackers.finish()

Each record of log.jsonl reaches every tracker: the training loss, learning rate and throughput by
step, every evaluation metric as eval/NAME, and the final metrics as final/SPLIT/NAME; the resolved
configuration is stored as hyperparameters. Offline by default: TensorBoard event files in the run
folder, MLflow in the SQLite file mlflow.db in the run folder (or --tracking-uri), W&B offline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from textfit.errors import UsageError

MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb", "trackio": "trackio"}


def check_installed(names: list[str]) -> None:
    import importlib.util

    missing = [n for n in names if importlib.util.find_spec(MODULES[n]) is None]
    if missing:
        raise UsageError(
            f"--report-to {','.join(names)}: the package {missing[0]} is not installed; "
            "pip install 'textfit[tracking]' (or pip install " + " ".join(missing) + ")"
        )
    if "mlflow" in names and (
        importlib.util.find_spec("sqlalchemy") is None or importlib.util.find_spec("alembic") is None
    ):
        raise UsageError(
            "--report-to mlflow: its SQLite store needs sqlalchemy and alembic; pip install 'textfit[tracking]'"
        )


def _flat(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out.update(_flat(f"{prefix}{k}/", v))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


class Trackers:
    def __init__(self, names: list[str], work: Path, run_name: str, tracking_uri: str | None, config: dict[str, Any]):
        from accelerate.tracking import MLflowTracker, TensorBoardTracker, TrackioTracker, WandBTracker

        self.trackers: list[Any] = []
        for name in names:
            if name == "tensorboard":
                tracker: Any = TensorBoardTracker("tensorboard", str(work))
            elif name == "mlflow":
                import mlflow

                mlflow.set_tracking_uri(tracking_uri or f"sqlite:///{(work / 'mlflow.db').absolute()}")
                tracker = MLflowTracker(experiment_name="textfit", run_name=run_name)
            elif name == "wandb":
                os.environ.setdefault("WANDB_MODE", "offline")
                tracker = WandBTracker("textfit", name=run_name, dir=str(work))
            else:
                tracker = TrackioTracker("textfit", name=run_name)
            tracker.start()
            tracker.store_init_configuration({k: v if v is not None else "" for k, v in config.items()})
            self.trackers.append(tracker)

    def log(self, record: dict[str, Any]) -> None:
        """One log.jsonl record: loss and rates, an evaluation ({"eval": ...}) or the final metrics."""
        if not self.trackers or "step" not in record:
            return
        step = int(record["step"])
        values = {k: v for k, v in record.items() if k not in ("step", "eval", "final", "epoch_end")}
        values = {
            **_flat("train/", values),
            **_flat("eval/", record.get("eval", {})),
            **_flat("final/", record.get("final", {})),
        }
        if values:
            for t in self.trackers:
                t.log(values, step=step)

    def finish(self) -> None:
        for t in self.trackers:
            t.finish()
        self.trackers = []
