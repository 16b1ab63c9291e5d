"""Issue 60's edges: state a kill can tear, causes not hidden, two runs into one folder, files in other encodings,
libraries' progress bars under --quiet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from textfit import UsageError
from textfit.train.folder import folder_state, log_records, move_into_place, work_folder


def one_line_exit_2(r, match: str) -> None:
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and match in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_a_torn_last_log_line_is_dropped_with_a_warning_when_a_run_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    log = out / "log.jsonl"
    log.write_text('{"step": 1, "loss": 0.9}\n{"step": 2, "loss": 0.8}\n{"step": 3, "lo', encoding="utf-8")
    assert [r["step"] for r in log_records(log)] == [1, 2]
    assert "1 torn line(s) dropped" in capsys.readouterr().out
    work_folder(out, persistent=True, main=True, resumed_step=1)  # --resume from checkpoint-1
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1]


def test_a_run_saved_into_the_folder_meanwhile_is_not_replaced(tmp_path, capsys):
    out = tmp_path / "run"
    at_start = folder_state(out)  # nothing there when this run started
    other = tmp_path / ".other"
    other.mkdir()
    (other / "textfit.json").write_text("{}")
    move_into_place(other, out)  # another process saves its run first
    mine = tmp_path / ".mine"
    mine.mkdir()
    (mine / "textfit.json").write_text('{"mine": 1}')
    where = move_into_place(mine, out, at_start)
    assert where == tmp_path / "run-2" and json.loads((where / "textfit.json").read_text()) == {"mine": 1}
    assert json.loads((out / "textfit.json").read_text()) == {}
    assert "another run was saved into" in capsys.readouterr().out
    # what was there at the start (--overwrite) is replaced as before
    again = tmp_path / ".again"
    again.mkdir()
    (again / "textfit.json").write_text('{"again": 1}')
    assert move_into_place(again, out, folder_state(out)) == out
    assert json.loads((out / "textfit.json").read_text()) == {"again": 1}


def test_a_damaged_teacher_predictions_file_is_named_with_its_cause(tmp_path):
    from textfit.train.methods.distill import _reused

    bad = tmp_path / "teacher_predictions.safetensors"
    bad.write_bytes(b"\x00\x01 not safetensors")
    with pytest.raises(UsageError, match="cannot be read") as e:
        _reused(str(bad), "key")
    assert "another teacher" not in str(e.value)


@pytest.mark.parametrize("flag", ["--config", "--tune-space"])
def test_yaml_files_in_another_encoding_are_one_line(tmp_path, flag):
    f = tmp_path / "c.yaml"
    f.write_bytes("epochs: 1  # réglé\n".encode("latin-1"))
    command = "tune" if flag == "--tune-space" else "train"
    (tmp_path / "x.csv").write_text("text,label\na,b\n")
    r = run_cli(command, "--data", "x.csv", flag, str(f), cwd=tmp_path)
    one_line_exit_2(r, f"{flag} {f}: not valid utf-8")
    assert "save it as UTF-8" in r.stderr


def test_a_utf16_yaml_file_with_its_bom_is_read(tmp_path):
    from textfit.config import load_config

    f = tmp_path / "c.yaml"
    f.write_bytes("epochs: 2\n".encode("utf-16"))
    assert load_config(str(f), {"data": "x.csv"}).epochs == 2


def test_libraries_bars_are_off_when_textfit_draws_none(monkeypatch):
    from transformers.utils import logging as transformers_logging

    from textfit.progress import quiet_libraries

    monkeypatch.setenv("TQDM_DISABLE", "1")
    transformers_logging.enable_progress_bar()
    quiet_libraries()
    assert not transformers_logging.is_progress_bar_enabled()
    transformers_logging.enable_progress_bar()


def test_save_steps_on_a_method_without_the_loop_is_said(tiny_model, tmp_path):
    from conftest import make_rows, write_csv

    data = write_csv(tmp_path / "r.csv", make_rows(24, chinese=False))
    r = run_cli("train", "--data", str(data), "--model", tiny_model, "--method", "contrastive", "--save-steps", "2",
                "--precision", "fp32", "--output", str(tmp_path / "run"), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--save-steps: the contrastive method fits without the training loop" in r.stdout + r.stderr
    assert not list(Path(tmp_path / "run").glob("checkpoint-*"))


def test_a_missing_input_is_said_before_anything_loads(tmp_path, monkeypatch, capsys):
    """predict RUN --input missing.csv used to load the model for seconds first; the check now runs before."""
    import textfit.predict.classifier as classifier
    from textfit.cli import main

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(classifier.Classifier, "load", no_load)
    run = Path(__file__).parent / "fixtures" / "runs-0.1.0" / "finetune"
    assert main(["predict", str(run), "--input", str(tmp_path / "missing.csv"), "--output", str(tmp_path / "o.csv")]) == 2
    assert "missing.csv: no such file" in capsys.readouterr().err
    (tmp_path / "r.csv").write_text("text,label\na,b\n")
    assert main(["train", "--data", str(tmp_path / "r.csv"), "--validation", str(tmp_path / "v.tsv.gz")]) == 2
    assert "v.tsv.gz: no such file" in capsys.readouterr().err


def test_the_early_file_check_knows_the_suffixes_the_reader_reads():
    from textfit.cli.outputs import COMPRESSED_SUFFIXES, FILE_SUFFIXES
    from textfit.data.compressed import COMPRESSIONS
    from textfit.data.read import FORMATS

    assert set(FILE_SUFFIXES) == set(FORMATS) and set(COMPRESSED_SUFFIXES) == set(COMPRESSIONS)


def _remote_code_model(tiny_model: str, folder: Path) -> str:
    """The tiny BERT as a model whose code ships in its folder (config.json's auto_map), as hub models with
    custom architectures do: loading it needs trust_remote_code."""
    import shutil

    shutil.copytree(tiny_model, folder)
    (folder / "configuration_tiny.py").write_text(
        "from transformers import BertConfig\n\n\nclass TinyConfig(BertConfig):\n    model_type = 'tiny-remote-bert'\n"
    )
    (folder / "modeling_tiny.py").write_text(
        "from transformers import BertForSequenceClassification, BertModel\n\nfrom .configuration_tiny import TinyConfig"
        "\n\n\nclass TinyModel(BertModel):\n    config_class = TinyConfig\n\n\n"
        "class TinyForSequenceClassification(BertForSequenceClassification):\n    config_class = TinyConfig\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "tiny-remote-bert"
    config["auto_map"] = {
        "AutoConfig": "configuration_tiny.TinyConfig",
        "AutoModel": "modeling_tiny.TinyModel",
        "AutoModelForSequenceClassification": "modeling_tiny.TinyForSequenceClassification",
    }
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_a_run_trained_with_remote_code_loads_again_wherever_it_is_used(tiny_model, tmp_path):
    """--trust-remote-code is recorded in the run and passed wherever it is loaded (eval, predict, serve, export
    ended in transformers' ValueError traceback: the flag was not passed when a run was loaded)."""
    from conftest import make_rows, write_csv
    from textfit import Classifier, TrainConfig, train

    model = _remote_code_model(tiny_model, tmp_path / "remote")
    data = write_csv(tmp_path / "r.csv", make_rows(40, chinese=False))
    run = train(TrainConfig(data=str(data), model=model, trust_remote_code=True, method="finetune", epochs=1,
                            precision="fp32", output=str(tmp_path / "run"))).folder  # fmt: skip
    assert json.loads((Path(run) / "textfit.json").read_text())["trust_remote_code"] is True
    assert (Path(run) / "modeling_tiny.py").is_file()
    assert Classifier.load(run).predict(["a good film"])[0].label in ("negative", "positive")
    r = run_cli("predict", run, "a good film", "--json")
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[-1])["label"] in ("negative", "positive"), r.stderr
    r = run_cli("export", run, "--format", "onnx")
    assert r.returncode == 0 and (Path(run) / "onnx" / "model.onnx").is_file(), r.stderr


class FakeHub:
    """huggingface_hub.HfApi's three calls that push makes, recorded; `refuse` makes the upload fail as the hub does."""

    refuse = False
    uploads: list = []

    def __init__(self, token=None):
        pass

    def create_repo(self, repo_id, **kw):
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, folder_path, ignore_patterns, **kw):
        if FakeHub.refuse:
            import httpx
            from huggingface_hub.errors import HfHubHTTPError

            request = httpx.Request("POST", "https://huggingface.co/api/repos")
            response = httpx.Response(403, request=request)
            raise HfHubHTTPError("403 Forbidden: you cannot write to this repository", response=response)
        FakeHub.uploads.append(("folder", folder_path, list(ignore_patterns)))

    def upload_file(self, path_or_fileobj, path_in_repo, **kw):
        FakeHub.uploads.append(("file", path_in_repo, path_or_fileobj))


def test_push_changes_the_run_only_once_the_upload_happened(tmp_path, monkeypatch):
    import shutil

    import huggingface_hub

    import textfit.hub as hub

    run = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "fixtures" / "runs-0.1.0" / "finetune", run)
    (run / "tensorboard").mkdir()
    card = "# textfit model\n\n`textfit predict PATH/TO/RUN \"a text\"`\n"  # as the card textfit writes names it
    (run / "README.md").write_text(card)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    monkeypatch.setattr(hub, "check_hub_access", lambda *a, **k: None)
    FakeHub.refuse, FakeHub.uploads = True, []
    with pytest.raises(UsageError, match="the hub refused the upload"):
        hub.push_run(str(run), "someone/sst2")
    assert (run / "README.md").read_text() == card  # a refused upload leaves the run as it was
    FakeHub.refuse = False
    assert hub.push_run(str(run), "someone/sst2") == "https://huggingface.co/someone/sst2"
    (kind, _, ignored), (_, name, sent) = FakeHub.uploads
    assert kind == "folder" and {"tensorboard/**", "README.md"} <= set(ignored) and name == "README.md"
    assert b"someone/sst2" in sent and b"PATH/TO/RUN" not in sent
    assert "someone/sst2" in (run / "README.md").read_text()  # uploaded: the local card names the repository too


FIXTURE_RUN = Path(__file__).parent / "fixtures" / "runs-0.1.0" / "finetune"


def test_a_body_that_is_not_utf8_is_a_422_not_a_400():
    from fastapi.testclient import TestClient

    from textfit import Classifier
    from textfit.serve.app import create_app

    with TestClient(create_app(Classifier.load(FIXTURE_RUN))) as client:
        r = client.post("/predict", content=b'{"inputs": "caf\xe9"}', headers={"content-type": "application/json"})
        assert r.status_code == 422 and "not valid utf-8 (byte 0xe9 at offset 15)" in r.json()["error"]
        utf16 = '{"inputs": "a good film"}'.encode("utf-16")  # JSON may come in UTF-16 with its BOM
        assert client.post("/predict", content=utf16, headers={"content-type": "application/json"}).status_code == 200


@pytest.mark.parametrize("value, threads", [("2", 2), ("4,2", 4), (" 3 , 1", 3), ("", 1), ("many", 1), ("0", 1)])
def test_ray_reads_every_omp_num_threads_value_openmp_takes(value, threads):
    from textfit.predict.ray import omp_threads

    assert omp_threads(value) == threads


def test_a_torn_prediction_state_refuses_to_resume_in_one_line(tmp_path):
    from textfit import Classifier
    from textfit.predict.files import FileJob, predict_file, work_folder

    src = tmp_path / "in.csv"
    src.write_text("text\na good film\na bad film\n")
    out = tmp_path / "out.csv"
    work = work_folder(str(out))
    work.mkdir(parents=True)
    (work / "state.json").write_text('{"engine": "local", "inp')  # a kill while it was written in place, before
    clf = Classifier.load(FIXTURE_RUN)
    with pytest.raises(UsageError, match="state.json cannot be read"):
        predict_file(clf, str(FIXTURE_RUN), FileJob(str(src), str(out), resume=True, quiet=True))
    assert predict_file(clf, str(FIXTURE_RUN), FileJob(str(src), str(out), overwrite=True, quiet=True)) == (2, 0)
