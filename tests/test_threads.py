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


def _grads(x, norm, threads):
    torch.set_num_threads(threads)
    x = x.detach().requires_grad_()
    norm.zero_grad()
    from textfit.accel.steady import softmax

    y = softmax(norm(x) @ norm(x).T / 8, dim=-1)
    (y * torch.arange(y.shape[-1])).sum().backward()
    return [x.grad, norm.weight.grad, norm.bias.grad]


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="one thread: no other count to compare with")
def test_steady_gradients_do_not_follow_the_thread_count():
    """Layer norm's and softmax's gradients (the two operators measured to follow the thread count) are the
    same bits on 1 thread as on 2 inside `steady`, and PyTorch's own up to rounding."""
    from textfit.accel.steady import steady

    start = torch.get_num_threads()
    torch.manual_seed(0)
    x, norm = torch.randn(2048, 384), torch.nn.LayerNorm(384)
    try:
        plain = _grads(x, norm, 2)
        with steady(norm):
            two = _grads(x, norm, 2)
            one = _grads(x, norm, 1)
    finally:
        torch.set_num_threads(start)
    assert all(torch.equal(a, b) for a, b in zip(two, one))
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(plain, two))
    assert norm.forward.__func__ is torch.nn.LayerNorm.forward  # put back on leaving


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="one thread: no other count to compare with")
def test_a_run_whose_thread_count_changes_gives_the_same_model(tiny_model, tmp_path, monkeypatch):
    """The same seed, once at a steady thread count and once with the governor changing it every step
    (as other work starting and stopping would): bit-identical model.safetensors."""
    import importlib

    import textfit.accel.threads as threads
    from conftest import make_rows, write_csv
    from textfit import TrainConfig, train

    loop = importlib.import_module("textfit.train.loop")

    data = write_csv(tmp_path / "d.csv", make_rows(160))
    cfg = dict(data=str(data), model=tiny_model, method="finetune", epochs=2, batch_size=16, precision="fp32")
    monkeypatch.setattr(loop, "governor_for", lambda *a: None)
    steady_run = train(TrainConfig(output=str(tmp_path / "steady"), **cfg))

    def flip(self):
        n = 1 if torch.get_num_threads() > 1 else self.max_threads
        torch.set_num_threads(n)
        self.changes.append((0.0, n))
        return n

    monkeypatch.setattr(threads.ThreadGovernor, "tick", flip)
    monkeypatch.setattr(loop, "governor_for", threads.governor_for)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    changing = train(TrainConfig(output=str(tmp_path / "changing"), **cfg))
    assert (tmp_path / "changing" / "model.safetensors").read_bytes() == (
        tmp_path / "steady" / "model.safetensors"
    ).read_bytes()
    assert changing is not None and steady_run is not None


def test_a_copy_made_inside_steady_runs_its_own_layer_norms():
    """Training's evaluations predict with a copy of the model made inside `steady`; the copy's layer norms
    must use its own weights (as the saved run will), not the original's, and PyTorch's own kernel."""
    from textfit.accel.steady import steady
    from textfit.models.transformer import inference_copy

    torch.manual_seed(0)
    model, x = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8)), torch.randn(4, 8)
    with steady(model):
        copy = inference_copy(model)
        with torch.no_grad():
            model[1].weight.mul_(3.0)  # the original goes on training; the copy must not follow it
    assert "forward" not in copy[1].__dict__
    with torch.no_grad():
        want = torch.nn.functional.layer_norm(copy[0](x), (8,), copy[1].weight, copy[1].bias, copy[1].eps)
        assert torch.equal(copy(x), want)
