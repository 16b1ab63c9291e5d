"""The thread governor: fewer compute threads while other work holds cores, all of them back when it ends."""

from __future__ import annotations

import pytest
import torch

from textfit.accel.threads import ThreadGovernor, governor_for


@pytest.fixture
def governor():
    start = torch.get_num_threads()
    clock = {"t": 0.0}
    g = ThreadGovernor(max_threads=2, window_s=3.0, clock=lambda: clock["t"])
    g.total_cores = 2
    g.clock_value = clock
    yield g
    torch.set_num_threads(start)


@pytest.mark.parametrize(
    "own, busy, want",
    [
        (2.0, 2.0, 2),  # alone, both cores busy with our own threads
        (1.0, 2.0, 1),  # another job holds a core
        (0.7, 2.0, 1),  # two others: never fewer than one thread
        (1.0, 1.05, 2),  # the other job ended: its core is idle again
        (1.9, 2.0, 2),  # a little background noise is not a job
    ],
)
def test_threads_follow_the_cores_other_work_leaves(governor, own, busy, want):
    assert governor.wanted(own, busy) == want


def test_tick_changes_torch_threads_only_after_a_window(governor, monkeypatch):
    torch.set_num_threads(2)
    readings = iter([(1.0, 2.0), (1.0, 1.0)])
    monkeypatch.setattr(governor, "_busy_cores", lambda: next(readings))
    governor.clock_value["t"] = 1.0
    assert governor.tick() is None and torch.get_num_threads() == 2  # within the first window: nothing measured
    governor.clock_value["t"] = 3.5
    assert governor.tick() == 1 and torch.get_num_threads() == 1
    governor.clock_value["t"] = 7.0
    assert governor.tick() == 2 and torch.get_num_threads() == 2
    assert [t for _, t in governor.changes] == [1, 2]
    torch.set_num_threads(1)
    governor.close()
    assert torch.get_num_threads() == 2


def test_no_governor_where_it_does_not_apply(monkeypatch):
    assert governor_for(torch.device("cuda"), 1) is None
    assert governor_for(torch.device("cpu"), 2) is None  # several processes: each already has its share
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert governor_for(torch.device("cpu"), 1) is None  # the user's own choice stays
