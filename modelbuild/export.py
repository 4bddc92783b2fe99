"""Export `EncoderCTC` to ONNX and make the INT8 variant.

The graph takes `input_features` [batch, n_mels, mel_frames] float32 and `lengths` [batch]
int64 (mel frames per item, even), and returns `log_probs` [batch, frames, vocab] and
`out_lengths` [batch] (encoder frames, 20 ms each). Batch and time axes are dynamic.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
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


@dataclass(frozen=True)
class QuantRecipe:
    """How the INT8 variant is made (chosen by measured CER, see the bundle's config.json).

    ORT's default dynamic quantization also turns the two input convolutions into
    ConvInteger, which drifts badly on Whisper's encoder; MatMul-only per-channel is both
    faster and closer to fp32. The FFN output projections (fc2) see the widest activations
    and are the ones worth keeping in fp32.
    """

    name: str = "matmul-per-channel-keep-fc2"
    per_channel: bool = True
    keep_fc2_fp32: bool = True
    keep_head_fp32: bool = True

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "op_types": ["MatMul"],
            "per_channel": self.per_channel,
            "keep_fc2_fp32": self.keep_fc2_fp32,
            "keep_head_fp32": self.keep_head_fp32,
        }


RECIPES = {
    r.name: r
    for r in (
        QuantRecipe(),
        QuantRecipe("matmul-per-channel", keep_fc2_fp32=False, keep_head_fp32=False),
        QuantRecipe("matmul-per-channel-keep-head", keep_fc2_fp32=False),
    )
}


def _excluded_nodes(model_path: Path, recipe: QuantRecipe) -> list[str]:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    excluded = []
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        if recipe.keep_fc2_fp32 and "/fc2/" in node.name:
            excluded.append(node.name)
        if recipe.keep_head_fp32 and node.name.startswith("/head/"):
            excluded.append(node.name)
    return excluded


def quantize_int8(fp32_path: Path, out_path: Path, recipe: QuantRecipe) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from serve_app.encoder import BATCH_INVARIANT_KEY

    quantize_dynamic(
        str(fp32_path),
        str(out_path),
        op_types_to_quantize=["MatMul"],
        per_channel=recipe.per_channel,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=_excluded_nodes(fp32_path, recipe),
    )
    # Dynamic activation scales are computed per ORT call: tell the runtime not to batch.
    model = onnx.load(str(out_path))
    onnx.helper.set_model_props(model, {BATCH_INVARIANT_KEY: "false", "asr.quant": recipe.name})
    onnx.save(model, str(out_path))
    return out_path
