"""--student static: a classifier made of token vectors and a small head, for the largest tables.

    textfit distill runs/sst2 --student static --data sst2.tsv --unlabeled more.csv --output runs/sst2-static
    textfit train --student static --data sst2.tsv --output runs/sst2-static-labels   # no teacher: labels only

The body is one vector per token of the vocabulary: model2vec's distillation (`distill_from_model`: every
token alone through the encoder, mean-pooled, PCA to 256 dimensions, SIF weights) run on the teacher's own
fine-tuned encoder (or, in `train`, on the packaged MiniLM). A text's features are the mean and the maximum
of its tokens' vectors, the mean of its neighbouring token pairs' vectors (hashed bigrams, as fastText's: "not
bad") and the maximum over its tokens of a learned window over each token and its two neighbours (a width-3
convolution, Kim 2014's sentence CNN: "not very good"); a one-hidden-layer head turns them into logits. Everything
trains in textfit's one loop (the distillation loss, early stopping on validation, calibration,
checkpoints), and the vectors train with the head.

The run folder holds the body in model2vec's format (RUN/static: `StaticModel.from_pretrained` loads it,
its own tokenizer and the trained vectors) and the head in RUN/head.safetensors, with the map from the
body's token ids to the run tokenizer's (the teacher's, at the run root); no pickles. Prediction needs
only torch and safetensors.

Why not model2vec's own classifier: `StaticModelForClassification.fit` learns from hard labels only (no
teacher probabilities) and pools by the mean alone; measured on SST-2 with the same distilled vectors and
the teacher's probabilities on its 67k training texts, mean pooling reached GLUE dev accuracy 0.81, mean
and max 0.83, frozen vectors 0.78 (benchmarks/RESULTS.md). The head here is a dozen lines of torch; the
distillation of the vectors is model2vec's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from textfit.errors import UsageError

NAME = "static"  # --student static / --model static
BODY = "static"  # RUN/static: the body, in model2vec's format
HEAD = "head.safetensors"
HIDDEN = 512
PCA_DIMS = 256
# Word order, as far as a bag can see it: a vector per hashed pair of neighbouring tokens ("not bad"),
# mean-pooled beside the token vectors (measured on SST-2: benchmarks/RESULTS.md). 2**18 buckets of 64.
BIGRAM_BUCKETS = 2**18
BIGRAM_DIM = 64
_HASH = 1_000_003  # pair (a, b) -> (a * _HASH + b) % buckets; token ids stay far below 2**40
# Word order beyond pairs: a learned window over each token and its two neighbours (a width-3 convolution of the
# token vectors, ReLU, the maximum over the text), this many channels beside the bag's features. SST-2 GLUE dev,
# distilled from a MiniLM teacher (0.892): 0.858 over 4 seeds against 0.831 for the bag alone; 512 channels no
# better; predicting 200,000 texts takes 12.6 s against 10.1 s (benchmarks/RESULTS.md, AMD EPYC Zen 4).
CONV = 256
EPOCHS = 4  # --epochs' default for a static student: 4 passes over SST-2's 53,879 rows in 50 s, 0.852 with 2
TRAIN_BATCH = 256  # --batch-size's default for a static student (16 for a transformer)
LEARNING_RATE = 1e-3  # the vectors and head learn at this rate unless --learning-rate says otherwise
BATCH = 1024  # texts per batch when a static run predicts through the padded path (--long-text window, ...)
FAST_CHUNK = 8192  # texts per tokenizer call and forward pass on the fast path
NO_EXPLANATIONS = (
    "a static student has no word explanations (integrated gradients run at a transformer's word-embedding layer); "
    "explain its teacher's predictions instead"
)
NO_EXPORT = (  # follows "RUN is "
    "a static student: ONNX export is not offered (model2vec's ONNX path exports the vectors, not the head); its "
    "body is in model2vec's format in static/, and PyTorch predicts it at its full speed"
)
TORCH_ONLY = "a static student: token vectors and a small head"  # why --backend auto keeps PyTorch fp32


def is_static(model: Any) -> bool:
    return isinstance(model, StaticStudent)


def is_static_run(folder: str | Path) -> bool:
    return (Path(folder) / HEAD).is_file() and (Path(folder) / BODY).is_dir()


class StaticStudent(nn.Module):
    """Token vectors (indexed by the run tokenizer's ids) and a head over their mean and maximum, and over the
    mean of the vectors of neighbouring token pairs (hashed into `bigram_buckets`; none in a run saved before
    they were added, whose config does not name them)."""

    def __init__(self, vectors: torch.Tensor, keep: torch.Tensor, config: Any, hidden: int = HIDDEN):
        super().__init__()
        dim = vectors.shape[1]
        self.config = config
        self.embeddings = nn.Embedding.from_pretrained(vectors.float().clone(), freeze=False)
        spec = getattr(config, "textfit_static", None) or {}
        self.bigram_buckets, bigram_dim = int(spec.get("bigram_buckets", 0)), int(spec.get("bigram_dim", 0))
        self.bigrams = None
        if self.bigram_buckets:
            self.bigrams = nn.Embedding(self.bigram_buckets, bigram_dim)
            nn.init.normal_(self.bigrams.weight, std=0.01)  # from the run's seed, like the head
        self.conv = nn.Linear(3 * dim, int(spec["conv"])) if spec.get("conv") else None
        self._table: tuple[tuple[int, ...], torch.Tensor] | None = None  # prediction's window table (`windows`)
        width = 2 * dim + (bigram_dim if self.bigram_buckets else 0) + (int(spec.get("conv") or 0))
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, config.num_labels))
        self.register_buffer("keep", keep.bool().clone(), persistent=False)  # False: special tokens, no vector
        self.body: dict[str, Any] = {}  # what saving the body in model2vec's format needs (training only)

    def train(self, mode: bool = True) -> StaticStudent:
        self._table = None
        return super().train(mode)

    def keep_ids(self) -> torch.Tensor:
        return cast(torch.Tensor, self.keep)  # a registered buffer

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        keep = self.keep_ids()[input_ids]
        if attention_mask is not None:
            keep = keep & attention_mask.bool()
        counts = keep.sum(1)
        offsets = torch.cumsum(counts, 0) - counts
        return SequenceClassifierOutput(logits=self.bags(input_ids[keep], offsets))

    def bags(self, flat: torch.Tensor, offsets: torch.Tensor, table: bool = False) -> torch.Tensor:
        """Logits of texts given as their tokens one after another (`offsets`: where each text starts):
        the mean and the maximum of their vectors (zeros for a text with no tokens), their bigrams' mean and
        their windows' maximum (`windows`; `table`: through prediction's table), through the head."""
        w, n = self.embeddings.weight, len(flat)
        feats = [F.embedding_bag(flat, w, offsets, mode="mean"), F.embedding_bag(flat, w, offsets, mode="max")]
        first = torch.zeros(n, dtype=torch.bool, device=flat.device)
        first[offsets[offsets < n]] = True  # a text's first token: no left neighbour of its own text
        if self.bigrams is not None:
            counts = torch.diff(offsets, append=torch.tensor([n], device=offsets.device))
            pairs = ((flat[:-1] * _HASH + flat[1:]) % self.bigram_buckets)[~first[1:]]  # neighbours within one text
            per_text = (counts - 1).clamp(min=0)
            feats.append(F.embedding_bag(pairs, self.bigrams.weight, torch.cumsum(per_text, 0) - per_text, mode="mean"))
        if self.conv is not None:
            feats.append(self.windows(flat, offsets, first, table))
        return self.head(torch.cat(feats, -1))

    def windows(self, flat: torch.Tensor, offsets: torch.Tensor, first: torch.Tensor, table: bool) -> torch.Tensor:
        """The maximum over each text of ReLU(W [left; token; right] + b) at each of its tokens: a convolution
        of width 3 on the flat tokens, a neighbour across a text's edge taken as zeros. Computed as three
        products of the vectors with W's thirds, shifted (no tokens x 3 dim copy); with `table` (prediction),
        from each vocabulary token's three products made once (`_window_table`), a sum of three rows a token.
        `first`: True at each text's first token (`bags`)."""
        assert self.conv is not None
        n = len(flat)
        if table:
            t = self._window_table()
            vocab, none = len(self.embeddings.weight), len(t) - 1
            last = torch.roll(first, -1)  # and the token before a text's first has no right one
            left = torch.where(first, none, torch.roll(flat, 1) + vocab)
            right = torch.where(last, none, torch.roll(flat, -1) + 2 * vocab)
            h = F.embedding_bag(torch.stack([flat, left, right], 1), t, mode="sum").relu_()
        else:
            x = self.embeddings.weight[flat]
            dim = x.shape[1]
            w = self.conv.weight
            h = F.linear(x, w[:, dim : 2 * dim], self.conv.bias)
            if n > 1:
                inner = (~first[1:]).unsqueeze(1).to(x.dtype)  # token i+1 and token i are in one text
                h = h + F.pad(F.linear(x[:-1], w[:, :dim]) * inner, (0, 0, 1, 0))  # token i is i+1's left
                h = h + F.pad(F.linear(x[1:], w[:, 2 * dim :]) * inner, (0, 0, 0, 1))  # token i+1 is i's right
            h = F.relu(h)
        return F.embedding_bag(torch.arange(n, device=flat.device), h, offsets, mode="max")

    def _window_table(self) -> torch.Tensor:
        """Rows [0, V): W_token e + b for each of the V token vectors e; [V, 2V): W_left e; [2V, 3V): W_right e;
        row 3V: zeros (no neighbour). Made again whenever the vectors or W have changed (an optimizer's step or
        `load_state_dict` moves their version; a write through `.data` does not, so `train()` and `eval()`
        drop the table as well)."""
        assert self.conv is not None
        e, w, b = self.embeddings.weight, self.conv.weight, self.conv.bias
        key = (e._version, w._version, b._version, e.data_ptr(), w.data_ptr(), b.data_ptr())
        if self._table is None or self._table[0] != key:
            dim = e.shape[1]
            with torch.inference_mode(False), torch.no_grad():  # an ordinary tensor, whatever mode called
                parts = [F.linear(e, w[:, dim : 2 * dim], b), F.linear(e, w[:, :dim]), F.linear(e, w[:, 2 * dim :])]
                self._table = (key, torch.cat([*parts, e.new_zeros(1, w.shape[0])]))
        return self._table[1]

    def predict_ids(self, ids: list[list[int]]) -> torch.Tensor:
        """Logits of token-id lists (no padding, no mask: the fast path of a static run's prediction)."""
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        flat = torch.from_numpy(np.fromiter((t for x in ids for t in x), dtype=np.int64, count=int(lengths.sum())))
        keep = self.keep_ids()[flat]
        counts = torch.zeros(len(ids), dtype=torch.long).index_add_(
            0, torch.repeat_interleave(torch.arange(len(ids)), torch.from_numpy(lengths)), keep.long()
        )
        return self.bags(flat[keep], torch.cumsum(counts, 0) - counts, table=not torch.is_grad_enabled())

    def save_pretrained(self, folder: str | Path, **_: Any) -> None:
        """RUN/static in model2vec's format (the trained vectors), RUN/head.safetensors, RUN/config.json."""
        from model2vec import StaticModel
        from safetensors.torch import save_file
        from tokenizers import Tokenizer

        folder = Path(folder)
        ids = torch.as_tensor(self.body["hf_ids"])  # body token id -> run tokenizer id
        vectors = self.embeddings.weight.detach().float().cpu()[ids].numpy()
        StaticModel(
            vectors=vectors,
            tokenizer=Tokenizer.from_str(self.body["tokenizer"]),
            config=self.body["config"],
            normalize=True,
            base_model_name=self.body["base"],
        ).save_pretrained(str(folder / BODY))
        head = {f"head.{k}": v.detach().float().cpu().contiguous() for k, v in self.head.state_dict().items()}
        if self.conv is not None:
            head |= {f"conv.{k}": v.detach().float().cpu().contiguous() for k, v in self.conv.state_dict().items()}
        if self.bigrams is not None:
            head["bigrams.weight"] = self.bigrams.weight.detach().float().cpu().contiguous()
        save_file({**head, "hf_ids": ids.contiguous()}, str(folder / HEAD), metadata={"format": "textfit-static"})
        self.config.save_pretrained(str(folder))


def student_config(
    label_names: list[str],
    task: str,
    hidden: int,
    dim: int,
    bigrams: int = BIGRAM_BUCKETS,
    bigram_dim: int = BIGRAM_DIM,
    conv: int | None = None,
) -> Any:
    from transformers import PretrainedConfig

    make: Any = PretrainedConfig  # its keyword arguments are the config's attributes, which mypy cannot see
    return make(
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)},
        problem_type="multi_label_classification" if task == "multi-label" else "single_label_classification",
        architectures=["TextfitStaticStudent"],
        textfit_static={
            "hidden": hidden,
            "dim": dim,
            "pooling": ("mean+max+bigrams" if bigrams else "mean+max") + ("+windows" if conv else ""),
            "bigram_buckets": bigrams,
            "bigram_dim": bigram_dim if bigrams else 0,
            "conv": conv,
            "body": BODY,
            "head": HEAD,
        },
    )


def student(body: torch.Tensor, hf_ids: torch.Tensor, tokenizer: Any, config: Any, hidden: int) -> StaticStudent:
    """A student whose vectors are the body's (row i: the body's token i) at the run tokenizer's ids `hf_ids`;
    the tokenizer's other ids and its special tokens have no vector and are skipped."""
    size = max(len(tokenizer), int(hf_ids.max()) + 1)
    vectors = torch.zeros(size, body.shape[1])
    vectors[hf_ids] = body
    keep = torch.zeros(size, dtype=torch.bool)
    keep[hf_ids] = True
    keep[torch.tensor(tokenizer.all_special_ids, dtype=torch.long)] = False
    return StaticStudent(vectors, keep, config, hidden)


def load(folder: str | Path) -> tuple[StaticStudent, Any]:
    """A static run's model (evaluation mode) and tokenizer: safetensors and the run's tokenizer only."""
    from safetensors import safe_open
    from transformers import AutoTokenizer, PretrainedConfig

    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    try:
        config = PretrainedConfig.from_pretrained(str(folder))
        with safe_open(str(folder / BODY / "model.safetensors"), "pt") as f:
            body = f.get_tensor("embeddings").float()
        with safe_open(str(folder / HEAD), "pt") as f:
            head = {k[len("head.") :]: f.get_tensor(k) for k in f.keys() if k.startswith("head.")}  # noqa: SIM118
            conv = {k[len("conv.") :]: f.get_tensor(k) for k in f.keys() if k.startswith("conv.")}  # noqa: SIM118
            hf_ids = f.get_tensor("hf_ids").long()
            bigrams = f.get_tensor("bigrams.weight") if "bigrams.weight" in f.keys() else None  # noqa: SIM118
    except (OSError, KeyError, ValueError) as e:
        raise UsageError(f"{folder}: the static student's files cannot be read ({e}); retrain the run") from None
    model = student(body, hf_ids, tokenizer, config, int(config.textfit_static["hidden"]))
    model.head.load_state_dict(head)
    if (model.conv is None) != (not conv):
        raise UsageError(f"{folder}: the static student's config and its {HEAD} disagree on windows; retrain the run")
    if model.conv is not None:
        model.conv.load_state_dict(conv)
    if (bigrams is None) != (model.bigrams is None):
        raise UsageError(f"{folder}: the static student's config and its {HEAD} disagree on bigrams; retrain the run")
    if model.bigrams is not None and bigrams is not None:
        if bigrams.shape != model.bigrams.weight.shape:
            raise UsageError(f"{folder}: the static student's bigram vectors have the wrong shape; retrain the run")
        model.bigrams.weight.data.copy_(bigrams)
    return model.eval(), tokenizer


def fast_logits(model: Any, tokenizer: Any, texts: list[str], max_length: int) -> np.ndarray:
    """A static run's logits for single texts cut at the head (as training cut them): the Rust tokenizer's
    ids without special tokens or offsets, no padding, in chunks of texts through `predict_ids`."""
    from textfit.data.tokens import special_counts

    before, after = special_counts(tokenizer)
    budget = max_length - before - after
    rust = tokenizer.backend_tokenizer
    rust.no_truncation()
    rust.no_padding()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), FAST_CHUNK):
            ids = [e.ids[:budget] for e in rust.encode_batch_fast(texts[i : i + FAST_CHUNK], add_special_tokens=False)]
            out.append(model.predict_ids(ids).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.num_labels), dtype=np.float32)


def summary(model: StaticStudent, tokenizer: Any, texts: list[str], max_length: int, body: str) -> dict[str, Any]:
    """textfit.json's `static`: the vectors, the pooling, and the texts a second on the fast path (one
    pass over up to 20,000 of the given texts, as `textfit predict` runs them)."""
    import time

    cfg = model.config.textfit_static
    sample = texts[:20_000]
    t = time.perf_counter()
    fast_logits(model.eval(), tokenizer, sample, max_length)
    seconds = time.perf_counter() - t
    return {
        "dim": cfg["dim"],
        "hidden": cfg["hidden"],
        "pooling": cfg["pooling"],
        "bigram_buckets": cfg.get("bigram_buckets", 0),
        "conv": cfg.get("conv") or 0,
        "vectors_from": body,
        "texts_per_second": round(len(sample) / seconds, 1) if sample and seconds > 0 else None,
        "measured_on": f"{len(sample)} texts, {torch.get_num_threads()} threads, in-process",
    }
