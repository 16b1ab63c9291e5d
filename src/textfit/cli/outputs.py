"""Every location a command will write, checked once before it does any work (issue 32).

Each command's record (cli/parser.py COMMANDS) names a `writes_*` function here (the locations, the defaults
included, each from the function its command uses: eval's RUN/eval-NAME, export's RUN/onnx, train's runs/NAME
numbered as train numbers it, tune's runs/tune-NAME, inspect's report and its label-issue folds) and a `reads_*`
function (the local data files it reads); `check(args, command)` runs the one rule, `run.check_output`, on each
location and says a missing file. `cli.main` calls it before the command, so a location that cannot be written
or a file that is not there ends the command in one line before a model loads or a row is read. The Python API
(`textfit.train`, `tune`, `cross_validate`) reaches the same rule through `train.folder.output_folder`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from textfit.errors import UsageError
from textfit.run import check_output

if TYPE_CHECKING:
    from textfit.config import TrainConfig


class Location(NamedTuple):
    path: Path
    flag: str  # the flag that sets it, as the message names it
    folder: bool
    fix: str = "choose another location"


def _config(args: argparse.Namespace) -> TrainConfig:
    from textfit.config import from_flags

    return from_flags(args)


def _given_or(path: str | None, default: Callable[[], Path | None]) -> list[Location]:
    """--output when given, else the command's default (None: not known yet, the command's own check says why)."""
    if path:
        return [Location(Path(path), "--output", True)]
    where = default()
    return [] if where is None else [Location(where, "the default --output", True, "pass --output FOLDER")]


def _run_folder(cfg: TrainConfig) -> Path:
    from textfit.train.folder import default_output  # the training package: only for the commands that train

    return default_output(cfg)


def _from_config(args: argparse.Namespace, default: Callable[[TrainConfig], Path] = _run_folder) -> list[Location]:
    """--output or the default folder of a command that takes the train flags (a run's, unless `default`)."""
    cfg = _config(args)
    return _given_or(cfg.output, lambda: default(cfg))


def _in_run(args: argparse.Namespace, default: Callable[[], Path]) -> list[Location]:
    return _given_or(args.output, lambda: default() if Path(args.run).is_dir() else None)  # not a run: said later


# What each command writes: one function per kind of command, named in its record (cli/parser.py COMMANDS).


def writes_run(args: argparse.Namespace) -> list[Location]:
    """train, distill, cv: --output or runs/NAME, numbered as train numbers it."""
    return _from_config(args)


def writes_search(args: argparse.Namespace) -> list[Location]:
    """tune: --output or runs/tune-NAME."""
    from textfit.train.tune import default_output as search_folder

    return _from_config(args, search_folder)


def writes_report(args: argparse.Namespace) -> list[Location]:
    """inspect: the report, and with --label-issues the folds' folder."""
    report = Location(Path(args.report), "--report", False)
    return [report, *_from_config(args)] if args.label_issues else [report]


def writes_eval(args: argparse.Namespace) -> list[Location]:
    """eval: --output or RUN/eval-NAME."""
    from textfit.cli.commands import eval_default_output

    return _in_run(args, lambda: eval_default_output(args.run, args.data))


def writes_export(args: argparse.Namespace) -> list[Location]:
    """export: --output or RUN/onnx."""
    from textfit.predict.export import default_output

    return _in_run(args, lambda: default_output(args.run))


def writes_predictions(args: argparse.Namespace) -> list[Location]:
    """predict --input --output: the output file (Ray's folder of files: Ray's writers check it)."""
    from textfit.cli.commands import ray_writes_folder

    if args.input and args.output and not ray_writes_folder(args.engine, args.output):
        return [Location(Path(args.output), "--output", False)]
    return []


def writes_nothing(args: argparse.Namespace) -> list[Location]:
    """serve and push write nothing locally."""
    return []


# The suffixes data/read.py reads as local files (FORMATS, and data/compressed.py's COMPRESSIONS on top of them):
# a path with one of these that is not there is said before anything loads (tests/test_structure.py checks that
# the two lists agree).
FILE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")


def reads_train_files(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(flag, path) of the data files of a command that takes the train flags."""
    cfg = _config(args)
    found = [(f"--{n}", getattr(cfg, n)) for n in ("data", "train", "validation", "test")]
    return [(flag, str(path)) for flag, path in [*found, *(("--unlabeled", u) for u in cfg.unlabeled or [])] if path]


def reads_eval_data(args: argparse.Namespace) -> list[tuple[str, str]]:
    return [("--data", args.data)]


def reads_predict_input(args: argparse.Namespace) -> list[tuple[str, str]]:
    """predict --input, read here (with --engine ray a path may name a folder or a remote store: Ray's check)."""
    return [("--input", args.input)] if args.input and args.engine == "local" else []


def reads_nothing(args: argparse.Namespace) -> list[tuple[str, str]]:
    return []


def looks_like_a_file(path: str) -> bool:
    suffixes = [x.lower() for x in Path(path).suffixes[-2:]]
    if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] in FILE_SUFFIXES and "://" not in path


def check(args: argparse.Namespace, command: Any) -> None:
    """Every data file `command` (its record in cli/parser.py) reads is there and every location it will write
    can be written, or a one-line UsageError naming it: before a model loads or a row is read."""
    for flag, path in command.reads(args):
        if looks_like_a_file(path) and not Path(path).exists():
            raise UsageError(f"{path}: no such file" if flag != "--input" else f"--input {path}: no such file")
    for loc in command.writes(args):
        check_output(loc.path, loc.flag, loc.folder, loc.fix)
