"""Shared fixtures: a tiny random BERT built here, and small data files written per test."""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GOOD = ["good", "great", "wonderful", "lovely", "excellent", "好", "棒"]
BAD = ["bad", "awful", "terrible", "boring", "poor", "差", "烂"]
FILLER = ["the", "film", "hotel", "room", "was", "very", "food", "staff", "房间", "服务", "酒店", "and", "plot"]


def make_rows(
    n: int = 60, seed: int = 0, labels: tuple[str, str] = ("negative", "positive"), chinese: bool = True
) -> list[tuple[str, str]]:
    """Sentences whose label is set by one sentiment word, so a tiny model can learn them."""
    rng = random.Random(seed)
    keep = (lambda w: True) if chinese else (lambda w: w.isascii())
    filler, good, bad = ([w for w in ws if keep(w)] for ws in (FILLER, GOOD, BAD))
    rows = []
    for i in range(n):
        y = i % 2
        words = rng.sample(filler, rng.randint(3, 8)) + [rng.choice(good if y else bad)]
        rng.shuffle(words)
        rows.append((" ".join(words), labels[y]))
    return rows


def write_csv(path: Path, rows: list, header: list[str] | None = ("text", "label"), delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def build_tiny_bert(folder: Path) -> str:
    """A 2-layer random BERT with a WordPiece vocabulary trained on the test rows."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    corpus = [t for t, _ in make_rows(400)] + GOOD + BAD + FILLER + ["premise hypothesis same different"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return str(folder)


def run_cli(
    *args: str, stdin: str | None = None, cwd: Path | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "textfit", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
    )
