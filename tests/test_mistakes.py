"""A catalogue of realistic user mistakes, for every subcommand: each ends in one line on stderr,
exit code 2, no traceback, and no file of the user's changed or deleted.

Each case runs `textfit.cli.main` in-process (fast: no interpreter start) in a fresh folder that holds
a few data files, a trained run and some user files; the folder's files are compared before and after.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
from pathlib import Path

import pytest

from conftest import make_rows, write_csv
from textfit import TrainConfig, train
from textfit.cli.parser import main

FAST = dict(epochs=1, batch_size=8, learning_rate=1e-2, precision="fp32", freeze_word_embeddings=False)
T = ["train", "--model", "{model}", "--max-steps", "1"]  # a train command that would be quick if it ran

CASES = [
    # train: data
    ("train-no-file", [*T, "--data", "nope.csv"], "nope.csv: no such file"),
    ("train-format", [*T, "--data", "notes.txt"], "unsupported format '.txt'"),
    ("train-empty-file", [*T, "--data", "empty.csv"], "the file is empty"),
    ("train-header-only", [*T, "--data", "header.csv"], "has a header but no rows"),
    ("train-text-column", [*T, "--data", "r.csv", "--text-column", "body"], "--text-column body: no such column"),
    ("train-label-column", [*T, "--data", "r.csv", "--label-column", "stars"], "--label-column stars: no such column"),
    ("train-one-class", [*T, "--data", "oneclass.csv"], "needs at least two classes"),
    ("train-missing-labels", [*T, "--data", "nolabel.csv"], "rows have no label"),
    ("train-empty-texts", [*T, "--data", "emptytexts.csv"], "have an empty text"),
    ("train-duplicate-header", [*T, "--data", "duphead.csv"], "column name 'text' appears twice"),
    ("train-mixed-labels", [*T, "--data", "mixed.csv"], "mixes numbers and names"),
    (
        "train-unseen-val-label",
        [*T, "--train", "r.csv", "--validation", "unseen.csv"],
        "never appears in the training data",
    ),
    ("train-gbk", [*T, "--data", "gbk.csv"], "not valid utf-8"),
    ("train-bad-encoding", [*T, "--data", "r.csv", "--encoding", "klingon"], "--encoding klingon: unknown encoding"),
    ("train-headerless-index", [*T, "--data", "headerless.csv", "--text-column", "5"], "--text-column 5: "),
    ("train-data-and-train", [*T, "--data", "r.csv", "--train", "r.csv"], "--data and --train both given"),
    ("train-no-data", [*T], "no data: pass --data"),
    # train: numbers
    ("train-epochs-nan", [*T, "--data", "r.csv", "--epochs", "nan"], "--epochs"),
    ("train-epochs-zero", [*T, "--data", "r.csv", "--epochs", "0"], "--epochs: must be positive"),
    ("train-lr-nan", [*T, "--data", "r.csv", "--learning-rate", "nan"], "--learning-rate"),
    ("train-lr-inf", [*T, "--data", "r.csv", "--learning-rate", "inf"], "--learning-rate"),
    ("train-lr-negative", [*T, "--data", "r.csv", "--learning-rate", "-1"], "--learning-rate: must be positive"),
    ("train-lr-word", [*T, "--data", "r.csv", "--learning-rate", "fast"], "--learning-rate: invalid float value"),
    ("train-seed-huge", [*T, "--data", "r.csv", "--seed", str(2**70)], "--seed"),
    ("train-seed-negative", [*T, "--data", "r.csv", "--seed", "-5"], "--seed"),
    ("train-batch-zero", [*T, "--data", "r.csv", "--batch-size", "0"], "--batch-size: must be at least 1"),
    (
        "train-max-length",
        [*T, "--data", "r.csv", "--max-length", "9999"],
        "--max-length 9999: the model accepts at most",
    ),
    ("train-split-sum", [*T, "--data", "r.csv", "--split", "80,30,10"], "--split 80,30,10"),
    ("train-split-two", [*T, "--data", "r.csv", "--split", "80,20"], "--split 80,20"),
    ("train-warmup", [*T, "--data", "r.csv", "--warmup-ratio", "1.5"], "--warmup-ratio"),
    ("train-weight-decay-nan", [*T, "--data", "r.csv", "--weight-decay", "nan"], "--weight-decay"),
    ("train-grad-norm-negative", [*T, "--data", "r.csv", "--max-grad-norm", "-1"], "--max-grad-norm"),
    ("train-device-cuda", [*T, "--data", "r.csv", "--device", "cuda"], "--device cuda: no CUDA device is visible"),
    ("train-device-word", [*T, "--data", "r.csv", "--device", "tpu"], "--device: 'tpu' is not one of"),
    ("train-precision", [*T, "--data", "r.csv", "--precision", "fp8"], "--precision: 'fp8' is not one of"),
    ("train-task", [*T, "--data", "r.csv", "--task", "ranking"], "--task: 'ranking' is not one of"),
    ("train-metric", [*T, "--data", "r.csv", "--metric-for-best-model", "f2"], "--metric-for-best-model f2"),
    (
        "train-threshold-3-classes",
        [*T, "--data", "three.csv", "--tune-threshold"],
        "--tune-threshold: applies to binary",
    ),
    ("train-class-weights", [*T, "--data", "r.csv", "--class-weights", "1,2,3"], "--class-weights 1,2,3"),
    ("train-lora-zero", [*T, "--data", "r.csv", "--lora", "0"], "--lora: the rank must be at least 1"),
    ("train-lora-frozen", [*T, "--data", "r.csv", "--lora", "4", "--freeze-backbone"], "--lora and --freeze-backbone"),
    ("train-attention-dropout", [*T, "--data", "r.csv", "--attention-dropout", "1.5"], "--attention-dropout 1.5"),
    ("train-stride", [*T, "--data", "r.csv", "--stride", "-1"], "--stride: must be 0 or more"),
    ("train-seeds", [*T, "--data", "r.csv", "--seeds", "1,1"], "--seeds 1,1"),
    ("train-label-names", [*T, "--data", "ints.csv", "--label-names", "a,b,c"], "--label-names"),
    ("train-max-train-samples", [*T, "--data", "r.csv", "--max-train-samples", "0"], "--max-train-samples: must be"),
    (
        "train-eval-steps-no-validation",
        [*T, "--data", "r.csv", "--split", "100,0,0", "--eval-steps", "2"],
        "need a validation split",
    ),
    # train: configs and models
    ("train-config-missing", [*T, "--config", "missing.yaml"], "--config missing.yaml: no such file"),
    ("train-config-yaml", [*T, "--config", "broken.yaml"], "not valid YAML"),
    ("train-config-key", [*T, "--config", "typo.yaml"], "unknown option 'learning_rat'"),
    ("train-model-folder", ["train", "--data", "r.csv", "--model", "./no-model"], "--model ./no-model: no such folder"),
    ("train-model-pickle", ["train", "--data", "r.csv", "--model", "pickled"], "which textfit never unpickles"),
    ("train-model-offline", ["train", "--data", "r.csv", "--model", "nobody/nothing"], "not in the Hugging Face cache"),
    # train: output
    ("train-output-file", [*T, "--data", "r.csv", "--output", "notes.txt"], "--output notes.txt: is a file"),
    ("train-output-user-folder", [*T, "--data", "r.csv", "--output", "mine", "--overwrite"], "not a textfit run"),
    (
        "train-output-holds-data",
        [*T, "--data", "mine/data.csv", "--output", "mine", "--overwrite"],
        "would delete the input data",
    ),
    (
        "train-output-run-holds-data",
        [*T, "--data", "oldrun/data.csv", "--output", "oldrun", "--overwrite"],
        "would delete the input data",
    ),
    ("train-case-labels", [*T, "--data", "case.csv"], "differ only by case"),
    ("train-list-column", [*T, "--data", "tokens.parquet", "--text-column", "tokens"], "holds lists"),
    ("train-output-not-empty", [*T, "--data", "r.csv", "--output", "mine"], "the folder exists and is not empty"),
    ("train-output-under-file", [*T, "--data", "r.csv", "--output", "notes.txt/run"], "--output notes.txt/run"),
    ("train-output-too-long", [*T, "--data", "r.csv", "--output", "x" * 300], "--output"),
    ("train-resume-no-output", [*T, "--data", "r.csv", "--resume"], "--resume needs --output"),
    ("train-resume-nothing", [*T, "--data", "r.csv", "--output", "fresh", "--resume"], "no complete checkpoint"),
    # inspect
    ("inspect-no-file", ["inspect", "--data", "nope.csv"], "nope.csv: no such file"),
    (
        "inspect-report-folder",
        ["inspect", "--data", "r.csv", "--model", "{model}", "--report", "mine"],
        "--report mine",
    ),
    (
        "inspect-report-under-file",
        ["inspect", "--data", "r.csv", "--model", "{model}", "--report", "notes.txt/r.json"],
        "--report",
    ),
    # eval
    ("eval-no-run", ["eval", "nowhere", "--data", "r.csv"], "nowhere: no such run folder"),
    ("eval-not-a-run", ["eval", "mine", "--data", "r.csv"], "not a textfit run"),
    ("eval-pickle-run", ["eval", "pickled", "--data", "r.csv"], "not a textfit run"),
    ("eval-no-data", ["eval", "{run}", "--data", "nope.csv"], "nope.csv: no such file"),
    ("eval-plain-folder", ["eval", "{run}", "--data", "mine"], "not one written by datasets.save_to_disk"),
    ("eval-unknown-labels", ["eval", "{run}", "--data", "three.csv"], "is not one the model knows"),
    ("eval-label-column", ["eval", "{run}", "--data", "r.csv", "--label-column", "stars"], "--label-column stars"),
    ("eval-batch-zero", ["eval", "{run}", "--data", "r.csv", "--batch-size", "0"], "--batch-size"),
    ("eval-output-file", ["eval", "{run}", "--data", "r.csv", "--output", "notes.txt"], "--output notes.txt"),
    ("eval-onnx-missing", ["eval", "{run}", "--data", "r.csv", "--backend", "onnx"], "run 'textfit export"),
    ("eval-adapter", ["eval", "{run}", "--data", "r.csv", "--adapter"], "was not trained with --lora"),
    # predict
    ("predict-nothing", ["predict", "{run}"], "nothing to predict"),
    ("predict-empty-text", ["predict", "{run}", ""], "empty text"),
    ("predict-blank-text", ["predict", "{run}", "   "], "empty text"),
    ("predict-input-no-output", ["predict", "{run}", "--input", "texts.csv"], "--input needs --output"),
    ("predict-output-no-input", ["predict", "{run}", "hi", "--output", "p.csv"], "--output needs --input"),
    ("predict-output-format", ["predict", "{run}", "--input", "texts.csv", "--output", "p.xlsx"], "unsupported format"),
    ("predict-empty-row", ["predict", "{run}", "--input", "holes.csv", "--output", "p.csv"], "empty text"),
    ("predict-text-pair-single", ["predict", "{run}", "hi", "--text-pair", "there"], "classifies single texts"),
    (
        "predict-output-under-file",
        ["predict", "{run}", "--input", "texts.csv", "--output", "notes.txt/p.csv"],
        "--output",
    ),
    ("predict-no-column", ["predict", "{run}", "--input", "twocols.csv", "--output", "p.csv"], "no text column found"),
    ("predict-not-a-run", ["predict", "mine", "hi"], "not a textfit run"),
    ("predict-pickled-weights", ["predict", "pickle-run", "hi"], "never unpickles"),
    ("predict-device-cuda", ["predict", "{run}", "hi", "--device", "cuda"], "--device cuda: no CUDA device"),
    ("serve-device-mps", ["serve", "{run}", "--device", "mps"], "--device mps: no MPS device"),
    ("predict-batch-zero", ["predict", "{run}", "hi", "--batch-size", "0"], "--batch-size"),
    # export
    ("export-no-run", ["export", "nowhere", "--format", "onnx"], "nowhere: no such run folder"),
    ("export-not-a-run", ["export", "mine", "--format", "onnx"], "not a textfit run"),
    ("export-output-file", ["export", "{run}", "--format", "onnx", "--output", "notes.txt"], "--output notes.txt"),
    ("export-format", ["export", "{run}", "--format", "tflite"], "argument --format: invalid choice"),
    # serve
    ("serve-no-run", ["serve", "nowhere"], "nowhere: no such run folder"),
    ("serve-max-batch", ["serve", "{run}", "--max-batch", "0"], "--max-batch"),
    ("serve-timeout", ["serve", "{run}", "--timeout", "0"], "--timeout"),
    ("serve-max-texts", ["serve", "{run}", "--max-texts", "-1"], "--max-texts"),
    ("serve-max-queue", ["serve", "{run}", "--max-queue", "0"], "--max-queue"),
    ("serve-wait", ["serve", "{run}", "--max-wait-ms", "nan"], "--max-wait-ms"),
    ("serve-port", ["serve", "{run}", "--port", "99999"], "--port 99999"),
    ("serve-port-in-use", ["serve", "{run}", "--port", "{busy_port}"], "is already in use"),
]


@pytest.fixture(scope="module")
def world(tiny_model, tmp_path_factory):
    """The user's folder: data files of every kind of mistake, a trained run, and files of their own."""
    d = tmp_path_factory.mktemp("world")
    rows = make_rows(60)
    write_csv(d / "r.csv", rows)
    (d / "notes.txt").write_text("my notes\n")
    (d / "empty.csv").write_text("")
    (d / "header.csv").write_text("text,label\n")
    write_csv(d / "oneclass.csv", [(t, "positive") for t, _ in rows])
    write_csv(d / "nolabel.csv", [(t, "" if i % 3 == 0 else y) for i, (t, y) in enumerate(rows)])
    write_csv(d / "emptytexts.csv", [("" if i % 3 == 0 else t, y) for i, (t, y) in enumerate(rows)])
    write_csv(d / "duphead.csv", [(t, t, y) for t, y in rows], header=["text", "text", "label"])
    write_csv(
        d / "mixed.csv", [(t, ("1" if y == "positive" else "0") if i % 2 else y[:3]) for i, (t, y) in enumerate(rows)]
    )
    write_csv(d / "unseen.csv", [(t, "neutral") for t, _ in rows[:10]])
    write_csv(d / "three.csv", [(t, ["a", "b", "c"][i % 3]) for i, (t, _) in enumerate(rows)])
    write_csv(d / "ints.csv", [(t, int(y == "positive")) for t, y in rows])
    write_csv(d / "headerless.csv", rows, header=None)
    (d / "gbk.csv").write_bytes("text,label\n酒店很好,1\n房间很差,0\n".encode("gb18030"))
    write_csv(d / "texts.csv", [(t,) for t, _ in rows[:5]], header=["text"])
    write_csv(d / "holes.csv", [("the film was good",), ("",), ("awful room",)], header=["text"])
    write_csv(d / "twocols.csv", [(t, "x") for t, _ in rows[:5]], header=["body", "note"])
    (d / "missing.yaml").unlink(missing_ok=True)
    (d / "broken.yaml").write_text("epochs: [1,\n")
    (d / "typo.yaml").write_text("learning_rat: 0.1\ndata: r.csv\n")
    (d / "mine").mkdir()
    write_csv(d / "mine" / "data.csv", rows)
    (d / "mine" / "thesis.tex").write_text("\\section{mine}\n")
    write_csv(d / "case.csv", [(t, y.upper() if i % 4 == 0 else y) for i, (t, y) in enumerate(rows)])
    import pandas as pd

    pd.DataFrame({"tokens": [t.split() for t, _ in rows], "label": [y for _, y in rows]}).to_parquet(
        d / "tokens.parquet"
    )
    (d / "pickled").mkdir()
    (d / "pickled" / "config.json").write_text('{"model_type": "bert"}')
    (d / "pickled" / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    run = train(TrainConfig(data=str(d / "r.csv"), model=tiny_model, output=str(d / "run"), **FAST))
    shutil.copytree(run["folder"], d / "oldrun")
    write_csv(d / "oldrun" / "data.csv", rows)  # someone keeps their data in a run folder
    shutil.copytree(run["folder"], d / "pickle-run")  # a run whose weights someone converted to a pickle
    (d / "pickle-run" / "model.safetensors").rename(d / "pickle-run" / "pytorch_model.bin")
    return d, run["folder"]


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_the_catalogue_is_large():
    assert len(CASES) >= 60
    assert len({name for name, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("name, args, match", CASES, ids=[c[0] for c in CASES])
def test_mistake(world, tiny_model, tmp_path, monkeypatch, capsys, name, args, match):
    d, run = world
    work = tmp_path / "w"
    shutil.copytree(d, work, ignore=shutil.ignore_patterns("run"))
    monkeypatch.chdir(work)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    fill = {"{model}": tiny_model, "{run}": run, "{busy_port}": str(busy.getsockname()[1])}
    before, run_before = _snapshot(work), _snapshot(Path(run))
    try:
        code = main([fill.get(a, a) for a in args])
    except SystemExit as e:  # argparse's own exit
        code = e.code
    finally:
        busy.close()
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    assert lines and lines[-1].startswith("textfit: error:") and match in lines[-1], err[-2000:]
    assert sum(x.startswith("textfit: error:") for x in lines) == 1
    after = _snapshot(work)
    assert {k: v for k, v in before.items() if after.get(k) != v} == {}  # nothing of the user's changed or deleted
    assert _snapshot(Path(run)) == run_before
    assert not any(p.name.startswith(".") and ".tmp" in p.name for p in work.rglob("*"))  # nothing half-written
    assert set(after) - set(before) <= set(), sorted(set(after) - set(before))  # nothing written
    assert os.getcwd() == str(work)
