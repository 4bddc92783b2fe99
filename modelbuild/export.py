"""Export `EncoderCTC` to ONNX (the INT8 variant is made from it by modelbuild/quant.py).

The graph takes `input_features` [batch, n_mels, mel_frames] float32 and `lengths` [batch]
int64 (mel frames per item, even), and returns `log_probs` [batch, frames, vocab] and
`out_lengths` [batch] (encoder frames, 20 ms each). Batch and time axes are dynamic.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from modelbuild.model import EncoderCTC

OPSET = 17
EXAMPLE_MEL_FRAMES = 1000  # 10 s; any even length <= 3000 works after export


def export_onnx(model: EncoderCTC, path: Path) -> Path:
    model = model.eval()
    n_mels = model.encoder.dims.n_mels
    features = torch.zeros(2, n_mels, EXAMPLE_MEL_FRAMES)
    lengths = torch.tensor([EXAMPLE_MEL_FRAMES, EXAMPLE_MEL_FRAMES // 2])
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter handles the length-dependent slicing and masks in one
        # pass, without onnxscript's dynamo rewrites; torch marks it deprecated.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (features, lengths),
            str(path),
            input_names=["input_features", "lengths"],
            output_names=["log_probs", "out_lengths"],
            dynamic_axes={
                "input_features": {0: "batch", 2: "mel_frames"},
                "lengths": {0: "batch"},
                "log_probs": {0: "batch", 1: "frames"},
                "out_lengths": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    return path
