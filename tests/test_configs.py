"""Every shipped config file loads into a valid TrainConfig; flags override files."""

from __future__ import annotations

import pytest

from conftest import ROOT
from textfit.config import TrainConfig, load_config
from textfit.errors import UsageError

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_configs_exist():
    assert len(CONFIGS) >= 7


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads(path):
    cfg = load_config(str(path), {})
    assert isinstance(cfg, TrainConfig) and (cfg.data or cfg.train) and cfg.output


def test_flags_override_file_and_defaults_stay_in_code(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("epochs: 2\nlearning-rate: 0.001\ndata: x.csv\n")
    cfg = load_config(str(p), {"epochs": 1.0})
    assert cfg.epochs == 1.0 and cfg.learning_rate == 0.001 and cfg.batch_size == TrainConfig().batch_size


@pytest.mark.parametrize(
    "text, match",
    [
        ("epochs: many\ndata: x\n", "--epochs: expected a number"),
        ("- 1\n", "expected a mapping"),
        ("data: x\nsplit: 80,20\n", "--split 80,20"),
    ],
)
def test_bad_config_values(tmp_path, text, match):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(UsageError, match=match):
        load_config(str(p), {})
