"""The INT8 variant of a bundle's encoder: recipes and the one function that applies them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelbuild.rowquant import quantize_rows


@dataclass(frozen=True)
class QuantRecipe:
    """How the INT8 variant is made (chosen by measured CER, see the bundle's config.json).

    ORT's default dynamic quantization also turns the two input convolutions into
    ConvInteger, which drifts badly on Whisper's encoder; MatMul-only per-channel is both
    faster and closer to fp32. With one activation scale per tensor, the FFN output
    projections (fc2, the widest activations) are the ones worth keeping in fp32; with one
    scale per frame (modelbuild/rowquant.py) every MatMul can be INT8 for ~0.1-0.2 CER points
    on the dev split, and the graph batches.
    """

    name: str = "matmul-per-frame"
    per_channel: bool = True
    keep_fc2_fp32: bool = False
    keep_head_fp32: bool = False
    # "frame": modelbuild/rowquant.py, one scale per frame (batches like fp32);
    # "tensor": ORT's quantize_dynamic, one scale per call (runs one window per call).
    activation_scale: str = "frame"

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "op_types": ["MatMul"],
            "per_channel": self.per_channel,
            "activation_scale": self.activation_scale,
            "keep_fc2_fp32": self.keep_fc2_fp32,
            "keep_head_fp32": self.keep_head_fp32,
        }


RECIPES = {
    r.name: r
    for r in (
        QuantRecipe(),
        QuantRecipe("matmul-per-frame-keep-fc2", keep_fc2_fp32=True, keep_head_fp32=True),
        QuantRecipe(
            "matmul-per-channel-keep-fc2",
            keep_fc2_fp32=True,
            keep_head_fp32=True,
            activation_scale="tensor",
        ),
        QuantRecipe("matmul-per-channel", activation_scale="tensor"),
        QuantRecipe("matmul-per-channel-keep-head", keep_head_fp32=True, activation_scale="tensor"),
    )
}
DEFAULT_QUANT_RECIPE = QuantRecipe().name


def excluded_nodes(model_path: Path, recipe: QuantRecipe) -> list[str]:
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

    excluded = excluded_nodes(fp32_path, recipe)
    if recipe.activation_scale == "frame":
        quantize_rows(fp32_path, out_path, excluded)
    else:
        quantize_dynamic(
            str(fp32_path),
            str(out_path),
            op_types_to_quantize=["MatMul"],
            per_channel=recipe.per_channel,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
        )
    # Scales computed per ORT call ("tensor") depend on batch-mates: the runtime won't batch.
    invariant = "true" if recipe.activation_scale == "frame" else "false"
    model = onnx.load(str(out_path))
    onnx.helper.set_model_props(model, {BATCH_INVARIANT_KEY: invariant, "asr.quant": recipe.name})
    onnx.save(model, str(out_path))
    return out_path
