"""ONNX files made from a run's export for CPUs without bf16: ONNX Runtime's transformer optimizer and
static int8 calibrated on the run's own texts.

    build_optimized("runs/x/onnx/model.onnx", "runs/x/onnx/model.opt.onnx", manifest)
    build_static_int8("runs/x/onnx/model.onnx", "runs/x/onnx/model.int8-static.onnx", clf, texts)

Both are ONNX Runtime's own tools (`onnxruntime.transformers.optimizer.optimize_model`,
`onnxruntime.quantization.quantize_static` with a calibration reader); the QDQ file they write runs on
ONNX Runtime and on OpenVINO, which reads the Q/DQ pairs as int8 products.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .data.batching import length_sorted_batches, pad
from .data.tokens import encode_long


def build_optimized(src: str | Path, dst: str | Path, manifest: Any) -> dict[str, int]:
    """The export with ONNX Runtime's BERT fusions (attention, skip layer norm, bias GELU); returns what was fused."""
    from onnxruntime.transformers import optimizer
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(Path(src).parent))
    heads = getattr(config, "num_attention_heads", getattr(config, "n_heads", 0))
    hidden = getattr(config, "hidden_size", getattr(config, "dim", 0))
    opt = optimizer.optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0)
    opt.save_model_to_file(str(dst))
    return {k: v for k, v in opt.get_fused_operator_statistics().items() if v}


def calibration_batches(clf: Any, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32) -> list[dict]:
    """The texts as the export's inputs, tokenized and padded as prediction does them (numpy int64)."""
    m = clf.manifest
    enc, _ = encode_long(clf.tokenizer, list(texts), None if pairs is None else list(pairs), m.max_length, m.long_text)
    lengths = np.array([len(x) for x in enc["input_ids"]])
    out = []
    for ix in length_sorted_batches(lengths, batch_size, None):
        batch = pad(clf.tokenizer, enc, ix, None)
        out.append({k: v.numpy().astype(np.int64) for k, v in batch.items()})
    return out


def build_static_int8(src: str | Path, dst: str | Path, clf: Any, texts: list[str], pairs: list[str] | None = None) -> None:
    """Static int8 (QDQ): the matrix products' weights per channel and their inputs per tensor, with
    activation ranges from the run's own `texts` (ONNX Runtime's calibration, percentile of the range)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static

    names = {i.name for i in onnx.load(str(src), load_external_data=False).graph.input}
    batches = [{k: v for k, v in b.items() if k in names} for b in calibration_batches(clf, texts, pairs)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict | None:
            return next(self.it, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's advice to pre-process, printed on every call
    try:
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        root.setLevel(level)
