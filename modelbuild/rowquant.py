"""INT8 MatMuls with one activation scale per frame: results that do not depend on batch-mates.

ONNX Runtime's dynamic quantization (`quantize_dynamic`) picks one uint8 scale and zero
point for a MatMul's whole input tensor, so a window batched with a louder window is
quantized more coarsely than alone, and the encoder had to run such graphs one window per
call. Here each row of a MatMul's input (one frame of one window) gets its own scale:

    q_x = round(x / s_x) + 128,   s_x = max|x_row| / 127          (uint8, per row)
    q_W = round(W / s_W),         s_W = max|W_col| / 127          (int8, per column)
    x @ W ~ s_x * s_W * ((q_x - 128) @ q_W)

The integer product and the column scales are one ONNX Runtime `MatMulIntegerToFloat`
(com.microsoft; the same u8 x s8 kernels as dynamic quantization, with the zero point and
`s_W` applied in the GEMM's epilogue); the row scale is one `Mul` after it. Nothing mixes
rows, and integer accumulation is exact, so a frame's output is bit-identical whatever its
window is batched or padded with. Symmetric per-row scales are also finer than one scale
per tensor: the graph lands closer to fp32 than `quantize_dynamic`'s (measured in the
bundle's config.json and modelbuild/README).

MatMuls that share an input (the q/k/v projections) share its quantization.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

ZERO_POINT = 128  # uint8 zero point of the symmetric int8 range [-127, 127] shifted up


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-column int8: (q_W [K, N] int8, s_W [N] float32)."""
    w = w.astype(np.float64)
    scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def quantize_rows(fp32_path: Path, out_path: Path, nodes_to_exclude: Iterable[str] = ()) -> Path:
    """Rewrite every MatMul of `fp32_path` whose second input is a 2-D float initializer (and
    whose name is not excluded) as a per-row-quantized INT8 product; write `out_path`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(fp32_path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    skip = set(nodes_to_exclude)
    targets: dict[str, list[onnx.NodeProto]] = defaultdict(list)  # input -> MatMuls, in order
    for node in graph.node:
        if node.op_type != "MatMul" or node.name in skip:
            continue
        weight = inits.get(node.input[1])
        if weight is None or len(weight.dims) != 2 or weight.data_type != TensorProto.FLOAT:
            continue
        targets[node.input[0]].append(node)
    if not targets:
        raise ValueError(f"{fp32_path}: no MatMul with a 2-D float weight to quantize")

    new_inits: list[onnx.TensorProto] = []

    def const(name: str, value: np.ndarray) -> str:
        new_inits.append(numpy_helper.from_array(value, name))
        return name

    one = const("rowq/one", np.array(1.0, np.float32))
    levels = const("rowq/127", np.array(127.0, np.float32))
    tiny = const("rowq/tiny", np.array(1e-30, np.float32))
    zero_point = const("rowq/zero_point", np.array(ZERO_POINT, np.uint8))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    axes = const("rowq/axes", np.array([-1], np.int64)) if opset >= 18 else ""

    replaced: dict[str, list[onnx.NodeProto]] = {}  # MatMul name -> nodes replacing it
    for k, (x, nodes) in enumerate(targets.items()):
        p = f"rowq/{k}"

        def reduce(op: str, out: str, x: str = x) -> onnx.NodeProto:
            if opset >= 18:
                return helper.make_node(op, [x, axes], [out], keepdims=1)
            return helper.make_node(op, [x], [out], axes=[-1], keepdims=1)

        quantize = [
            reduce("ReduceMin", f"{p}/min"),
            reduce("ReduceMax", f"{p}/max"),
            helper.make_node("Neg", [f"{p}/min"], [f"{p}/neg_min"]),
            helper.make_node("Max", [f"{p}/max", f"{p}/neg_min", tiny], [f"{p}/absmax"]),
            helper.make_node("Div", [f"{p}/absmax", levels], [f"{p}/scale"]),
            helper.make_node("Div", [x, f"{p}/scale"], [f"{p}/x_scaled"]),
            # rounds half to even, saturates to [0, 255] after adding the zero point
            helper.make_node("QuantizeLinear", [f"{p}/x_scaled", one, zero_point], [f"{p}/x_q"]),
        ]
        for op in quantize:
            op.name = f"{op.output[0]}/{op.op_type}"
        for j, node in enumerate(nodes):
            w_q, w_scale = quantize_weight(numpy_helper.to_array(inits[node.input[1]]))
            q = f"{p}/{j}"
            product = [
                helper.make_node(
                    "MatMulIntegerToFloat",
                    [
                        f"{p}/x_q",
                        const(f"{q}/w_q", w_q),
                        one,
                        const(f"{q}/w_scale", w_scale),
                        zero_point,
                    ],
                    [f"{q}/y_unscaled"],
                    domain="com.microsoft",
                    name=f"{node.name}/rowq/MatMulIntegerToFloat",
                ),
                helper.make_node(
                    "Mul",
                    [f"{q}/y_unscaled", f"{p}/scale"],
                    [node.output[0]],
                    name=f"{node.name}/rowq/Mul",
                ),
            ]
            replaced[node.name] = (quantize if j == 0 else []) + product

    old_weights = {n.input[1] for ns in targets.values() for n in ns}
    nodes_out: list[onnx.NodeProto] = []
    for node in graph.node:
        nodes_out.extend(replaced.get(node.name, [node]) if node.op_type == "MatMul" else [node])
    del graph.node[:]
    graph.node.extend(nodes_out)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name not in old_weights or i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + [i for i in new_inits if i.name in used])
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.checker.check_model(model)
    onnx.save(model, str(out_path))
    return out_path
