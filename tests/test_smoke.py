"""The real pretrained encoder (the packaged all-MiniLM-L6-v2) on real SST-2 rows."""

from __future__ import annotations

import pytest

from conftest import SHARED
from textfit import Classifier, TrainConfig, train


@pytest.mark.skipif(not (SHARED / "sst2").exists(), reason="../shared/data not present")
def test_packaged_model_fine_tunes_on_sst2(tmp_path):
    import pandas as pd
    from transformers import pipeline

    dev = pd.read_csv(SHARED / "sst2/dev.tsv", sep="\t", quoting=3)
    dev.iloc[:48].to_csv(tmp_path / "val.tsv", sep="\t", index=False)
    r = train(
        TrainConfig(
            train=str(SHARED / "sst2/train.tsv"),
            validation=str(tmp_path / "val.tsv"),
            max_train_samples=64,
            method="finetune",  # the loop's 4 steps (--method auto would run the contrastive method on 64 rows)
            epochs=1,
            batch_size=16,
            label_names="negative,positive",
            output=str(tmp_path / "run"),
        )
    )
    m = r["metrics"]["validation"]
    assert m["n"] == 48 and 0 <= m["accuracy"] <= 1 and r["steps"] == 4
    texts = ["a gripping , beautifully acted film", "a dull , lifeless mess"]
    ours = Classifier.load(r["folder"], precision="fp32").predict(texts)
    theirs = pipeline("text-classification", model=r["folder"], device="cpu")(texts)
    assert [p.label for p in ours] == [t["label"] for t in theirs]
    assert {p.label for p in ours} <= {"negative", "positive"}
