"""Trust, round 3 (issue 32): refusals that were tracebacks, bounded messages on one rule, encoding advice,
progress only on a terminal, run files readable as the umask says."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from conftest import make_rows, run_cli, write_csv
from textfit import TrainConfig, UsageError, train
from textfit.textfiles import guess_encoding

FAST = dict(
    epochs=2, batch_size=8, learning_rate=1e-2, precision="fp32", freeze_word_embeddings=False, layer_lr_decay=1.0
)


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("trust3")
    data = write_csv(d / "r.csv", make_rows(60, seed=3))
    return train(TrainConfig(data=str(data), model=tiny_model, output=str(d / "run"), **FAST))["folder"]


def one_line_exit_2(r, match: str) -> None:
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and match in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_every_file_of_a_run_has_the_umask_mode(run):
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in Path(run).rglob("*") if p.is_file()}
    assert modes["model.safetensors"] == 0o666 & ~mask  # safetensors writes 0600
    assert set(modes.values()) == {0o666 & ~mask}, modes


def test_weights_that_are_only_a_pickle_are_refused_in_one_line_by_export(run, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(run, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    r = run_cli("export", str(pickled), "--format", "onnx")
    one_line_exit_2(r, "no model.safetensors in the run folder (only pytorch_model.bin, which textfit never unpickles)")
    assert not (pickled / "onnx").exists()


def test_a_pickled_lora_adapter_is_refused_in_one_line(tiny_model, tmp_path):
    data = write_csv(tmp_path / "r.csv", make_rows(40, seed=2))
    folder = train(
        TrainConfig(data=str(data), model=tiny_model, output=str(tmp_path / "lora"), lora=4, **{**FAST, "epochs": 1})
    )["folder"]
    adapter = Path(folder) / "adapter"
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    r = run_cli("predict", folder, "--adapter", "a fine film")
    one_line_exit_2(r, "no adapter_model.safetensors in the run's adapter folder (only adapter_model.bin")


def test_inspect_writes_its_report_into_a_folder_it_makes(tiny_model, tmp_path):
    data = write_csv(tmp_path / "r.csv", make_rows(40, seed=2))
    report = tmp_path / "reports" / "june" / "data_report.json"
    r = run_cli("inspect", "--data", str(data), "--model", tiny_model, "--report", str(report))
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
    assert report.is_file()
    (tmp_path / "afile").write_text("x")
    r = run_cli("inspect", "--data", str(data), "--model", tiny_model, "--report", str(tmp_path / "afile" / "r.json"))
    one_line_exit_2(r, "is a file, not a folder")


def test_latin_1_gets_western_advice_said_to_be_a_guess(tmp_path):
    text = "text,label\n" + "".join(f"café crème très bon, numéro {i} à Zürich,1\nmauvais séjour {i},0\n" for i in range(30))
    raw = text.encode("latin-1")
    assert guess_encoding(raw) in ("cp1252", "latin_1", "iso8859_15")
    (tmp_path / "l1.csv").write_bytes(raw)
    r = run_cli("train", "--data", str(tmp_path / "l1.csv"))
    one_line_exit_2(r, "not valid utf-8")
    assert "(a guess: check a few rows)" in r.stderr and "cp775" not in r.stderr
    assert guess_encoding("酒店很好，房间很差，服务一般。".encode("gb18030") * 20) in ("gb18030", "gbk")


def test_rare_classes_in_a_carved_split_stop_training_with_a_bounded_message(tiny_model, tmp_path):
    rows = [(t, f"class_{i}") for i, (t, _) in enumerate(make_rows(300, seed=1))]
    data = write_csv(tmp_path / "many.csv", rows)
    with pytest.raises(UsageError) as e:
        train(TrainConfig(data=str(data), model=tiny_model, output=str(tmp_path / "out"), **FAST))
    msg = str(e.value)
    assert "never appears in the training data" in msg and "in all)" in msg and len(msg) < 800
    assert "class_" in msg and "--validation FILE" in msg
    assert not (tmp_path / "out").exists()


def test_no_progress_bar_off_a_terminal_and_the_error_on_its_own_line(tiny_model, tmp_path):
    data = write_csv(tmp_path / "r.csv", make_rows(40, seed=2))
    r = run_cli("train", "--data", str(data), "--model", tiny_model, "--output", str(tmp_path / "o"), "--epochs", "1")
    assert r.returncode == 0, r.stderr
    assert "it/s" not in r.stderr and "\r" not in r.stderr and "train:" not in r.stderr
    r = run_cli(
        "train", "--data", str(data), "--model", tiny_model, "--output", str(tmp_path / "nan"), "--learning-rate", "1e9"
    )
    one_line_exit_2(r, "the training loss became")  # inf or nan: on a line of its own, no bar before it


def _on_a_terminal(*args: str) -> str:
    """`textfit ARGS` with stderr a pseudo-terminal (where bars are drawn): what it wrote there."""
    import fcntl
    import struct
    import subprocess
    import sys
    import termios

    main_fd, term = os.openpty()
    fcntl.ioctl(term, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    proc = subprocess.Popen([sys.executable, "-m", "textfit", *args], stdout=subprocess.DEVNULL, stderr=term, env=env)
    os.close(term)
    out = b""
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(main_fd)
    assert proc.wait(timeout=300) == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


def test_quiet_turns_the_bars_off_on_a_terminal(tiny_model, tmp_path):
    """On a terminal `train` draws its bar; `train --quiet` and `eval --quiet` draw none, and still say
    what they did."""
    data = write_csv(tmp_path / "r.csv", make_rows(40, seed=2))
    common = ["--data", str(data), "--model", tiny_model, "--method", "finetune", "--epochs", "1"]
    assert "it/s" in _on_a_terminal("train", *common, "--output", str(tmp_path / "bar"))
    quiet = _on_a_terminal("train", *common, "--output", str(tmp_path / "q"), "--quiet")
    bare_returns = quiet.replace("\r\n", "\n").count("\r")  # the terminal turns \n into \r\n; a bar draws with \r
    assert "it/s" not in quiet and bare_returns == 0 and "validation loss" in quiet
    evaluated = _on_a_terminal("eval", str(tmp_path / "q"), "--data", str(data), "--quiet")
    assert "it/s" not in evaluated and "rows/s" not in evaluated


def _deny_writes_in(monkeypatch, folder: Path) -> None:
    real = os.access
    denied = folder.absolute()
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: False if Path(p).absolute() == denied else real(p, mode, **kw)
    )


@pytest.mark.parametrize(
    "argv, where",
    [
        (["eval", "RUN", "--data", "DATA"], "RUN/eval-r"),
        (["export", "RUN", "--format", "onnx"], "RUN/onnx"),
        (["train", "--data", "DATA", "--model", "MODEL"], "runs/r"),
        (["tune", "--data", "DATA", "--model", "MODEL"], "runs/tune-r"),
    ],
)
def test_a_default_location_that_cannot_be_written_is_refused_first(
    run, tiny_model, tmp_path, monkeypatch, capsys, argv, where
):
    """A run another account owns (read-only to this one): eval and export wrote into it by default, after the
    model had loaded; train and tune into runs/ under a folder that cannot be written."""
    from textfit.cli.parser import main

    data = write_csv(tmp_path / "r.csv", make_rows(20, seed=4))
    argv = [{"RUN": run, "DATA": str(data), "MODEL": tiny_model}.get(a, a) for a in argv]
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in Path(run).iterdir())
    _deny_writes_in(monkeypatch, Path(run) if where.startswith("RUN") else tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    expected = where.replace("RUN", run)
    assert len(err.splitlines()) == 1 and f"the default --output {expected}: cannot write in" in err, err
    assert err.endswith("(permission denied); pass --output FOLDER"), err
    assert sorted(p.name for p in Path(run).iterdir()) == before and not (tmp_path / "runs").exists()


def test_one_table_names_every_location_each_command_writes(run, tmp_path):
    from textfit.cli.parser import build_parser, locations

    def where(*argv):
        return [(str(loc.path), loc.flag) for loc in locations(build_parser().parse_args(list(argv)))]

    assert where("eval", run, "--data", "x/dev set.csv") == [(f"{run}/eval-dev_set", "the default --output")]
    assert where("eval", run, "--data", "d.csv", "--output", "o") == [("o", "--output")]
    assert where("export", run, "--format", "onnx") == [(f"{run}/onnx", "the default --output")]
    assert where("inspect", "--data", "d.csv") == [("data_report.json", "--report")]
    assert where("inspect", "--data", "d.csv", "--label-issues", "--output", "cv") == [
        ("data_report.json", "--report"),
        ("cv", "--output"),
    ]
    assert where("cv", "--data", "d.csv") == [("runs/d", "the default --output")]
    assert where("distill", run, "--data", "d.csv", "--output", "s") == [("s", "--output")]
    assert where("predict", run, "--input", "i.csv", "--output", "p.jsonl") == [("p.jsonl", "--output")]
    assert where("predict", run, "hello") == [] and where("serve", run) == []
    assert where("export", str(tmp_path / "not-a-run"), "--format", "onnx") == []  # the command's own check names it
