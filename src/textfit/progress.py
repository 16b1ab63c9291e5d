"""Progress of a long pass over rows: a bar on a terminal, a line now and then elsewhere, or nothing.

    progress = Progress(total=1_000_000, quiet=False)   # total None: the bar shows what is done
    progress.update(10_000)                              # rows done; predicted=False for rows resumed
    progress.close()

tqdm draws the bar, only when stderr is a terminal and neither `--quiet` nor TQDM_DISABLE asks for
silence; a log file gets one line every PROGRESS_EVERY_S seconds instead of a bar's carriage returns.
"""

from __future__ import annotations

import os
import sys
import time

PROGRESS_EVERY_S = 30.0  # one progress line this often where stderr is not a terminal


def silenced() -> bool:
    """TQDM_DISABLE set (to anything but 0): no bar and no progress lines."""
    return os.environ.get("TQDM_DISABLE", "") not in ("", "0")


def bar_wanted(quiet: bool = False) -> bool:
    """A bar only where someone watches it: stderr a terminal, and no --quiet or TQDM_DISABLE."""
    return not quiet and not silenced() and sys.stderr.isatty()


class Progress:
    """tqdm's bar on a terminal; elsewhere a line every PROGRESS_EVERY_S seconds; nothing with --quiet or
    TQDM_DISABLE (a bar never shares a line with a message: messages come before it or through it)."""

    def __init__(self, total: int | None, quiet: bool, done: int = 0):
        self.total, self.done, self.fresh, self.t0 = total, done, 0, time.monotonic()
        self.last = self.t0
        self.quiet = quiet or silenced()
        self.bar = None
        if bar_wanted(quiet):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit=" rows", file=sys.stderr, dynamic_ncols=True)

    def update(self, rows: int, predicted: bool = True) -> None:
        self.done += rows
        self.fresh += rows if predicted else 0
        if self.bar is not None:
            self.bar.update(rows)
        elif not self.quiet and time.monotonic() - self.last >= PROGRESS_EVERY_S:
            self.last = time.monotonic()
            print(f"textfit: {self.line()}", file=sys.stderr, flush=True)

    def line(self) -> str:
        rate = self.fresh / max(1e-9, time.monotonic() - self.t0)
        shown = f"{self.done:,} rows predicted" + (f" of {self.total:,}" if self.total else "")
        left = ""
        if self.total and rate > 0:
            left = f", about {max(0.0, (self.total - self.done) / rate) / 60:.1f} min left"
        return f"{shown}, {rate:,.0f} rows/s{left}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def quiet_libraries() -> None:
    """The bars of transformers, datasets and huggingface_hub off wherever textfit draws none (--quiet,
    TQDM_DISABLE, stderr not a terminal): transformers' "Writing model shards" passes `disable` itself, so
    TQDM_DISABLE alone does not reach it. Only libraries already imported are told."""
    if bar_wanted():
        return
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
