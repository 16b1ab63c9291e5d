"""accel.cpu: textfit's precision and kernels follow what oneDNN and ATen will run, not CPUID alone."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from textfit import accel
from textfit.accel import attention, cpu

CAPPED = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


@pytest.fixture
def fresh_kind():
    """The kind and the TEXTFIT_* switches read afresh (each is read once per process), and again after."""
    cpu.kind.cache_clear()
    accel.settings.cache_clear()
    yield
    cpu.kind.cache_clear()
    accel.settings.cache_clear()


@pytest.mark.parametrize(
    "value,want",
    [("AVX2", 2), ("avx512_core", 5), ("AVX512_CORE_AMX", 9), ("ALL", None), ("", None), ("nonsense", None)],
)
def test_the_onednn_cap_is_read_with_onednns_names(monkeypatch, value, want):
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", value)
    assert cpu.onednn_cap() == want


def test_an_avx2_cap_means_no_bf16_and_no_avx512_kernels(monkeypatch, fresh_kind):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    k = cpu.kind()
    assert not k.bf16 and not k.amx and not k.avx512
    assert k.name in ("avx2", "other")
    assert not accel.bf16_supported(torch.device("cpu"))
    assert accel.autocast_dtype("auto", torch.device("cpu")) is None
    monkeypatch.setattr(attention, "_state", {})  # decided afresh, under the cap
    assert "no AMX" in accel.fused_attention_unavailable()


def test_bf16_can_be_turned_off_alone(monkeypatch, fresh_kind):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("TEXTFIT_CPU_BF16", "0")
    assert not cpu.kind().bf16
    if torch.cpu._is_avx512_bf16_supported() and torch.backends.cpu.get_cpu_capability() == "AVX512":
        assert "TEXTFIT_CPU_BF16=0" in cpu.describe()


def test_without_a_cap_the_kind_follows_cpuid(monkeypatch, fresh_kind):
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "TEXTFIT_CPU_BF16"):
        monkeypatch.delenv(name, raising=False)
    k = cpu.kind()
    if torch.backends.cpu.get_cpu_capability() == "AVX512":  # ATEN_CPU_CAPABILITY is read once, at import
        assert k.bf16 == bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        assert k.amx == (k.bf16 and torch.cpu._is_amx_tile_supported())


def test_a_capped_process_trains_and_predicts_in_fp32(tmp_path, tiny_model):
    """The switch the suite uses to prove a no-bf16 CPU's path: the run says fp32 and the kind it saw."""
    from conftest import make_rows, write_csv

    data = write_csv(tmp_path / "d.csv", make_rows(40))
    env = {**os.environ, **CAPPED}
    cmd = [sys.executable, "-m", "textfit", "train", "--data", str(data), "--model", tiny_model, "--epochs", "1"]
    r = subprocess.run([*cmd, "--output", str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "precision fp32" in r.stdout + r.stderr and "ONEDNN_MAX_CPU_ISA=AVX2" in r.stdout + r.stderr
    assert json.loads((tmp_path / "run" / "textfit.json").read_text())["precision"] == "fp32"
    probe = (
        f"from textfit import Classifier; c = Classifier.load({str(tmp_path / 'run')!r}); "
        "print(c.backend.dtype, next(c.backend.model.parameters()).dtype)"
    )
    r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["None", "torch.float32"]


def test_each_switch_is_off_only_when_its_variable_is_0(monkeypatch):
    switches = {
        "fused_attention": "TEXTFIT_FUSED_ATTENTION",
        "fused_dropout": "TEXTFIT_FUSED_DROPOUT",
        "malloc_tuning": "TEXTFIT_MALLOC_TUNING",
        "first_token": "TEXTFIT_FIRST_TOKEN",
        "cpu_bf16": "TEXTFIT_CPU_BF16",
    }
    assert set(switches) == {f.name for f in dataclasses.fields(accel.Settings)}
    for field, variable in switches.items():
        monkeypatch.delenv(variable, raising=False)
        assert getattr(accel.Settings.from_environment(), field) is True
        for value, on in (("0", False), ("1", True), ("", True), ("off", True)):
            monkeypatch.setenv(variable, value)
            assert getattr(accel.Settings.from_environment(), field) is on
        monkeypatch.delenv(variable)
