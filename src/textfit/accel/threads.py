"""Sharing the CPU: as many compute threads as there are cores that other work leaves free.

    governor = ThreadGovernor()      # remembers torch's thread count as the most to use
    governor.tick()                  # once per step: every few seconds, re-counts the free cores
    governor.changes                 # [(step_time, threads), ...]: what it did, for the run log

PyTorch starts one OpenMP thread per core. When another job shares the machine, those threads outnumber
the cores, and OpenMP threads that wait for a descheduled partner at every barrier waste the cores they
hold: measured on 2 cores (benchmarks/RESULTS.md, `bench_share.py`), two textfit trainings at once ran
3.6x slower each and three 12x, where the fair share is 2x and 3x. The governor measures, over a window
of a few seconds, how much CPU the whole machine used (psutil) and how much this process used, takes the
difference as the cores other work holds, and sets `torch.set_num_threads` to the cores left (at least 1,
at most the starting count). When the other work ends, the free cores show up as idle and it grows back.
OMP_NUM_THREADS set by the user turns it off.

Library check: OpenMP's own answers are environment variables read once when the library loads
(OMP_NUM_THREADS, OMP_WAIT_POLICY/GOMP_SPINCOUNT, OMP_DYNAMIC) and cannot follow a neighbour that starts
or stops during a run; PyTorch has no load-aware setting. Linux only (psutil's system CPU times); elsewhere
and under several processes (`accelerate launch`), threads stay as PyTorch set them.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

WINDOW_S = 1.0  # seconds between two counts of the free cores


class ThreadGovernor:
    def __init__(self, max_threads: int | None = None, window_s: float = WINDOW_S, clock: Any = time.monotonic):
        import psutil

        self.psutil = psutil
        self.max_threads = max_threads or torch.get_num_threads()
        self.total_cores = os.cpu_count() or self.max_threads
        self.window_s, self.clock = window_s, clock
        self.process = psutil.Process()
        self.changes: list[tuple[float, int]] = []
        self.started = clock()
        self._mark()

    def _mark(self) -> None:
        self.t0 = self.clock()
        self.own0 = sum(self.process.cpu_times()[:2])
        self.system0 = self.psutil.cpu_times()

    def _busy_cores(self) -> tuple[float, float]:
        """Cores this process and the whole machine kept busy since the last mark."""
        wall = max(1e-6, self.clock() - self.t0)
        own = (sum(self.process.cpu_times()[:2]) - self.own0) / wall
        now = self.psutil.cpu_times()
        busy_fields = ("user", "nice", "system", "irq", "softirq", "steal")
        busy = sum(getattr(now, f, 0.0) - getattr(self.system0, f, 0.0) for f in busy_fields) / wall
        return own, busy

    def wanted(self, own: float, busy: float) -> int:
        """Threads for the cores other work leaves: all cores minus what the rest of the machine used."""
        others = max(0.0, busy - own)
        free = self.total_cores - others
        return int(max(1, min(self.max_threads, round(free))))

    def tick(self) -> int | None:
        """Re-count every `window_s` seconds; returns the new thread count when it changed."""
        if self.clock() - self.t0 < self.window_s:
            return None
        own, busy = self._busy_cores()
        self._mark()
        threads = self.wanted(own, busy)
        if threads == torch.get_num_threads():
            return None
        torch.set_num_threads(threads)
        self.changes.append((round(self.clock() - self.started, 1), threads))
        return threads

    def close(self) -> None:
        """Give PyTorch back its starting thread count (the next job in this process starts alone)."""
        torch.set_num_threads(self.max_threads)


def governor_for(device: torch.device, processes: int) -> ThreadGovernor | None:
    """A governor for one CPU process on Linux with psutil; None where it does not apply."""
    if device.type != "cpu" or processes != 1 or not os.path.exists("/proc/stat") or torch.get_num_threads() < 2:
        return None
    if os.environ.get("OMP_NUM_THREADS"):  # the user chose a thread count: keep it
        return None
    try:
        return ThreadGovernor()
    except ImportError:
        return None
