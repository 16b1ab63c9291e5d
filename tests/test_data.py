"""Loading, column detection, labels, splits, and the one-line errors for bad data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import SHARED, make_rows, run_cli, write_csv
from textfit.config import TrainConfig
from textfit.data import LengthGroupedBatches, load_data
from textfit.errors import UsageError


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**kw)


def test_csv_string_labels_detected_and_split(tmp_path):
    f = write_csv(tmp_path / "r.csv", make_rows(100), header=["review", "sentiment"])
    data_ = load_data(cfg(data=str(f)))
    splits, info = data_.splits, data_.schema
    assert (info.text_column, info.label_column) == ("review", "sentiment")
    assert info.label_names == ["negative", "positive"]
    assert [len(splits[s].texts) for s in ("train", "validation", "test")] == [80, 10, 10]
    for s in ("validation", "test"):  # stratified: both classes in equal numbers
        assert sorted(splits[s].labels) == [0] * 5 + [1] * 5
    rows = [r for s in splits.values() for r in s.rows]
    assert sorted(rows) == list(range(2, 102))  # every file line used exactly once
    # Seeded: the same split again, another seed another split.
    again = load_data(cfg(data=str(f))).splits
    other = load_data(cfg(data=str(f), seed=7)).splits
    assert again["test"].rows == splits["test"].rows != other["test"].rows


def test_tsv_with_quotes_and_bom(tmp_path):
    f = tmp_path / "mrpc.tsv"
    lines = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
    for i, (t, y) in enumerate(make_rows(40)):
        lines.append(f'{int(y == "positive")}\t{i}\t{i + 1}\tHe said " the witness " {t}\tShe said "{t}')
    f.write_bytes(("\ufeff" + "\n".join(lines) + "\n").encode("utf-8"))
    data_ = load_data(cfg(train=str(f), split="50,50,0"))
    splits, info = data_.splits, data_.schema
    assert (info.text_column, info.text_pair_column, info.label_column) == ("#1 String", "#2 String", "Quality")
    assert info.label_names == ["0", "1"]
    assert "test" not in splits
    first = splits["train"].texts + splits["validation"].texts
    assert any('" the witness "' in t for t in first)
    assert all(p.startswith('She said "') for p in splits["train"].pairs)


def test_headerless_csv_detected_with_integer_labels(tmp_path):
    rows = [(1 if y == "positive" else 0, t) for t, y in make_rows(50)]
    f = write_csv(tmp_path / "chn.csv", rows, header=None)
    data_ = load_data(cfg(data=str(f)))
    splits, info = data_.splits, data_.schema
    assert (info.text_column, info.label_column) == ("1", "0")
    assert info.label_names == ["0", "1"]
    # Column indices as flags work the same way.
    info2 = load_data(cfg(data=str(f), text_column="1", label_column="0")).schema
    assert info2.label_names == ["0", "1"]
    assert sum(len(s.texts) for s in splits.values()) == 50


def test_json_jsonl_parquet_and_datasets_folder(tmp_path):
    rows = make_rows(40)
    recs = [{"text": t, "label": y} for t, y in rows]
    (tmp_path / "a.json").write_text(json.dumps(recs))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    pd.DataFrame(recs).to_parquet(tmp_path / "a.parquet")
    import datasets

    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(
                [{"sentence": t, "label": int(y == "positive")} for t, y in rows[:30]],
                features=datasets.Features(
                    {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
                ),
            ),
            "validation": datasets.Dataset.from_list(
                [{"sentence": t, "label": int(y == "positive")} for t, y in rows[30:]],
                features=datasets.Features(
                    {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
                ),
            ),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    for name in ("a.json", "a.jsonl", "a.parquet"):
        data_ = load_data(cfg(data=str(tmp_path / name)))
        splits, info = data_.splits, data_.schema
        assert info.label_names == ["negative", "positive"], name
        assert sum(len(s.texts) for s in splits.values()) == 40
    data_ = load_data(cfg(data=str(tmp_path / "dd")))
    splits, info = data_.splits, data_.schema
    assert info.label_names == ["neg", "pos"]  # ClassLabel names are kept
    assert len(splits["train"].texts) == 30 and len(splits["validation"].texts) == 10 and "test" not in splits


def test_label_names_for_integer_labels(tmp_path):
    f = write_csv(tmp_path / "i.csv", [(t, int(y == "positive")) for t, y in make_rows(40)])
    info = load_data(cfg(data=str(f), label_names="negative,positive")).schema
    assert info.label_names == ["negative", "positive"] and info.label_values == [0, 1]


def test_max_train_samples_is_a_seeded_sample(tmp_path):
    f = write_csv(tmp_path / "r.csv", make_rows(200))
    a = load_data(cfg(data=str(f), max_train_samples=30)).splits
    b = load_data(cfg(data=str(f), max_train_samples=30)).splits
    assert len(a["train"].texts) == 30 and a["train"].rows == b["train"].rows
    assert len(a["validation"].texts) == 20  # held-out parts keep their full size


def test_rare_empty_text_dropped_with_note(tmp_path):
    rows = make_rows(1200)
    rows[5] = ("", "positive")
    f = write_csv(tmp_path / "r.csv", rows)
    data_ = load_data(cfg(data=str(f)))
    splits, info = data_.splits, data_.schema
    assert sum(len(s.texts) for s in splits.values()) == 1199
    assert any("line 7" in n for n in data_.notes)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d: d / "missing.csv", r"missing\.csv: no such file"),
        (lambda d: (d / "a.xlsx").write_text("x") and d / "a.xlsx", r"unsupported format '\.xlsx'"),
        (lambda d: (d / "e.csv").write_text("") or d / "e.csv", r"e\.csv: the file is empty"),
        (lambda d: (d / "h.csv").write_text("text,label\n") and d / "h.csv", r"header but no rows"),
        (
            lambda d: write_csv(d / "l.csv", make_rows(20) + [("fine text", "")] * 2),
            r"l\.csv: 2 rows have no label in column 'label' \(lines 22, 23\)",
        ),
        (
            lambda d: write_csv(d / "t.csv", make_rows(20) + [("  ", "positive")] * 3),
            r"t\.csv: 3 rows have an empty text in column 'text' \(lines 22, 23, 24\)",
        ),
        (
            lambda d: write_csv(d / "s.csv", [(t, "positive") for t, _ in make_rows(20)]),
            r"every training row has the label 'positive'",
        ),
        (
            lambda d: (
                (d / "g.csv").write_bytes("text,label\n酒店很好,1\n房间很差,0\n".encode("gb18030")) and d / "g.csv"
            ),
            r"g\.csv: not valid utf-8 .*--encoding",
        ),
        (
            lambda d: write_csv(d / "c.csv", make_rows(20), header=["body", "y"]),
            r"no label column found among 'body', 'y'; pass --label-column",
        ),
    ],
)
def test_bad_files_give_one_line(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(UsageError, match=match) as e:
        load_data(cfg(data=str(path)))
    assert "\n" not in str(e.value)


def test_unknown_column_lists_columns(tmp_path):
    f = write_csv(tmp_path / "r.csv", make_rows(20))
    with pytest.raises(
        UsageError, match=r"--text-column body: no such column in .*r\.csv; its columns are 'text', 'label'"
    ):
        load_data(cfg(data=str(f), text_column="body"))


def test_unseen_validation_label(tmp_path):
    tr = write_csv(tmp_path / "tr.csv", make_rows(20))
    va = write_csv(tmp_path / "va.csv", make_rows(6) + [("so so", "neutral")])
    with pytest.raises(
        UsageError, match=r"va\.csv: label 'neutral' \(line 8, 1 rows\) never appears in the training data"
    ):
        load_data(cfg(train=str(tr), validation=str(va)))


def test_encoding_flag_reads_other_encodings(tmp_path):
    rows = [(t, y) for t, y in make_rows(40)]
    f = tmp_path / "g.csv"
    f.write_bytes(("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows)).encode("gb18030"))
    splits = load_data(cfg(data=str(f), encoding="gb18030")).splits
    assert any("房间" in t for s in splits.values() for t in s.texts)


def test_length_grouped_batches_cover_everything_in_seeded_order():
    lengths = [((i * 37) % 50) + 1 for i in range(1000)]
    s = LengthGroupedBatches(lengths, batch_size=16, seed=3)
    b1 = s.batches()
    assert sorted(i for b in b1 for i in b) == list(range(1000))
    assert b1 == LengthGroupedBatches(lengths, 16, seed=3).batches()
    s.set_epoch(1)
    assert s.batches() != b1
    # Padding nearly disappears: within-batch length spread is small on average.
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in b1) / len(b1)
    assert spread < 3


def test_batches_share_widths_on_cpu(tmp_path):
    """CPU batches are padded to widths other batches use (fewer oneDNN kernel builds): never
    narrower, at most max(2, width // 32) wider, the same for the same set of widths."""
    from transformers import BertTokenizerFast

    from textfit.data import EncodedDataset, make_collate, shared_widths

    m = shared_widths([20, 19, 18, 17, 16, 3, 200, 195, 190, 14])
    assert m == {200: 200, 195: 200, 190: 190, 20: 20, 19: 20, 18: 20, 17: 17, 16: 17, 14: 14, 3: 3}
    assert shared_widths([14, 3, 20, 19, 18, 17, 16, 190, 195, 200]) == m
    lengths = [((i * 37) % 50) + 1 for i in range(1000)]
    s = LengthGroupedBatches(lengths, batch_size=16, seed=3, share_widths=shared_widths)
    batches = s.batches()
    raw = {max(lengths[i] for i in b) for b in batches}
    assert set(s.widths) == raw and len(set(s.widths.values())) < len(raw)
    assert all(w <= s.widths[w] <= w + max(2, w // 32) for w in raw)
    assert LengthGroupedBatches(lengths, batch_size=16, seed=3).batches() == batches  # same batches, only padded wider
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b"]))
    tok = BertTokenizerFast(str(tmp_path / "vocab.txt"))
    enc = {k: v for k, v in tok(["a b", "a"]).items()}  # 4 and 3 tokens
    batch = make_collate(tok, EncodedDataset(enc, [0, 1]), {4: 6})([0, 1])
    assert batch["input_ids"].shape == (2, 6) and batch["attention_mask"].sum().item() == 7


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not present")
def test_shared_data_sets_load():
    info = load_data(cfg(train=str(SHARED / "sst2/dev.tsv"))).schema
    assert (info.text_column, info.label_column) == ("sentence", "label")
    data_ = load_data(cfg(train=str(SHARED / "mrpc/dev.tsv")))
    splits, info = data_.splits, data_.schema
    assert (info.text_pair_column, info.label_column) == ("#2 String", "Quality")
    assert sum(len(s.texts) for s in splits.values()) == 408
    data_ = load_data(cfg(data=str(SHARED / "chnsenticorp/ChnSentiCorp_htl_all.csv")))
    splits, info = data_.splits, data_.schema
    assert (info.text_column, info.label_column) == ("1", "0")
    assert sum(len(s.texts) for s in splits.values()) == 7765  # one empty review left out


def test_hub_data_set_fails_fast_offline():
    import time

    t = time.time()
    with pytest.raises(
        UsageError, match=r"--data glue mrpc: not a local file or folder, and the hub data set could not be loaded"
    ):
        load_data(cfg(data="glue mrpc"))
    assert time.time() - t < 15


def test_tsv_with_quoted_tabs_and_newlines_is_read_with_quoting(tmp_path):
    """A review export whose quoted fields hold tabs and newlines (pandas' default reader loads it);
    SST-2 and MRPC's stray quotes keep being read quote-free (test_shared_data_sets_load)."""
    import csv as csv_module

    rows = [(t, y) for t, y in make_rows(40)]
    rows[3] = ('a review with\ta tab and\na newline, then "quotes"', rows[3][1])
    path = tmp_path / "export.tsv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv_module.writer(fh, delimiter="\t")
        w.writerow(["text", "label"])
        w.writerows(rows)
    from textfit.data.read import read_table

    frame = read_table(str(path))
    assert frame.df.shape == (40, 2) and frame.df.iloc[3, 0] == rows[3][0]
    splits = load_data(cfg(data=str(path), split="80,20,0")).splits
    assert sum(len(s.texts) for s in splits.values()) == 40


def test_quoting_flag_forces_either_way(tmp_path):
    """--quoting none keeps quotes as characters of the text, even in a CSV; standard reads quoted fields
    of a TSV that auto would read quote-free; eval and predict take the flag too."""
    path = tmp_path / "q.tsv"
    path.write_text('text\tlabel\n"quoted" start\tpos\nplain\tneg\n"a\tb"\tpos\n', encoding="utf-8")
    from textfit.data.read import read_table

    with pytest.raises(
        UsageError, match=r"q.tsv: cannot parse as TSV .*; check the delimiter and quotes, or pass --quoting standard"
    ):
        read_table(str(path), quoting="none")
    assert read_table(str(path), quoting="standard").df.iloc[2, 0] == "a\tb"
    csv_path = tmp_path / "q.csv"
    csv_path.write_text('text,label\n"x" marks,pos\n', encoding="utf-8")
    assert read_table(str(csv_path), quoting="none").df.iloc[0, 0] == '"x" marks'
    assert read_table(str(csv_path)).df.iloc[0, 0] == "x marks"  # a CSV's quotes are quotes, by default
    r = run_cli("train", "--data", str(csv_path), "--quoting", "maybe")
    assert r.returncode == 2 and "--quoting: 'maybe' is not one of auto, none, standard" in r.stderr
    r = run_cli("predict", "runs/none", "--quoting", "maybe", "x")
    assert r.returncode == 2 and "--quoting" in r.stderr


def test_gpu_batches_pad_to_a_few_bucketed_widths():
    """CUDA: every batch width goes to the next multiple of 16 (never past the widest batch), so a pass
    has at most max_length / 16 shapes; the logic is checked here on the CPU."""
    import torch

    from textfit.data import width_plan
    from textfit.data.batching import bucketed_widths, shared_widths

    assert width_plan("cuda") is bucketed_widths and width_plan("mps") is None
    # CPU: shared widths for oneDNN's per-shape bf16 / fp16 kernels; fp32 (MKL) pads each batch to its own
    assert width_plan("cpu", torch.bfloat16) is shared_widths and width_plan("cpu", torch.float16) is shared_widths
    assert width_plan("cpu") is None
    lengths = [((i * 37) % 250) + 1 for i in range(4000)]
    s = LengthGroupedBatches(lengths, batch_size=16, seed=1, share_widths=bucketed_widths)
    raw = {max(lengths[i] for i in b) for b in s.batches()}
    assert set(s.widths) == raw
    assert all(w <= s.widths[w] < w + 16 and (s.widths[w] % 16 == 0 or s.widths[w] == max(raw)) for w in raw)
    assert len(set(s.widths.values())) <= -(-max(raw) // 16)
    assert bucketed_widths([250, 3]) == {3: 16, 250: 250}  # 256 would pass the widest batch


def test_prediction_batches_run_one_fixed_set_of_shapes():
    """CPU prediction pads each batch to a rung of one fixed ladder and gives it as many rows as its width
    allows, the last short batch of a pass included: two chunks of one file run the same shapes, so a streamed
    prediction stops meeting new ones (kernel state, memory), and every text is predicted once."""
    from textfit.data.batching import ladder_batches, ladder_width

    assert [ladder_width(w) for w in (1, 2, 3, 39, 40, 41, 46, 100, 256)] == [2, 2, 4, 40, 40, 45, 50, 109, 275]
    assert all(w <= ladder_width(w) <= w + max(2, w // 8) for w in range(1, 600))
    assert len({ladder_width(w) for w in range(41, 257)}) == 17  # coarse above 40 tokens: few rungs to meet
    rng = np.random.default_rng(0)
    shapes = []
    for chunk in (rng.integers(3, 70, 5003), rng.integers(3, 70, 4871)):
        planned = ladder_batches(chunk, 64, 1024, limit=512)
        ix = np.concatenate([b for b, _, _ in planned])
        assert sorted(ix.tolist()) == list(range(len(chunk)))
        assert all(rows == min(64, 1024 // w) and len(b) <= rows for b, rows, w in planned)
        assert all(max(chunk[b]) <= w == ladder_width(max(chunk[b])) for b, _, w in planned)
        shapes.append({(rows, w) for _, rows, w in planned})
    assert shapes[0] == shapes[1]
    # a sparse long tail (3 texts of 66 tokens among thousands of at most 48): those run as a quarter-sized batch, and
    # every full batch has the width a chunk without them would give it, whichever chunk the tail turns up in
    short = rng.integers(3, 49, 5000)
    plain, tailed = (ladder_batches(c, 64, 8192, limit=512) for c in (short, np.concatenate([short, [66, 66, 66]])))
    assert tailed[0][1:] == (16, 70) and set(tailed[0][0]) >= {5000, 5001, 5002}
    assert {(r, w) for _, r, w in tailed if r == 64} == {(r, w) for _, r, w in plain if r == 64}
    (b, rows, w), = ladder_batches(np.array([5, 9, 7]), 64, 1024, limit=512)  # one short pass: its own rows
    assert rows == 3 and w == 10 and ladder_batches(np.array([600]), 64, 1024, limit=512)[0][2] == 600
