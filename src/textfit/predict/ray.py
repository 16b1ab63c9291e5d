"""`textfit predict --engine ray`: the same prediction on Ray Data, over a running cluster or a local one.

    written, rejected = predict_ray(Run.open("runs/sst2"), job, address=None, options={"backend": "auto", ...})

read_csv / read_json / read_parquet -> map_batches with `_Predictor` (one actor per CPU of the cluster,
each loading the run once through `Classifier.load`, from the `Run` this process opened (its manifest travels
with it: no actor reads textfit.json), and predicting `job.chunk_rows` rows at a time through
`predict_file.predict_chunk`, the local engine's own chunk step) -> rows in input order
(`preserve_order`). A local output file (.csv, .tsv, .jsonl, .parquet) is written by this process from the
ordered stream, through the local engine's part writer, so it is the file the local engine writes; an
output without an extension, or a remote one (s3://, gs://), is a folder of Parquet files written by
Ray's own writer. Ray is an extra: `pip install 'textfit[ray]'`.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from textfit.data.write import join_parts, output_format, write_part
from textfit.errors import UsageError, first_line
from textfit.predict.files import Columns, FileJob, predict_chunk, rejects_path
from textfit.run import Run

# Reading takes no CPU of the cluster's count: the actors hold one each, and a read task that waits for a
# free CPU behind them never runs (measured: a local 2-CPU cluster hung with the read task at 1 CPU).
READ_CPUS = 0
# One logical CPU of the cluster is left to Ray Data's own tasks (reading, the repartition into chunks):
# actors hold the others. A local cluster counts one CPU more than the machine's cores for it.
SPARE_CPUS = 1
REJECT, ROW = "__textfit_reject", "__textfit_row"  # a reject's reason and row in its chunk, for the writer


def omp_threads(value: str) -> int:
    """The threads an OMP_NUM_THREADS value gives the outermost level: its first number ("4,2" is a valid
    nested setting: 4), at least 1; a value OpenMP would not take either is 1."""
    first = value.split(",")[0].strip()
    return max(1, int(first)) if first.isdigit() else 1


class _Predictor:
    """A Ray actor: the run loaded once, then chunk after chunk as the local engine predicts them."""

    def __init__(self, run: Run, options: dict[str, Any], job: FileJob, fmt: str, columns: Columns, source: list[Any]):
        import torch

        from textfit.predict.classifier import Classifier

        torch.set_num_threads(omp_threads(os.environ.get("OMP_NUM_THREADS", "1")))
        self.clf = Classifier.load(run, **options)
        self.job, self.fmt, self.columns, self.source = job, fmt, columns, source

    def __call__(self, df: Any) -> Any:
        import pandas as pd

        from textfit.data.read import Frame

        if len(df.columns) == len(self.source):
            df.columns = self.source  # a headerless file's columns, as the local reader numbers them
        if self.columns.text in df:
            df[self.columns.text] = df[self.columns.text].astype(object)
        out, bad = predict_chunk(self.clf, Frame(df, self.job.input, 0), self.columns, self.job, self.fmt, None, "row")
        if not len(bad):
            return out
        bad = bad.rename(columns={"row": ROW, "reason": REJECT})
        return pd.concat([out, bad], ignore_index=True)


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError("--engine ray needs Ray: pip install 'textfit[ray]'") from None
    return ray


def _read(ray: Any, job: FileJob, fmt: str, header: list[Any]) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if fmt in ("csv", "tsv"):
        named = not all(isinstance(c, int) for c in header)
        parse = pacsv.ParseOptions(
            delimiter="\t" if fmt == "tsv" else ",",
            quote_char=False if job.read.quoting == "none" or (fmt == "tsv" and job.read.quoting == "auto") else '"',
            newlines_in_values=True,
        )
        read = pacsv.ReadOptions(autogenerate_column_names=not named)
        types = {str(c) if named else f"f{c}": pa.string() for c in header}
        convert = pacsv.ConvertOptions(column_types=types, strings_can_be_null=False)
        return ray.data.read_csv(
            job.input, parse_options=parse, read_options=read, convert_options=convert, num_cpus=READ_CPUS
        )
    if fmt == "jsonl":
        return ray.data.read_json(job.input, lines=True, num_cpus=READ_CPUS)
    return ray.data.read_parquet(job.input, num_cpus=READ_CPUS)


def _input_format(path: str) -> str:
    """The format of --input: a file's, or the one format of a folder's files (local, or remote without an
    extension: listed through pyarrow's file systems, as Ray lists it)."""
    p = Path(path)
    if "://" not in path and p.is_dir():
        names = [f.name for f in p.rglob("*") if f.is_file()]
    elif "://" in path and not p.suffix:
        names = _remote_names(path)
    else:
        return _file_format(path, path)
    from textfit.data.compressed import compression

    found = sorted(
        {
            "".join(Path(n).suffixes[-2:]).lower() if compression(n) else Path(n).suffix.lower()
            for n in names
            if n[:1] != "."
        }
    )
    if len(found) != 1:
        raise UsageError(
            f"--input {path}: a folder of files of one format (.csv, .tsv, .jsonl or .parquet); found {found}"
        )
    return _file_format(f"x{found[0]}", path)


def _remote_names(url: str) -> list[str]:
    """The names of the files under a remote folder (s3://, gs://, ...)."""
    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(url)
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except Exception as e:  # pyarrow raises many types: no such bucket, no credentials, an unknown scheme
        raise UsageError(
            f"--input {url}: cannot list the folder ({first_line(e)}); check the address and its credentials"
        ) from None
    return [Path(i.path).name for i in infos if i.type == pafs.FileType.File]


def _file_format(name: str, shown: str) -> str:
    """The format of a file Ray's readers take: .csv, .tsv, .jsonl, .parquet, the first three also compressed
    (pyarrow detects .gz, .bz2 and .zst by the extension; it has no .xz)."""
    from textfit.data.compressed import compression, uncompressed

    kind = compression(name)
    if kind == "xz":
        raise UsageError(f"--input {shown}: Ray's readers take .gz, .bz2 and .zst files, not .xz; use the local engine")
    try:
        fmt = output_format(uncompressed(name), "--input")
    except UsageError:
        raise UsageError(
            f"--input {shown}: unsupported format; use .csv, .tsv, .jsonl or .parquet files (the first three also as "
            ".gz, .bz2 or .zst)"
        ) from None
    if kind and fmt == "parquet":
        raise UsageError(
            f"--input {shown}: a Parquet file compresses itself; pass it without .{name.rsplit('.', 1)[1]}"
        )
    return fmt


def _first_frame(job: FileJob, fmt: str, ds: Any = None) -> Any:
    """The first rows, as the local reader reads them: the columns are settled on them. A local CSV or TSV
    folder: its first file's (Ray reads the files in the order of their names); a remote one: Ray's read."""
    from textfit.data.read import Frame
    from textfit.data.stream import read_chunks

    p = Path(job.input)
    local = "://" not in job.input and p.exists()
    if local and (p.is_file() or (ds is None and fmt in ("csv", "tsv"))):
        f = p if p.is_file() else min(x for x in p.rglob("*") if x.is_file() and not x.name.startswith("."))
        return next(read_chunks(str(f), 100, job.read.encoding, job.read.headerless(), job.read.quoting))
    return Frame(ds.limit(100).to_pandas(), job.input, 0)


def _remote_header(ray: Any, job: FileJob, fmt: str) -> list[str]:
    """A remote CSV or TSV's column names, from its header line as pyarrow reads it."""
    import pyarrow.csv as pacsv

    parse = pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True)
    return [str(c) for c in ray.data.read_csv(job.input, parse_options=parse, num_cpus=READ_CPUS).schema().names]


def predict_ray(run: Run | str, job: FileJob, address: str | None, options: dict[str, Any]) -> tuple[int, int]:
    """Predict `job.input` into `job.output` on Ray Data; returns (rows written, rows rejected). `run`: a `Run`
    (or its folder, opened here)."""
    if job.resume:
        raise UsageError("--resume is offered by the local engine; with --engine ray run the prediction again")
    to_file = "://" not in job.output and Path(job.output).suffix != ""
    if not to_file and job.skip_bad_rows:
        raise UsageError("--skip-bad-rows with --engine ray needs an output file (.csv, .tsv, .jsonl or .parquet)")
    folder = Path(job.output)
    if not to_file and "://" not in job.output and folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(
            f"--output {job.output}: exists and is not an empty folder; choose a new folder for Ray's files"
        )
    fmt_in = _input_format(job.input)
    fmt = output_format(job.output) if to_file else "parquet"
    run = Run.open(run)
    manifest = run.manifest
    ray = _ray()
    if not ray.is_initialized():
        ray.init(
            address=address,
            num_cpus=None if address else (os.cpu_count() or 1) + SPARE_CPUS,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = sys.stderr.isatty() and not job.quiet
    delimited, remote = fmt_in in ("csv", "tsv"), "://" in job.input
    first = _first_frame(job, fmt_in) if delimited and not remote else None
    header = list(first.df.columns) if first is not None else _remote_header(ray, job, fmt_in) if delimited else []
    ds = _read(ray, job, fmt_in, header)
    first = first if first is not None else _first_frame(job, fmt_in, ds)
    stub = SimpleNamespace(manifest=manifest, task=manifest.task, labels=list(manifest.schema.label_names))
    columns = Columns(first, stub, job, fmt, False)
    actors = max(1, int(ray.cluster_resources().get("CPU", 1)) - SPARE_CPUS)
    # Blocks of exactly chunk_rows rows (the last one shorter), so that every actor call predicts the chunk
    # the local engine predicts: in bf16 a text's scores move with the batch it is padded in.
    ds = ds.repartition(target_num_rows_per_block=job.chunk_rows, strict=True)
    rows = ds
    out = ds.map_batches(
        _Predictor,
        fn_constructor_kwargs={
            "run": Run(run.path.resolve(), manifest),  # the actors' working folder may differ
            "options": options,
            "job": job,
            "fmt": fmt,
            "columns": columns,
            "source": list(first.df.columns),
        },
        batch_size=job.chunk_rows,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
    )
    try:
        if not to_file:
            out.write_parquet(job.output)
            return rows.count(), 0  # the input counted again (read, not predicted): no rejects in this mode
        return _write_file(out, job, fmt, columns, first.first_line)
    except Exception as e:  # an actor's UsageError comes back wrapped in Ray's task error
        cause = getattr(e, "cause", None) or e.__cause__
        if isinstance(cause, UsageError) or isinstance(e, UsageError):
            raise UsageError(str(cause if isinstance(cause, UsageError) else e.args[0]).splitlines()[-1]) from None
        raise


def _write_file(ds: Any, job: FileJob, fmt: str, columns: Columns, base: int) -> tuple[int, int]:
    """The ordered stream written as the local engine writes it: parts in a hidden folder, joined and
    renamed into place; rejected rows (with --skip-bad-rows) to the rejects file with their line."""
    from textfit.predict.files import work_folder

    work = work_folder(job.output)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "state.json").write_text('{"engine": "ray"}', encoding="utf-8")
    written = rejected = row = 0
    unit = "row" if base == 0 else "line"
    parts, bad_parts = [], []
    try:
        for n, df in enumerate(ds.iter_batches(batch_size=job.chunk_rows, batch_format="pandas")):
            rejects = df[REJECT].notna() if REJECT in df else None
            good = df[~rejects].drop(columns=[REJECT, ROW]) if rejects is not None else df
            if rejects is not None and rejects.any():
                bad = df[rejects].drop(columns=list(columns.pred.values()))
                bad.insert(0, unit, (base + row + bad.pop(ROW)).astype(int))
                bad.insert(1, "reason", bad.pop(REJECT))
                bad_parts.append(work / f"rejects-{n:06d}")
                write_part(bad.reset_index(drop=True), bad_parts[-1], fmt, header=True)
                rejected += len(bad)
            parts.append(work / f"part-{n:06d}")
            write_part(good.reset_index(drop=True), parts[-1], fmt, header=n == 0)
            written, row = written + len(good), row + len(df)
        if bad_parts:
            join_parts(bad_parts, rejects_path(job.output), fmt, work / "joined-rejects", headers=True)
        join_parts(parts, Path(job.output), fmt, work / "joined")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(work)
    return written, rejected
