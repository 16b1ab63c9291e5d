"""The subcommands as plain functions of their parsed flags: `cli.py` maps each command to one of them.

    from textfit.cli.commands import cmd_eval
    cmd_eval(build_parser().parse_args(["eval", "runs/sst2", "--data", "holdout.csv"]))

Each validates what the user gave before any work starts and raises `UsageError` (one line, exit 2). A command
on a run opens it once (`Run.open`: a folder that is not a run is refused before anything loads) and hands the
`Run` on, so textfit.json is read once and the weights are loaded once.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textfit.config import from_flags
from textfit.errors import UsageError

if TYPE_CHECKING:
    from textfit.run import Run


def cmd_train(args: argparse.Namespace) -> int:
    from textfit.train import train

    train(from_flags(args))  # with --seeds, one run per seed
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from textfit.evaluate.inspect import format_report, inspect
    from textfit.run import write_json

    cfg = from_flags(args)
    if args.label_issues:
        from textfit.train.cv import check_cv

        check_cv(cfg, args.folds)
    report = inspect(cfg)
    for note in report["notes"]:
        print(f"textfit: {note}")
    print(format_report(report))
    write_json(Path(args.report), report)
    print(f"textfit: wrote {args.report}")
    failed = any(p["level"] == "error" for p in report["problems"])
    if args.label_issues and failed:
        print("textfit: no label-issue search: fix the errors above first", file=sys.stderr)
    elif args.label_issues:
        from textfit.train.cv import cross_validate

        print(f"textfit: ranking label issues with {args.folds}-fold cross-validation (one training run per fold)")
        cross_validate(cfg, args.folds)
    return 1 if failed else 0


def cmd_cv(args: argparse.Namespace) -> int:
    from textfit.train.cv import cross_validate

    cross_validate(from_flags(args), args.folds)
    return 0


def eval_default_output(run: str, data: str) -> Path:
    """RUN/eval-<data name>: where `eval` writes metrics.json without --output."""
    from textfit.data.read import data_stem

    return Path(run) / f"eval-{data_stem(data).replace(' ', '_')}"


def ray_writes_folder(engine: str, output: str) -> bool:
    """`predict --engine ray` writes a folder of files (a remote URL, or a path without an extension), which
    Ray's writers check themselves; the local engine and a Ray output file go through textfit's checks."""
    return engine == "ray" and ("://" in output or Path(output).suffix == "")


def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from textfit.data.load import ReadOptions
    from textfit.evaluate.evaluate import evaluate_file
    from textfit.evaluate.report import write_report
    from textfit.metrics import format_metrics
    from textfit.run import Run, write_json

    run = Run.open(args.run)  # a folder that is not a run is refused before anything loads
    _check_batch_size(args.batch_size)
    if args.chunk_rows < 1:
        raise UsageError(f"--chunk-rows {args.chunk_rows}: must be at least 1")
    clf = _classifier(args, run)
    split, m, logits = evaluate_file(clf, args.data, args.chunk_rows, args.batch_size, ReadOptions.from_flags(args))
    probs = clf.scores(logits)
    out = Path(args.output) if args.output else eval_default_output(args.run, args.data)
    out.mkdir(parents=True, exist_ok=True)
    backend = {"backend": clf.backend_name, **({"backend_choice": clf.backend_choice} if clf.backend_choice else {})}
    write_json(out / "metrics.json", {"data": args.data, **m, **backend})
    print(format_metrics(m, f"{args.data} ({len(split.labels)} rows)"))
    if "calibration" in m:
        from textfit.evaluate.report import plot_reliability

        c = m["calibration"]
        print(
            f"calibration (temperature from training): expected calibration error {c['before']['ece']:.4f} "
            f"uncalibrated, {c['after']['ece']:.4f} calibrated; Brier {c['before']['brier']:.4f} -> "
            f"{c['after']['brier']:.4f}; NLL {c['before']['nll']:.4f} -> {c['after']['nll']:.4f}"
        )
        plot_reliability(logits, split.labels, clf.task, clf.manifest.temperature, out / "reliability.png", args.data)
    if "collapsed" in m:
        print(f"textfit: warning: {m['collapsed']}", file=sys.stderr)
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


def _classifier_options(args: argparse.Namespace) -> dict[str, Any]:
    """Classifier.load's options from the run flags. --explain: PyTorch, in fp32 unless --precision says
    otherwise, so that the explainer takes the classifier's model (`Explainer.from_classifier`) and the
    weights load once."""
    explain = getattr(args, "explain", False)
    backend = "torch" if args.backend == "auto" and explain else args.backend
    return {
        "precision": "fp32" if explain and args.precision == "auto" else args.precision,
        "quantize": args.quantize,
        "backend": backend,
        "adapter": args.adapter,
        "device": args.device,
    }


def _classifier(args: argparse.Namespace, run: Run) -> Any:
    """The run's Classifier (`run`: the command's `Run`) as the shared run flags (`cli._add_run_flags`) ask for it."""
    from textfit.predict.classifier import Classifier

    clf = Classifier.load(run, **_classifier_options(args))
    if clf.backend_choice:
        print(f"textfit: backend {clf.backend_name}: {clf.backend_choice}", file=sys.stderr)
    return clf


def _file_job(args: argparse.Namespace) -> Any:
    from textfit.data.load import ReadOptions
    from textfit.predict.files import FileJob

    keep = None if args.keep_columns is None else [c.strip() for c in args.keep_columns.split(",") if c.strip()]
    return FileJob(
        args.input,
        args.output,
        ReadOptions.from_flags(args),
        keep,
        args.chunk_rows,
        args.batch_size,
        args.resume,
        args.overwrite,
        args.skip_bad_rows,
        args.quiet,
    )


def cmd_predict(args: argparse.Namespace) -> int:
    from textfit.run import Run

    run = Run.open(args.run)
    manifest = run.manifest
    if not (args.texts or args.input or args.interactive):
        raise UsageError("nothing to predict: give texts, --input FILE, or --interactive")
    if args.output and not args.input:
        raise UsageError("--output needs --input FILE")
    if args.input and not args.output:
        raise UsageError("--input needs --output FILE (.csv, .tsv, .jsonl or .parquet)")
    if args.engine == "ray" and not args.input:
        raise UsageError("--engine ray predicts files: give --input PATH and --output PATH")
    if args.engine == "ray" and args.explain:
        raise UsageError("--explain is not offered with --engine ray; explain a sample with the local engine")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite: choose one (continue the interrupted prediction, or start again)")
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
    if args.explain and args.backend not in ("torch", "auto"):
        raise UsageError(
            "--explain needs the PyTorch backend (integrated gradients take gradients through the model); "
            f"drop --backend {args.backend}"
        )
    job = _file_job(args) if args.input else None
    if job is not None and not ray_writes_folder(args.engine, job.output):
        from textfit.predict.files import check_job

        check_job(job)  # before the model loads: an output that exists, a resume with nothing to resume
    if args.explain:
        from textfit.predict.explain import check

        check(run)  # a model that cannot be explained: refused before it loads
    clf = _classifier(args, run) if args.engine == "local" or args.texts or args.interactive else None
    explainer = None
    if args.explain:
        from textfit.predict.explain import Explainer

        explainer = Explainer.from_classifier(clf)  # its model: the weights load once
    if args.texts:
        _predict_texts(args, clf, explainer)
    if job is not None:
        _predict_input(args, run, clf, job, explainer)
    if args.interactive:
        interactive(clf, sys.stdin, sys.stdout, explainer)
    return 0


def _predict_texts(args: argparse.Namespace, clf: Any, explainer: Any) -> None:
    from textfit.predict.files import explained_label

    pairs = args.text_pair or [None] * len(args.texts)
    for text, pair, pred in zip(args.texts, pairs, clf.predict(args.texts, args.text_pair or None, args.batch_size)):
        e = explainer.explain(text, pair, explained_label(pred)) if explainer is not None else None
        if args.json:
            extra = {"explanation": e.as_dict()} if e is not None else {}
            print(json.dumps({"text": text, **pred.as_dict(), **extra}, ensure_ascii=False))
        else:
            print(f"{_shown(pred)}\t{text}")
            if e is not None:
                _print_explanation(e)


def _predict_input(args: argparse.Namespace, run: Run, clf: Any, job: Any, explainer: Any) -> None:
    """--input FILE --output FILE: streamed in chunks by this process, or by Ray Data (--engine ray)."""
    from textfit.predict.files import predict_file, rejects_path

    if args.engine == "ray":
        from textfit.predict.ray import predict_ray

        written, rejected = predict_ray(run, job, args.ray_address, _classifier_options(args))
    else:
        written, rejected = predict_file(clf, args.run, job, explainer)
    if rejected:
        print(f"textfit: {rejected} rows with an empty text written to {rejects_path(job.output)}", file=sys.stderr)
    if not args.quiet:
        print(f"textfit: wrote {written} predictions to {job.output}", file=sys.stderr)


def _print_explanation(e: Any, out: Any = None) -> None:
    from textfit.predict.explain import coloured, ranked_lines

    out = out or sys.stdout
    if out.isatty():
        out.write("  " + coloured(e) + "\n")
    out.write(f"  words that pushed towards '{e.label}' (integrated gradients; negative: away from it):\n")
    out.write("\n".join(ranked_lines(e)) + "\n")
    if e.truncated:
        out.write("  (only the first tokens, up to the run's --max-length, were explained)\n")


def interactive(clf: Any, stdin: Any, stdout: Any, explainer: Any = None) -> None:
    """A prompt that answers each line with the label and its probability; q or end of input quits."""
    from textfit.predict.files import explained_label

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
        if explainer is not None:
            _print_explanation(explainer.explain(text, pair[0] if pair else None, explained_label(pred)), stdout)
    stdout.write("\n")


def _shown(pred: Any) -> str:
    """A prediction on one line: label and probability, the labels over their thresholds, or the value."""
    if pred.value is not None:
        return f"{pred.value:.4f}"
    if pred.labels is not None:
        return f"{pred.label or '(no label)'}\t{pred.score:.4f}"
    return f"{pred.label}\t{pred.score:.4f}"


def cmd_serve(args: argparse.Namespace) -> int:
    from textfit import accel
    from textfit.run import Run
    from textfit.serve.app import Limits, check_port, serve

    run = Run.open(args.run)
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
    accel.pick_device(args.device)
    check_port(args.host, args.port)
    limits = Limits(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_texts=args.max_texts,
        timeout_s=args.timeout,
    )
    serve(run, args.host, args.port, limits, args.precision, args.quantize, args.backend, args.adapter, args.device)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from textfit.predict.export import ParityError, export_onnx
    from textfit.run import Run

    run = Run.open(args.run)
    try:
        export_onnx(run, args.output, args.quantize)
    except ParityError as e:
        print(f"textfit: error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from textfit.hub import push_run
    from textfit.run import Run

    url = push_run(Run.open(args.run), args.repo_id, private=args.private, with_onnx=args.with_onnx)
    print(f"textfit: pushed {args.run} to {url}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from textfit.train.tune import load_space, tune

    cfg = from_flags(args)
    tune(cfg, load_space(args.tune_space), args.trials, args.timeout, args.storage, args.study_name)
    return 0
