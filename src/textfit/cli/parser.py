"""The `textfit` command: a table of subcommands, each a plain function.

    textfit train --data reviews.csv --epochs 1
    textfit eval runs/reviews --data holdout.csv
    textfit predict runs/reviews "a gripping film" "a dull one"

Each command is one record of COMMANDS: its name and help, the function that adds its flags, the function of
cli/commands.py that runs it, and the functions of cli/outputs.py that name what it writes and reads (checked
before it runs). `train` flags are generated from `TrainConfig`, so the dataclass is the one source of
names, types, defaults and help. A user's mistake prints one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from textfit.cli import outputs
from textfit.config import FIELDS
from textfit.errors import Interrupted, UsageError

METAVARS = {"long_text": "MODE", "unlabeled": "FILE", "label_description": "LABEL=TEXT", "teacher_predictions": "RUN"}


def command(name: str) -> Callable[[argparse.Namespace], int]:
    """The function `name` of textfit.cli.commands, imported when the command runs: parsing, --help and a
    usage error import none of the commands' modules."""

    def run(args: argparse.Namespace) -> int:
        from textfit.cli import commands

        func: Callable[[argparse.Namespace], int] = getattr(commands, name)
        return func(args)

    run.__name__ = run.__qualname__ = name
    return run


def _add_train_flags(p: argparse.ArgumentParser, distill: bool = False) -> None:
    """Every TrainConfig field as a flag; the distillation fields only on `distill` (the teacher positional)."""
    p.add_argument("--config", default=argparse.SUPPRESS, help="YAML file of options; flags given here override it")
    _add_quiet_flag(p)
    for name, f in FIELDS.items():
        if (f.metadata.get("distill") and not distill) or name == "teacher":
            continue
        flag = "--" + name.replace("_", "-")
        kind = f.type if isinstance(f.type, str) else str(f.type)
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = (
            f.metadata["help"] if "(default:" in f.metadata["help"] else f"{f.metadata['help']} (default: {default})"
        )
        if kind == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
            continue
        typ: Callable[[str], Any] = str
        if kind.startswith("int"):
            typ = int
        elif kind.startswith("float"):
            typ = float
        alias = {
            "epochs": ["--num-train-epochs"],
            "batch_size": ["--per-device-train-batch-size"],
            "output": ["--output-dir"],
            "model": ["--student"],
        }.get(name, [])
        extra = {"nargs": "?", "const": f.metadata["optional_const"]} if "optional_const" in f.metadata else {}
        if "nargs" in f.metadata:
            extra = {"nargs": f.metadata["nargs"]}
        if f.metadata.get("append"):
            extra = {"action": "append"}
        p.add_argument(
            flag,
            *alias,
            dest=name,
            type=typ,
            default=argparse.SUPPRESS,
            metavar=METAVARS.get(name, name.split("_")[-1].upper()),
            help=help_text,
            **extra,
        )


def _add_quiet_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars or progress lines (as TQDM_DISABLE=1); messages still print",
    )


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run folder written by 'textfit train'")
    p.add_argument("--text-column", help="text column of the file (default: the run's, then detected)")
    p.add_argument("--text-pair-column", help="second text column, for pair models")
    p.add_argument("--encoding", default="utf-8", help="encoding of the file (default: utf-8)")
    p.add_argument(
        "--quoting",
        default="auto",
        choices=["auto", "none", "standard"],
        help="quotes in a CSV/TSV: auto (as training reads them), none (part of the text), standard (quoted fields)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="texts per batch (default: 64)")
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cuda", "mps", "cpu"],
        help="auto: a CUDA GPU, else Apple's MPS, else the CPU",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "bf16", "fp16", "fp32"],
        help="auto uses bf16 where the hardware supports it",
    )
    p.add_argument(
        "--quantize",
        choices=["int8", "int8-dynamic"],
        help="with --backend onnx: the int8 (weight-only) or int8-dynamic export; "
        "with PyTorch: dynamic int8 quantization of the linear layers (CPU)",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "torch", "onnx", "openvino"],
        help="auto (default): PyTorch, bf16 where the CPU's kernels have it; on CPUs without bf16 the run's "
        "int8-dynamic ONNX export where 'textfit export' found it within 0.3 points of fp32 on the validation "
        "split, else PyTorch fp32 (the choice is printed). onnx runs RUN/onnx/ (see 'textfit export') with "
        "onnxruntime; openvino runs RUN/onnx/model.onnx with OpenVINO",
    )
    p.add_argument(
        "--adapter",
        action="store_true",
        help="LoRA runs: the base model with the saved adapter instead of the merged weights",
    )


def _add_folds_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--folds", type=int, default=5, help="cross-validation folds, stratified by label and seeded (default: 5)"
    )


def _add_predict_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("texts", nargs="*", help="texts to classify")
    p.add_argument("--text-pair", action="append", help="second text for a pair model, once per text")
    p.add_argument(
        "--input",
        help="CSV, TSV, JSONL or Parquet file of texts, read and predicted in chunks (a JSON array or a datasets "
        "folder is read whole; CSV, TSV and JSONL also compressed: .gz, .bz2, .xz, .zst); with --engine ray also "
        "folders of files and remote paths (s3://, gs://)",
    )
    p.add_argument(
        "--output",
        help="where to write predictions: .csv, .tsv, .jsonl or .parquet; every input column is kept, then "
        "label, score and prob_<label> (JSONL: probabilities nested)",
    )
    p.add_argument(
        "--keep-columns", help="input columns to keep in the output, comma-separated (default: all, in order)"
    )
    p.add_argument(
        "--chunk-rows",
        type=int,
        default=10_000,
        help="rows read, predicted and written at a time: the memory used, and what a kill loses (default: 10000)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted --input prediction from its last finished chunk (same run, input and flags)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an --output that exists")
    p.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="rows with an empty text go to OUTPUT-NAME.rejects.EXT with their line, instead of stopping",
    )
    p.add_argument("--quiet", action="store_true", help="no progress and no summary on stderr")
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local (default): this process; ray: Ray Data on a running cluster (--ray-address) or a local one "
        "(needs pip install 'textfit[ray]')",
    )
    p.add_argument(
        "--ray-address",
        help="with --engine ray: the cluster to join, e.g. ray://head:10001 or auto (default: start a local one)",
    )
    p.add_argument("--interactive", action="store_true", help="answer texts typed at a prompt")
    p.add_argument("--json", action="store_true", help="print one JSON object per text")
    p.add_argument(
        "--explain",
        action="store_true",
        help="also show each word's contribution to the predicted label (integrated gradients, Captum); "
        "in --json and .jsonl output as numbers",
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other usage error
        self.exit(2, f"textfit: error: {message} (see '{self.prog} --help')\n")


@dataclass(frozen=True)
class Command:
    """One subcommand, all in one record: its name and help, the function that adds its flags, the function of
    cli/commands.py that runs it (imported when it runs), and the functions of cli/outputs.py that name every
    location it writes and every data file it reads, checked before it runs."""

    name: str
    help: str
    flags: Callable[[argparse.ArgumentParser], None]
    function: str
    writes: Callable[[argparse.Namespace], list[outputs.Location]]
    reads: Callable[[argparse.Namespace], list[tuple[str, str]]]


def _train_flags(p: argparse.ArgumentParser) -> None:
    _add_train_flags(p)


def _distill_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("teacher", help="the teacher: a run folder, or a --seeds folder whose runs are averaged")
    _add_train_flags(p, distill=True)


def _inspect_flags(p: argparse.ArgumentParser) -> None:
    _add_train_flags(p)
    p.add_argument(
        "--report", default="data_report.json", help="where to write the JSON report (default: data_report.json)"
    )
    p.add_argument(
        "--label-issues",
        action="store_true",
        help="also rank the training rows whose label is most likely wrong: 'textfit cv' with these flags "
        "(out-of-fold probabilities, cleanlab), writing label_issues.csv into --output",
    )
    _add_folds_flag(p)


def _cv_flags(p: argparse.ArgumentParser) -> None:
    _add_train_flags(p)
    _add_folds_flag(p)


def _eval_flags(p: argparse.ArgumentParser) -> None:
    _add_run_flags(p)
    p.add_argument("--data", required=True, help="labelled file (or datasets folder) to evaluate on")
    p.add_argument("--label-column", help="label column of the file (default: the run's, then detected)")
    p.add_argument("--output", help="folder for metrics.json (default: RUN/eval-<data name>)")
    p.add_argument("--chunk-rows", type=int, default=10_000, help="rows read and predicted at a time (default: 10000)")
    _add_quiet_flag(p)


def _serve_flags(p: argparse.ArgumentParser) -> None:
    _add_run_flags(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--max-batch",
        type=int,
        default=128,
        help="texts per model call when requests are batched together (default: 128)",
    )
    p.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="how long to wait for more requests to fill a batch (default: 5)"
    )
    p.add_argument("--max-queue", type=int, default=1024, help="texts waiting before requests get 429 (default: 1024)")
    p.add_argument("--max-texts", type=int, default=128, help="texts in one request before 413 (default: 128)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a request may wait before 504 (default: 30)")


def _export_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run folder written by 'textfit train'")
    p.add_argument("--format", required=True, choices=["onnx"], help="export format")
    p.add_argument(
        "--quantize",
        choices=["int8", "int8-dynamic"],
        help="also write an int8 model: int8 = weight-only int8 "
        "(model.int8.onnx, closest to fp32), int8-dynamic = int8 weights and activations (model.int8-dynamic.onnx, "
        "faster)",
    )
    p.add_argument("--output", help="folder to write (default: RUN/onnx)")


def _tune_flags(p: argparse.ArgumentParser) -> None:
    _add_train_flags(p)
    p.add_argument(
        "--tune-space",
        help="YAML: option: [choices] or {low, high, log} (default: learning rate, batch size, "
        "epochs, warmup ratio, weight decay)",
    )
    p.add_argument("--trials", type=int, default=10, help="finished trials the study should have (default: 10)")
    p.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    p.add_argument(
        "--storage",
        help="an Optuna storage URL shared by several processes or machines (default: OUTPUT/study.db, SQLite)",
    )
    p.add_argument("--study-name", default="textfit", help="the study's name in the storage (default: textfit)")


def _push_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run folder written by 'textfit train'")
    p.add_argument(
        "--repo-id", required=True, help="the Hub repository, e.g. your-user/sst2-minilm (created if needed)"
    )
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--with-onnx", action="store_true", help="upload RUN/onnx (see 'textfit export') too")


def _predict_flags(p: argparse.ArgumentParser) -> None:
    _add_run_flags(p)
    _add_predict_flags(p)


COMMANDS = (
    Command(
        "train",
        "fine-tune a model on a data set and save the run",
        _train_flags,
        "cmd_train",
        outputs.writes_run,
        outputs.reads_train_files,
    ),
    Command(
        "distill",
        "train a student on a teacher run's probabilities over the training texts and any unlabelled ones",
        _distill_flags,
        "cmd_train",
        outputs.writes_run,
        outputs.reads_train_files,
    ),
    Command(
        "inspect",
        "check the data before training: labels, duplicates, leakage, lengths, vocabulary",
        _inspect_flags,
        "cmd_inspect",
        outputs.writes_report,
        outputs.reads_train_files,
    ),
    Command(
        "cv",
        "cross-validate a recipe: K runs, each metric's mean and spread, out-of-fold probabilities (oof.csv) "
        "and the rows most likely mislabelled (label_issues.csv)",
        _cv_flags,
        "cmd_cv",
        outputs.writes_run,
        outputs.reads_train_files,
    ),
    Command(
        "eval",
        "evaluate a run on a labelled file",
        _eval_flags,
        "cmd_eval",
        outputs.writes_eval,
        outputs.reads_eval_data,
    ),
    Command(
        "serve",
        "an HTTP server (FastAPI) with a page to try the model",
        _serve_flags,
        "cmd_serve",
        outputs.writes_nothing,
        outputs.reads_nothing,
    ),
    Command(
        "export",
        "export a run to ONNX (optionally int8), checking parity with PyTorch",
        _export_flags,
        "cmd_export",
        outputs.writes_export,
        outputs.reads_nothing,
    ),
    Command(
        "tune",
        "search hyperparameters with Optuna; each trial a run folder",
        _tune_flags,
        "cmd_tune",
        outputs.writes_search,
        outputs.reads_train_files,
    ),
    Command(
        "push",
        "upload a run (model, tokenizer, model card) to the Hugging Face Hub",
        _push_flags,
        "cmd_push",
        outputs.writes_nothing,
        outputs.reads_nothing,
    ),
    Command(
        "predict",
        "label texts given as arguments, in a file, or typed at a prompt",
        _predict_flags,
        "cmd_predict",
        outputs.writes_predictions,
        outputs.reads_predict_input,
    ),
)
BY_NAME = {c.name: c for c in COMMANDS}


def locations(args: argparse.Namespace) -> list[outputs.Location]:
    """Every location the parsed command will write, as its record names them."""
    return BY_NAME[args.command].writes(args)


def build_parser() -> argparse.ArgumentParser:
    from textfit.version import __version__

    parser = _Parser(
        prog="textfit", description="Fine-tune transformer encoders into text classifiers; evaluate, predict."
    )
    parser.add_argument("--version", action="version", version=f"textfit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for c in COMMANDS:
        p = sub.add_parser(c.name, help=c.help)
        c.flags(p)
        p.set_defaults(func=command(c.function))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse fills `predict RUN TEXT...` before it reads the flags: texts after a flag come back here.
    if extra and getattr(args, "command", None) == "predict" and not any(e.startswith("-") for e in extra):
        args.texts = list(args.texts) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "quiet", False):
        os.environ["TQDM_DISABLE"] = "1"  # ours and every library's bars (tqdm reads it), the training loop's too
    try:
        outputs.check(args, BY_NAME[args.command])  # the files it reads and the locations it writes, first
        return args.func(args)
    except UsageError as e:
        print(f"textfit: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"textfit: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("textfit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
