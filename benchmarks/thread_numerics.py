"""Which operators of a training step give other bits on 1 thread than on the current count (issue 32).

    python benchmarks/thread_numerics.py          # fp32, the packaged MiniLM, 32 SST-2 sentences
    python benchmarks/thread_numerics.py bf16     # under bf16 autocast

Every ATen call of one forward and backward pass is run a second time on 1 thread with the same inputs and
random state (a TorchDispatchMode), and the two outputs are compared bit for bit. Prints, per operator, its
calls, how many gave other bits, and the largest difference. (empty_like differs by construction: it
returns uninitialised memory.) Needs 2 threads or more; numbers only, no timing.
"""

import collections
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from textfit.hub import default_model_path

N = torch.get_num_threads()
bf16 = "bf16" in sys.argv
path = default_model_path()
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
model.train()
texts = [
    line.split("\t")[0]
    for line in open(Path(__file__).resolve().parents[2] / "shared/data/sst2/train.tsv").read().splitlines()[1:33]
]
batch = tok(texts, padding=True, return_tensors="pt")
labels = torch.tensor([i % 2 for i in range(32)])

stats = collections.Counter()
diff = collections.Counter()
maxd = {}


class Probe(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        state = torch.get_rng_state()
        out = func(*args, **kwargs)
        after = torch.get_rng_state()
        name = str(func.overloadpacket)
        if name.startswith("aten.") and not name.endswith("_") and "copy" not in name:
            torch.set_num_threads(1)
            torch.set_rng_state(state)
            try:
                out1 = func(*args, **kwargs)
            finally:
                torch.set_num_threads(N)
                torch.set_rng_state(after)
            a = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            b = [t for t in tree_flatten(out1)[0] if isinstance(t, torch.Tensor)]
            stats[name] += 1
            for x, y in zip(a, b):
                if x.is_floating_point() and not torch.equal(x, y):
                    diff[name] += 1
                    maxd[name] = max(maxd.get(name, 0), (x.float() - y.float()).abs().max().item())
                    break
        return out


ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
with Probe():
    with ctx:
        loss = model(**batch, labels=labels).loss
    loss.backward()
print(f"threads {N} vs 1, {'bf16 autocast' if bf16 else 'fp32'}, batch {tuple(batch['input_ids'].shape)}")
for name, n in sorted(stats.items(), key=lambda kv: -diff[kv[0]]):
    print(f"{name:40s} calls {n:4d} differ {diff[name]:4d} max|d| {maxd.get(name, 0):.3g}")
