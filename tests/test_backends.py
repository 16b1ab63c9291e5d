"""--backend auto|torch|onnx|openvino: what auto picks on each CPU kind, the int8 check the export records,
and the same labels through every backend (predict, eval, serve)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_rows, run_cli, write_csv
from textfit import Classifier, TrainConfig, train
from textfit.accel import cpu
from textfit.predict.classifier import choose_backend, int8_check
from textfit.predict.export import export_onnx

FAST = dict(  # a fine-tuned run (pinned: --method auto takes the contrastive pass on 128 rows, where 1e-2 is the
    # body rate and left a collapsed model on Zen 4, validation 0.56, whose int8 export then failed parity)
    method="finetune", epochs=6, batch_size=8, learning_rate=1e-2, precision="fp32", freeze_word_embeddings=False,
    layer_lr_decay=1.0,
)
NO_BF16 = cpu.CpuKind("avx2", avx512=False, bf16=False, amx=False, why="test")
BF16 = cpu.CpuKind("avx512-bf16", avx512=True, bf16=True, amx=False)


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("backends")
    data = write_csv(d / "r.csv", make_rows(160, seed=4))
    return train(TrainConfig(data=str(data), model=tiny_model, output=str(d / "run"), **FAST))["folder"]


def test_auto_is_pytorch_bf16_where_the_kernels_have_it(run, monkeypatch):
    monkeypatch.setattr(cpu, "kind", lambda: BF16)
    assert choose_backend(run)[:2] == ("torch", None)
    assert "PyTorch bf16" in choose_backend(run)[2]


def test_auto_without_bf16_uses_a_checked_int8_export_or_fp32(run, monkeypatch, tmp_path):
    monkeypatch.setattr(cpu, "kind", lambda: NO_BF16)
    backend, quantize, why = choose_backend(run)
    assert (backend, quantize) == ("torch", None) and "--quantize int8-dynamic' makes one" in why
    result = export_onnx(run, quantize="int8-dynamic")
    check = result["parity"]["int8_check"]
    assert check == int8_check(run)
    assert check["metric"] == "accuracy" and check["rows"] > 0 and 0 <= check["int8"] <= 1
    assert check["drop_points"] == pytest.approx(100 * (check["fp32"] - check["int8"]))
    assert check["passes"] == (check["drop_points"] <= 0.3)
    backend, quantize, why = choose_backend(run)
    assert (backend, quantize) == (("onnx", "int8-dynamic") if check["passes"] else ("torch", None))
    # An int8 file that lost too much: fp32, and the reason says how much.
    parity = Path(run) / "onnx" / "parity.json"
    saved = parity.read_text()
    try:
        parity.write_text(
            json.dumps({"int8_check": {**check, "int8": check["fp32"] - 0.01, "drop_points": 1.0, "passes": False}})
        )
        backend, _, why = choose_backend(run)
        assert backend == "torch" and "lost 1.00 points of validation accuracy" in why
        parity.write_text(json.dumps({"int8_check": {**check, "drop_points": 0.0, "passes": True}}))
        assert choose_backend(run)[:2] == ("onnx", "int8-dynamic")
        clf = Classifier.load(run, backend="auto")
        assert clf.backend_name == "onnx int8-dynamic" and "ONNX Runtime int8-dynamic" in clf.backend_choice
        # Flags that ask for PyTorch win over auto.
        assert choose_backend(run, precision="fp32")[0] == "torch"
    finally:
        parity.write_text(saved)


def test_the_check_is_recorded_unchecked_when_the_data_is_gone(run, tmp_path):
    import shutil

    copy = tmp_path / "moved"
    shutil.copytree(run, copy)
    cfg = (copy / "train_config.yaml").read_text()
    (copy / "train_config.yaml").write_text(cfg.replace("r.csv", "gone.csv"))
    check = export_onnx(str(copy), quantize="int8-dynamic")["parity"]["int8_check"]
    assert check["passes"] is False and "gone.csv" in check["unchecked"]
    assert "was not checked" in choose_backend(str(copy))[2] or cpu.kind().bf16
    # Data that changed since training: not the split the run was validated on.
    write_csv(tmp_path / "other.csv", make_rows(160, seed=5))
    (copy / "train_config.yaml").write_text(cfg.replace(str(Path(run).parent / "r.csv"), str(tmp_path / "other.csv")))
    check = export_onnx(str(copy), quantize="int8-dynamic")["parity"]["int8_check"]
    assert check["passes"] is False and "changed since the run was trained" in check["unchecked"]


def test_every_backend_gives_the_labels_of_pytorch_fp32(run):
    pytest.importorskip("openvino")
    if not (Path(run) / "onnx" / "model.onnx").is_file():
        export_onnx(run, quantize="int8-dynamic")
    texts = [t for t, _ in make_rows(50, seed=9)] + ["good", "a very long text " * 30]
    ref = Classifier.load(run, backend="torch", precision="fp32")
    want = ref.predict_proba(texts)
    for backend in ("onnx", "openvino"):
        got = Classifier.load(run, backend=backend)
        assert got.backend_name == backend
        np.testing.assert_allclose(got.predict_proba(texts), want, atol=1e-4)
    int8 = Classifier.load(run, backend="onnx", quantize="int8-dynamic").predict_proba(texts)
    assert (int8.argmax(1) == want.argmax(1)).mean() >= 0.9


def test_the_cli_prints_and_records_what_auto_chose(run, tmp_path):
    data = write_csv(tmp_path / "holdout.csv", make_rows(30, seed=11))
    r = run_cli("eval", run, "--data", str(data), "--output", str(tmp_path / "eval"))
    assert r.returncode == 0, r.stderr
    assert "textfit: backend " in r.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["backend"] in ("torch", "onnx int8-dynamic") and metrics["backend_choice"]
    r = run_cli("predict", run, "--backend", "openvino", "--quantize", "int8", "good")
    assert r.returncode == 2 and "--backend openvino runs the fp32 export" in r.stderr
    r = run_cli("predict", run, "--backend", "tpu", "good")
    assert r.returncode == 2 and "invalid choice: 'tpu'" in r.stderr
