"""The CLI through subprocesses: train -> eval -> predict, the prompt, and one-line errors."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import make_rows, run_cli, write_csv

TRAIN = [
    "--epochs",
    "5",
    "--batch-size",
    "8",
    "--learning-rate",
    "1e-2",
    "--precision",
    "fp32",
    "--no-freeze-word-embeddings",
]


@pytest.fixture(scope="module")
def cli_run(tiny_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    data = write_csv(d / "reviews.csv", make_rows(120))
    r = run_cli("train", "--data", str(data), "--model", tiny_model, "--output", str(d / "run"), *TRAIN)
    assert r.returncode == 0, r.stderr
    assert "label column: 'label'" in r.stdout and "saved the run" in r.stdout
    return d


def test_eval_writes_metrics(cli_run):
    holdout = write_csv(cli_run / "holdout.csv", make_rows(30, seed=5))
    r = run_cli("eval", str(cli_run / "run"), "--data", str(holdout))
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout and "positive" in r.stdout
    m = json.loads((cli_run / "run" / "eval-holdout" / "metrics.json").read_text())
    assert m["n"] == 30 and 0 <= m["accuracy"] <= 1 and set(m["per_class"]) == {"negative", "positive"}


def test_predict_texts_file_and_prompt(cli_run):
    run = str(cli_run / "run")
    r = run_cli("predict", run, "the film was good and lovely", "awful terrible room", "--json")
    assert r.returncode == 0, r.stderr
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert [o["text"] for o in out] == ["the film was good and lovely", "awful terrible room"]
    assert all(o["label"] in ("negative", "positive") and abs(sum(o["probabilities"].values()) - 1) < 1e-4 for o in out)

    texts = write_csv(cli_run / "texts.csv", [(t,) for t, _ in make_rows(10, seed=9)], header=["text"])
    for ext in ("csv", "jsonl"):
        r = run_cli("predict", run, "--input", str(texts), "--output", str(cli_run / f"preds.{ext}"))
        assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(cli_run / "preds.csv", encoding="utf-8")))
    assert len(rows) == 10 and set(rows[0]) == {"text", "label", "score", "prob_negative", "prob_positive"}
    recs = [json.loads(x) for x in (cli_run / "preds.jsonl").read_text().splitlines()]
    assert [r["label"] for r in recs] == [r["label"] for r in rows]

    r = run_cli("predict", run, "--interactive", stdin="good lovely film\nawful room\nq\nnever read\n")
    assert r.returncode == 0, r.stderr
    answers = [x for x in r.stdout.splitlines() if x.startswith(("negative", "positive"))]
    assert len(answers) == 2 and all("(" in a for a in answers)


@pytest.mark.parametrize(
    "args, match",
    [
        (["train", "--data", "nope.csv"], "nope.csv: no such file"),
        (["train", "--data", "{data}", "--text-column", "body"], "--text-column body: no such column"),
        (
            ["train", "--data", "{data}", "--model", "{model}", "--max-length", "9999"],
            "--max-length 9999: the model accepts at most 128",
        ),
        (["train", "--data", "{data}", "--model", "not-a-user/not-a-model"], "not in the Hugging Face cache"),
        (["train", "--data", "{data}", "--learning-rate", "fast"], "argument --learning-rate: invalid float value"),
        (["train", "--config", "{bad_config}"], "unknown option 'learning_rat'"),
        (["predict", "{dir}", "text"], "not a textfit run (no textfit.json)"),
        (["train", "--data", "{gbk}"], "not valid utf-8 (byte 0x"),
    ],
)
def test_errors_are_one_line_with_exit_2(tiny_model, tmp_path, args, match):
    data = write_csv(tmp_path / "r.csv", make_rows(40))
    (tmp_path / "bad.yaml").write_text("learning_rat: 0.1\n")
    (tmp_path / "g.csv").write_bytes("text,label\n酒店很好,1\n房间很差,0\n".encode("gb18030"))
    fill = {
        "{data}": str(data),
        "{model}": tiny_model,
        "{bad_config}": str(tmp_path / "bad.yaml"),
        "{gbk}": str(tmp_path / "g.csv"),
        "{dir}": str(tmp_path),
    }
    args = [fill.get(a, a) for a in args]
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("textfit: error:") and match in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_predict_a_plain_list_of_texts(cli_run):
    texts = cli_run / "plain.txt.csv"
    texts.write_text("the film was good and lovely\nawful terrible room\n", encoding="utf-8")
    r = run_cli("predict", str(cli_run / "run"), "--input", str(texts), "--output", str(cli_run / "plain.jsonl"))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (cli_run / "plain.jsonl").read_text().splitlines()]
    assert [x["text"] for x in rows] == ["the film was good and lovely", "awful terrible room"]
