"""The `textfit` command: a table of subcommands, each a plain function.

    textfit train --data reviews.csv --epochs 1
    textfit eval runs/reviews --data holdout.csv
    textfit predict runs/reviews "a gripping film" "a dull one"

`train` flags are generated from `TrainConfig`, so the dataclass is the one source of
names, types, defaults and help. A user's mistake prints one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from .config import FIELDS, load_config
from .errors import Interrupted, UsageError


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    overrides = {k: v for k, v in vars(args).items() if k in FIELDS}
    train(load_config(getattr(args, "config", None), overrides))  # with --seeds, one run per seed
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect_data import format_report, inspect
    from .run import write_json

    overrides = {k: v for k, v in vars(args).items() if k in FIELDS}
    cfg = load_config(getattr(args, "config", None), overrides)
    _check_output(Path(args.report), "--report", folder=False)
    report = inspect(cfg)
    for note in report["notes"]:
        print(f"textfit: {note}")
    print(format_report(report))
    write_json(Path(args.report), report)
    print(f"textfit: wrote {args.report}")
    return 1 if any(p["level"] == "error" for p in report["problems"]) else 0


def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import read_for_run
    from .evaluate import evaluate
    from .metrics import format_metrics
    from .predict import Classifier
    from .report import write_report
    from .run import RunManifest, write_json

    manifest = RunManifest.read(args.run)
    _check_batch_size(args.batch_size)
    if args.output:
        _check_output(Path(args.output), "--output", folder=True)
    split = read_for_run(args.data, manifest, args.encoding, args.text_column, args.text_pair_column, args.label_column)
    clf = Classifier.load(
        args.run, precision=args.precision, quantize=args.quantize, backend=args.backend, adapter=args.adapter
    )
    m, probs = evaluate(clf, split, args.batch_size)
    out = (
        Path(args.output)
        if args.output
        else Path(args.run) / f"eval-{Path(args.data.rstrip('/')).stem.replace(' ', '_')}"
    )
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", {"data": args.data, **m})
    print(format_metrics(m, f"{args.data} ({len(split.labels)} rows)"))
    if clf.task == "classification":
        write_report(
            out,
            split.texts,
            split.pairs,
            np.array(split.labels),
            probs,
            clf.labels,
            m,
            None,
            args.data,
            threshold=clf.threshold,
        )
        print(f"textfit: wrote metrics.json, report.html, confusion_matrix.png/.csv and misclassified.csv to {out}")
    else:
        print(f"textfit: wrote metrics.json to {out}")
    return 0


def _check_batch_size(n: int) -> None:
    if n < 1:
        raise UsageError(f"--batch-size {n}: must be at least 1")


def _check_output(path: Path, flag: str, folder: bool) -> None:
    """`path` can be written: its location is writable, and it is not a file where a folder goes (or the reverse)."""
    from .run import check_writable

    check_writable(path, flag)
    if folder and path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: is a file; pass a folder")
    if not folder and path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; pass a file name")


def _write_predictions(path: str, rows: list[dict[str, Any]]) -> None:
    """CSV or JSONL, chosen by the extension; written to a temporary file, then renamed."""
    p = Path(path)
    if p.suffix.lower() not in (".csv", ".jsonl", ".tsv"):
        raise UsageError(f"--output {path}: unsupported format; use a .csv, .tsv or .jsonl file")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        if p.suffix.lower() == ".jsonl":
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        else:
            flat = [
                {k: (",".join(v) if k == "labels" else v) for k, v in r.items() if k != "probabilities"}
                | {f"prob_{n}": s for n, s in r.get("probabilities", {}).items()}
                for r in rows
            ]
            w = csv.DictWriter(
                fh,
                fieldnames=list(flat[0]) if flat else ["text", "label", "score"],
                delimiter="\t" if p.suffix.lower() == ".tsv" else ",",
            )
            w.writeheader()
            w.writerows(flat)
    os.replace(tmp, p)


def cmd_predict(args: argparse.Namespace) -> int:
    from .data import read_for_run
    from .predict import Classifier
    from .run import RunManifest

    manifest = RunManifest.read(args.run)
    if not (args.texts or args.input or args.interactive):
        raise UsageError("nothing to predict: give texts, --input FILE, or --interactive")
    if args.output and not args.input:
        raise UsageError("--output needs --input FILE")
    if args.input and not args.output:
        raise UsageError("--input needs --output FILE (.csv, .tsv or .jsonl)")
    if args.text_pair and len(args.text_pair) != len(args.texts):
        raise UsageError(
            f"--text-pair given {len(args.text_pair)} times for {len(args.texts)} texts; give one per text"
        )
    if manifest.pairs and args.texts and not args.text_pair:
        raise UsageError("this run classifies sentence pairs: give one --text-pair per text")
    if args.text_pair and not manifest.pairs:
        raise UsageError("--text-pair: this run classifies single texts, not pairs; give the texts alone")
    empty = [i + 1 for i, t in enumerate(list(args.texts) + list(args.text_pair or [])) if not t.strip()]
    if empty:
        raise UsageError(f"empty text (argument {empty[0]}): every text to classify needs some text")
    _check_batch_size(args.batch_size)
    if args.output:
        _check_output(Path(args.output), "--output", folder=False)
    clf = Classifier.load(
        args.run, precision=args.precision, quantize=args.quantize, backend=args.backend, adapter=args.adapter
    )
    if args.texts:
        for text, pred in zip(args.texts, clf.predict(args.texts, args.text_pair or None, args.batch_size)):
            if args.json:
                print(json.dumps({"text": text, **pred.as_dict()}, ensure_ascii=False))
            else:
                print(f"{_shown(pred)}\t{text}")
    if args.input:
        split = read_for_run(args.input, manifest, args.encoding, args.text_column, args.text_pair_column, labels=False)
        preds = clf.predict(split.texts, split.pairs, args.batch_size)
        rows = []
        for i, pred in enumerate(preds):
            row: dict[str, Any] = {"text": split.texts[i]}
            if split.pairs is not None:
                row["text_pair"] = split.pairs[i]
            rows.append(row | pred.as_dict())
        _write_predictions(args.output, rows)
        print(f"textfit: wrote {len(rows)} predictions to {args.output}", file=sys.stderr)
    if args.interactive:
        interactive(clf, sys.stdin, sys.stdout)
    return 0


def interactive(clf: Any, stdin: Any, stdout: Any) -> None:
    """A prompt that answers each line with the label and its probability; q or end of input quits."""
    tty = stdin.isatty()
    stdout.write("type a text and press Enter (q to quit)\n")
    while True:
        stdout.write("> " if not clf.pairs else "text> ")
        stdout.flush()
        line = stdin.readline()
        if not line or line.strip() in ("q", "quit", "exit"):
            break
        text = line.rstrip("\n")
        if not text.strip():
            continue
        pair = None
        if clf.pairs:
            stdout.write("pair> ")
            stdout.flush()
            second = stdin.readline()
            if not second:
                break
            pair = [second.rstrip("\n")]
        pred = clf.predict([text], pair)[0]
        shown = _shown(pred).replace("\t", " (") + ")" if pred.value is None else _shown(pred)
        stdout.write(("" if tty else "\n") + f"{shown}\n")
    stdout.write("\n")


def _shown(pred: Any) -> str:
    """A prediction on one line: label and probability, the labels over their thresholds, or the value."""
    if pred.value is not None:
        return f"{pred.value:.4f}"
    if pred.labels is not None:
        return f"{pred.label or '(no label)'}\t{pred.score:.4f}"
    return f"{pred.label}\t{pred.score:.4f}"


def cmd_serve(args: argparse.Namespace) -> int:
    from .run import RunManifest
    from .serve import Limits, check_port, serve

    RunManifest.read(args.run)
    _check_batch_size(args.batch_size)
    checks = [
        ("--max-batch", args.max_batch >= 1, "at least 1"),
        ("--max-queue", args.max_queue >= 1, "at least 1"),
        ("--max-texts", args.max_texts >= 1, "at least 1"),
        ("--max-wait-ms", math.isfinite(args.max_wait_ms) and args.max_wait_ms >= 0, "a number of 0 or more"),
        ("--timeout", math.isfinite(args.timeout) and args.timeout > 0, "a positive number of seconds"),
        ("--port", 1 <= args.port <= 65535, "a port from 1 to 65535"),
    ]
    for flag, ok, want in checks:
        if not ok:
            value = getattr(args, flag[2:].replace("-", "_"))
            raise UsageError(f"{flag} {value}: must be {want}")
    check_port(args.host, args.port)
    limits = Limits(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_texts=args.max_texts,
        timeout_s=args.timeout,
    )
    serve(args.run, args.host, args.port, limits, args.precision, args.quantize, args.backend, args.adapter)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import ParityError, export_onnx
    from .run import RunManifest

    RunManifest.read(args.run)
    if args.output:
        _check_output(Path(args.output), "--output", folder=True)
    try:
        export_onnx(args.run, args.output, args.quantize)
    except ParityError as e:
        print(f"textfit: error: {e}", file=sys.stderr)
        return 1
    return 0


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=argparse.SUPPRESS, help="YAML file of options; flags given here override it")
    for name, f in FIELDS.items():
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
        }.get(name, [])
        extra = {"nargs": "?", "const": f.metadata["optional_const"]} if "optional_const" in f.metadata else {}
        p.add_argument(
            flag,
            *alias,
            dest=name,
            type=typ,
            default=argparse.SUPPRESS,
            metavar={"long_text": "MODE"}.get(name, name.split("_")[-1].upper()),
            help=help_text,
            **extra,
        )


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run folder written by 'textfit train'")
    p.add_argument("--text-column", help="text column of the file (default: the run's, then detected)")
    p.add_argument("--text-pair-column", help="second text column, for pair models")
    p.add_argument("--encoding", default="utf-8", help="encoding of the file (default: utf-8)")
    p.add_argument("--batch-size", type=int, default=64, help="texts per batch (default: 64)")
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
        default="torch",
        choices=["torch", "onnx"],
        help="onnx runs RUN/onnx/ (see 'textfit export') with onnxruntime",
    )
    p.add_argument(
        "--adapter",
        action="store_true",
        help="LoRA runs: the base model with the saved adapter instead of the merged weights",
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other usage error
        self.exit(2, f"textfit: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from .version import __version__

    parser = _Parser(
        prog="textfit", description="Fine-tune transformer encoders into text classifiers; evaluate, predict."
    )
    parser.add_argument("--version", action="version", version=f"textfit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="fine-tune a model on a data set and save the run")
    _add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "inspect", help="check the data before training: labels, duplicates, leakage, lengths, vocabulary"
    )
    _add_train_flags(p)
    p.add_argument(
        "--report", default="data_report.json", help="where to write the JSON report (default: data_report.json)"
    )
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("eval", help="evaluate a run on a labelled file")
    _add_run_flags(p)
    p.add_argument("--data", required=True, help="labelled file (or datasets folder) to evaluate on")
    p.add_argument("--label-column", help="label column of the file (default: the run's, then detected)")
    p.add_argument("--output", help="folder for metrics.json (default: RUN/eval-<data name>)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("serve", help="an HTTP server (FastAPI) with a page to try the model")
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
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="export a run to ONNX (optionally int8), checking parity with PyTorch")
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
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="label texts given as arguments, in a file, or typed at a prompt")
    _add_run_flags(p)
    p.add_argument("texts", nargs="*", help="texts to classify")
    p.add_argument("--text-pair", action="append", help="second text for a pair model, once per text")
    p.add_argument("--input", help="CSV, TSV, JSON, JSONL or Parquet file of texts")
    p.add_argument("--output", help="where to write predictions: .csv, .tsv or .jsonl")
    p.add_argument("--interactive", action="store_true", help="answer texts typed at a prompt")
    p.add_argument("--json", action="store_true", help="print one JSON object per text")
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse fills `predict RUN TEXT...` before it reads the flags: texts after a flag come back here.
    if extra and getattr(args, "command", None) == "predict" and not any(e.startswith("-") for e in extra):
        args.texts = list(args.texts) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
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
