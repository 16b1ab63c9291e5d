"""The fused AMX attention kernel for CPU prediction (cpu_attention.py) against PyTorch's SDPA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from textfit import accel
from textfit.accel import attention as cpu_attention
from textfit.accel.inference import for_cpu_inference

needs_kernel = pytest.mark.skipif(
    cpu_attention.unavailable() is not None, reason=f"fused attention: {cpu_attention.unavailable()}"
)


def bert_layout(b: int, length: int, heads: int, d: int, seed: int) -> list[torch.Tensor]:
    """q, k, v as BERT's projections give them: (batch, heads, length, dim) views of (batch, length, heads, dim)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, length, heads, d, generator=g).to(torch.bfloat16).transpose(1, 2) for _ in range(3)]


@needs_kernel
@pytest.mark.parametrize("length,d", [(1, 32), (7, 32), (16, 32), (45, 32), (130, 64), (200, 96), (33, 128)])
@pytest.mark.parametrize("mask", ["none", "padding", "holes"])
def test_kernel_matches_sdpa(length, d, mask):
    b, heads = 3, 4
    q, k, v = bert_layout(b, length, heads, d, seed=length + d)
    additive = None
    if mask != "none":
        keep = torch.ones(b, length, dtype=torch.bool)
        keep[1, max(1, length // 2) :] = False  # padding at the end
        if mask == "holes":
            keep[2, ::3] = False
            keep[2, -1] = True
        additive = torch.zeros(b, 1, 1, length, dtype=torch.bfloat16).masked_fill(
            ~keep[:, None, None, :], torch.finfo(torch.bfloat16).min
        )
    with torch.inference_mode():
        assert cpu_attention.supports(q, k, v, additive)
        ours = cpu_attention.fused_attention(q, k, v, additive, d**-0.5).float()
        exact = F.scaled_dot_product_attention(
            q.float(), k.float(), v.float(), attn_mask=None if additive is None else additive.float()
        )
        sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=additive).float()
    exact = exact.transpose(1, 2)
    sdpa = sdpa.transpose(1, 2)
    assert ours.shape == (b, length, heads, d)
    # within bf16 rounding of the exact result, as close as PyTorch's own bf16 attention is
    err, sdpa_err = (ours - exact).abs().max().item(), (sdpa - exact).abs().max().item()
    assert err < max(2 * sdpa_err, 0.02), (err, sdpa_err)


def test_inputs_the_kernel_does_not_take_go_to_sdpa():
    q, k, v = bert_layout(2, 20, 2, 32, seed=0)
    assert not cpu_attention.supports(q.float(), k.float(), v.float(), None)  # fp32
    q16, k16, v16 = bert_layout(2, 20, 2, 16, seed=0)
    assert not cpu_attention.supports(q16, k16, v16, None)  # head size not a multiple of 32
    assert not cpu_attention.supports(q, k, v, torch.zeros(2, 1, 20, 20, dtype=torch.bfloat16))  # a full mask
    assert not cpu_attention.supports(q, k, v, torch.ones(2, 1, 1, 20, dtype=torch.bool))  # SDPA's bool mask
    with torch.enable_grad():
        assert not cpu_attention.supports(q.requires_grad_(), k, v, None)  # training


def tiny_classifier(kind: str, seed: int = 0) -> torch.nn.Module:
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    torch.manual_seed(seed)
    if kind == "distilbert":
        config = DistilBertConfig(
            vocab_size=99, dim=64, n_layers=2, n_heads=2, hidden_dim=128, max_position_embeddings=64, num_labels=3
        )
        return DistilBertForSequenceClassification(config).eval()
    config = BertConfig(
        vocab_size=99,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
        num_labels=3,
    )
    return BertForSequenceClassification(config).eval()


@needs_kernel
@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_prediction_model_uses_the_kernel_and_keeps_its_outputs(kind):
    fused, plain = tiny_classifier(kind), tiny_classifier(kind)
    fused = for_cpu_inference(fused)
    plain.to(torch.bfloat16)
    assert fused.config._attn_implementation == cpu_attention.NAME
    ids = torch.randint(5, 99, (3, 40))
    mask = torch.ones_like(ids)
    mask[1, 25:] = 0
    mask[2, 10:] = 0
    with torch.inference_mode():
        got = fused(input_ids=ids, attention_mask=mask).logits.float()
        want = plain(input_ids=ids, attention_mask=mask).logits.float()
        alone = fused(input_ids=ids[2:, :10]).logits.float()  # the padded text, unpadded
    torch.testing.assert_close(got, want, atol=0.05, rtol=0.05)
    torch.testing.assert_close(got[2:], alone, atol=0.05, rtol=0.05)


@needs_kernel
def test_python_threads_when_no_openmp_runtime_is_found(monkeypatch):
    """Without PyTorch's OpenMP runtime the pairs are shared among Python threads: same result."""
    q, k, v = bert_layout(4, 90, 3, 32, seed=5)
    with torch.inference_mode():
        assert 4 * 3 * 90 * 90 >= cpu_attention.SMALL
        on_openmp = cpu_attention.fused_attention(q, k, v, None, 32**-0.5)
        monkeypatch.delitem(cpu_attention._state, "omp", raising=False)
        on_threads = cpu_attention.fused_attention(q, k, v, None, 32**-0.5)
    assert torch.equal(on_openmp, on_threads)


def test_no_compiler_means_sdpa_with_a_reason(monkeypatch, tmp_path):
    """Where the kernel cannot be built (here: no compiler), prediction models keep SDPA."""
    monkeypatch.setattr(cpu_attention, "_state", {})
    monkeypatch.setenv("TEXTFIT_CACHE", str(tmp_path))  # nothing built there yet
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert cpu_attention.kernel() is None
    assert cpu_attention.unavailable()
    # accel.enable: bf16 weights and fused linears where the CPU's kernels have bf16, fp32 elsewhere; SDPA in both
    model = accel.enable(tiny_classifier("bert"), "infer", torch.device("cpu"))
    assert model.config._attn_implementation == "sdpa"
    with torch.inference_mode():
        assert torch.isfinite(model(input_ids=torch.randint(5, 99, (2, 12))).logits).all()
    assert not any(p.suffix == ".so" for p in tmp_path.rglob("*"))
