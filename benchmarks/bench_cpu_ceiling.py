"""How close CPU prediction is to what the machine can do, and whether int8 would buy more (issue 19).

    python benchmarks/bench_cpu_ceiling.py RUN          # RUN: a textfit run folder (BERT-family model)

Three tables, on whatever CPU runs it:
1. The machine's matrix-product rates at the run's own linear shapes (1,600 tokens at a time): oneDNN's
   bf16 linear (the kernel textfit's prediction path calls), oneDNN's int8 linear (VNNI / AMX int8)
   alone, and int8 with the activations quantized per call (dynamic, per tensor), as a real int8 path
   must.
2. Where a prediction pass over SST-2 dev goes (PyTorch's profiler): linear layers, attention, the
   rest; the linear layers' achieved rate against table 1's bf16 rate.
3. An int8 prediction path built from oneDNN's quantized linear (weights int8 per output channel,
   activations uint8 per tensor, bf16 out, GELU and the residual add fused): speed and label agreement
   with fp32 PyTorch on SST-2 dev and 300 IMDb reviews, quantizing every encoder linear or all but the
   feed-forward output (whose inputs carry BERT's outliers). textfit keeps an int8 path only if it is
   faster at >= 99.5% agreement (issue 19); this script is the evidence either way.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from userdata import machine_kind  # noqa: E402


def timed(f, reps: int = 30) -> float:
    for _ in range(5):
        f()
    t = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t) / reps


def int8_weight(w):
    import torch

    w = w.detach().float()
    scale = w.abs().amax(1).clamp(min=1e-8) / 127
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return torch.ops.onednn.qlinear_prepack(q, None), scale, torch.zeros(len(scale), dtype=torch.int32)


def int8_activation(x):
    import torch

    scale = x.abs().amax().float().clamp(min=1e-6) / 127
    return torch.round(x * (1 / scale)).add_(128).to(torch.uint8), float(scale)  # zero point 128


def int8_modules():
    import torch
    from torch import nn

    class Int8Linear(nn.Module):
        def __init__(self, lin):
            super().__init__()
            self.packed, self.ws, self.wz = int8_weight(lin.weight)
            self.bias = lin.bias.float()
            self.gelu = getattr(lin, "activation", "none") == "gelu"

        def forward(self, x):
            qx, xs = int8_activation(x.reshape(-1, x.shape[-1]))
            post, algo = ("gelu", "none") if self.gelu else ("none", "")
            y = torch.ops.onednn.qlinear_pointwise(
                qx, xs, 128, self.packed, self.ws, self.wz, self.bias, 1.0, 0, torch.bfloat16, post, [], algo
            )
            return y.reshape(*x.shape[:-1], -1)

    class Int8Residual(nn.Module):
        def __init__(self, block):
            super().__init__()
            self.packed, self.ws, self.wz = int8_weight(block.weight)
            self.bias, self.LayerNorm = block.bias.float(), block.LayerNorm

        def forward(self, h, residual):
            qx, xs = int8_activation(h.reshape(-1, h.shape[-1]))
            y = torch.ops.onednn.qlinear_pointwise.binary(
                qx,
                xs,
                128,
                self.packed,
                self.ws,
                self.wz,
                residual.reshape(-1, residual.shape[-1]),
                self.bias,
                1.0,
                0,
                torch.bfloat16,
                1.0,
                0,
                "sum",
                1.0,
                "none",
                [],
                "",
            )
            return self.LayerNorm(y.reshape(*h.shape[:-1], -1))

    return Int8Linear, Int8Residual


def to_int8(model, keep_ffn_output: bool) -> None:
    """textfit's bf16 model (accel.enable "infer") with its encoder linears swapped for int8 ones."""
    from textfit.accel.inference import OneDNNLinear, OneDNNResidualOutput

    Int8Linear, Int8Residual = int8_modules()
    for name, m in list(model.named_modules()):
        for child_name, child in list(m.named_children()):
            ffn_output = child_name == "output" and not name.endswith("attention")
            if isinstance(child, OneDNNResidualOutput) and not (keep_ffn_output and ffn_output):
                setattr(m, child_name, Int8Residual(child))
            elif isinstance(child, OneDNNLinear) and ".encoder." in f".{name}.":
                setattr(m, child_name, Int8Linear(child))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a textfit run folder of a BERT-family model")
    a = p.parse_args()

    import pandas as pd
    import torch
    from torch.profiler import ProfilerActivity, profile

    from textfit import Classifier

    print(f"machine: {machine_kind()}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    cfg = Classifier.load(a.run, precision="fp32").backend.model.config
    h, f = cfg.hidden_size, cfg.intermediate_size
    m = 1600
    print(f"\n1. matrix products, {m} tokens x (in -> out)\n")
    print(f"{'shape':<14} {'bf16 ms':>8} {'bf16 TFLOP/s':>12} {'int8 ms':>8} {'int8 TOP/s':>10} {'int8+quant ms':>13}")
    peak = []
    for k, n in ((h, 3 * h), (h, h), (h, f), (f, h)):
        x, w, b = torch.randn(m, k).bfloat16(), (torch.randn(n, k) * 0.05), torch.randn(n)
        wb, bb = w.bfloat16(), b.bfloat16()
        packed, ws, wz = int8_weight(w)
        qx, xs = int8_activation(x)

        def bf16(x=x, wb=wb, bb=bb) -> None:
            torch.ops.mkldnn._linear_pointwise(x, wb, bb, "none", [], "")

        def int8(q=qx, s=xs, w=(packed, ws, wz), b=b, x=None) -> None:
            if x is not None:  # quantize the activations first, as a real int8 path must
                q, s = int8_activation(x)
            torch.ops.onednn.qlinear_pointwise(q, s, 128, *w, b, 1.0, 0, torch.bfloat16, "none", [], "")

        t_bf16, t_int8 = timed(bf16), timed(int8)
        t_quant = timed(lambda x=x, int8=int8: int8(x=x))
        flops = 2 * m * k * n
        peak.append(flops / t_bf16)
        print(
            f"{k}->{n:<8} {t_bf16 * 1e3:>8.2f} {flops / t_bf16 / 1e12:>12.3f} {t_int8 * 1e3:>8.2f} "
            f"{flops / t_int8 / 1e12:>10.3f} {t_quant * 1e3:>13.2f}"
        )

    texts = pd.read_csv(SHARED / "sst2/dev.tsv", sep="\t", quoting=3)["sentence"].astype(str).tolist()
    imdb = pd.read_csv(SHARED / "imdb/IMDB Dataset.csv")["review"].astype(str).tolist()[:300]
    c = Classifier.load(a.run)
    c.predict_proba(texts)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        c.predict_proba(texts)
        wall = time.perf_counter() - t
    self_ms = {e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()}
    linear = sum(v for k, v in self_ms.items() if "linear" in k) / 1e3
    attention = sum(v for k, v in self_ms.items() if "attention" in k or k in ("aten::bmm", "aten::_softmax")) / 1e3
    tokens = sum(len(x) for x in c.tokenizer(texts)["input_ids"])
    layers = cfg.num_hidden_layers
    linear_flops = 2 * tokens * layers * (4 * h * h + 2 * h * f)
    print(f"\n2. one prediction pass over SST-2 dev ({len(texts)} texts, {tokens} tokens before padding), profiled\n")
    print(
        f"wall {wall:.2f} s; linear layers {linear:.2f} s, attention {attention:.2f} s, the rest "
        f"{max(0.0, wall - linear - attention):.2f} s"
    )
    print(
        f"linear layers: {linear_flops / linear / 1e12:.3f} TFLOP/s on real tokens "
        f"({linear_flops / linear / (sum(peak) / len(peak)):.0%} of table 1's bf16 rate; padding not counted)"
    )

    print("\n3. an int8 path (oneDNN quantized linears) against textfit's bf16 default\n")
    ref = Classifier.load(a.run, precision="fp32")
    truth = {"sst2": ref.predict_proba(texts).argmax(-1), "imdb": ref.predict_proba(imdb).argmax(-1)}
    print(f"{'variant':<30} {'data':<5} {'texts/s':>8} {'agree fp32':>10}")
    for variant in ("bf16 (textfit default)", "int8, every encoder linear", "int8, feed-forward output bf16"):
        c = Classifier.load(a.run)
        if variant.startswith("int8"):
            to_int8(c.backend.model, keep_ffn_output="output bf16" in variant)
        for name, data in (("sst2", texts), ("imdb", imdb)):
            c.predict_proba(data[:64])
            seconds = []
            for _ in range(2):
                t = time.perf_counter()
                labels = c.predict_proba(data).argmax(-1)
                seconds.append(time.perf_counter() - t)
            best, agree = min(seconds), float((labels == truth[name]).mean())
            print(f"{variant:<30} {name:<5} {len(data) / best:>8.1f} {100 * agree:>9.2f}%", flush=True)


if __name__ == "__main__":
    main()
