"""One-pass CPU dropout (cpu_dropout.py) used by FastDropout in CPU training."""

from __future__ import annotations

import pytest
import torch

from textfit.accel import dropout as cpu_dropout
from textfit.accel.dropout import FastDropout

needs_kernel = pytest.mark.skipif(cpu_dropout.kernel() is None, reason="no AVX-512 bf16 CPU or no C compiler")


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", [1, 7, 33, 100_003])
def test_drops_p_and_scales_the_rest(dtype, n):
    torch.manual_seed(0)
    x = torch.randn(n).to(dtype) + 5  # never 0, so zeros are drops
    y = cpu_dropout.dropout(x, 0.25)
    kept = y != 0
    assert torch.equal(y[kept], (x.float() * (1 / 0.75)).to(dtype)[kept])
    if n > 1000:
        assert abs((~kept).float().mean().item() - 0.25) < 0.01


@needs_kernel
def test_same_seed_same_mask_and_backward_uses_it():
    x = (torch.randn(4, 50, 64) + 5).requires_grad_()
    torch.manual_seed(1)
    y1 = cpu_dropout.dropout(x, 0.1)
    torch.manual_seed(1)
    y2 = cpu_dropout.dropout(x, 0.1)
    assert torch.equal(y1, y2)
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    expected = torch.where(y1 != 0, g / 0.9, torch.zeros_like(g))
    torch.testing.assert_close(x.grad, expected)


@needs_kernel
def test_fast_dropout_module_uses_it_in_training_only():
    m = FastDropout(0.5)
    x = torch.randn(8, 16).bfloat16() + 3
    assert torch.equal(m.eval()(x), x)
    y = m.train()(x)
    assert set(torch.unique(y == 0).tolist()) == {True, False}
