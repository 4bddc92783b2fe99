"""Per-frame INT8 (modelbuild/rowquant.py) on small real ONNX graphs run by ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelbuild.rowquant import quantize_rows, quantize_weight

K, N1, N2 = 64, 48, 32


def _graph(path, rng) -> dict[str, np.ndarray]:
    """x [B, T, K] -> two MatMuls sharing x (like q/k projections) and one on their sum."""
    weights = {
        "w_a": rng.standard_normal((K, N1)).astype(np.float32) * 0.2,
        "w_b": rng.standard_normal((K, N1)).astype(np.float32) * 0.2,
        "w_c": rng.standard_normal((N1, N2)).astype(np.float32) * 0.2,
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w_a"], ["a"], name="/proj_a/MatMul"),
        helper.make_node("MatMul", ["x", "w_b"], ["b"], name="/proj_b/MatMul"),
        helper.make_node("Add", ["a", "b"], ["ab"], name="/add"),
        helper.make_node("MatMul", ["ab", "w_c"], ["y"], name="/out/MatMul"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "T", N2])],
        [numpy_helper.from_array(w, name) for name, w in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return weights


def _run(path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[
        0
    ]


def _reference_int8_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The formula of the module docstring in numpy: per-row symmetric activations."""
    w_q, w_scale = quantize_weight(w)
    s_x = np.maximum(np.abs(x).max(-1, keepdims=True), 1e-30) / np.float32(127)
    q_x = np.clip(np.rint(x / s_x), -128, 127)
    return (q_x @ w_q.astype(np.float64)) * w_scale * s_x


def test_weights_are_symmetric_per_column():
    w = np.array([[1.0, -0.5], [-2.0, 0.25]], np.float32)
    q, scale = quantize_weight(w)
    assert q.dtype == np.int8 and np.abs(q).max() == 127
    np.testing.assert_allclose(scale, [2.0 / 127, 0.5 / 127], rtol=1e-6)
    np.testing.assert_allclose(q * scale, w, atol=scale.max() / 2)


def test_quantized_graph_matches_the_formula_and_stays_close_to_fp32(tmp_path):
    rng = np.random.default_rng(0)
    weights = _graph(tmp_path / "fp32.onnx", rng)
    quantize_rows(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", nodes_to_exclude=["/out/MatMul"])
    model = onnx.load(str(tmp_path / "int8.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMulIntegerToFloat") == 2 and ops.count("MatMul") == 1  # /out kept
    assert ops.count("QuantizeLinear") == 1  # x is quantized once for both projections
    assert not {"w_a", "w_b"} & {i.name for i in model.graph.initializer}

    x = rng.standard_normal((2, 7, K)).astype(np.float32)
    x[1] *= 40.0  # a much louder batch-mate
    got = _run(tmp_path / "int8.onnx", x)
    ab = _reference_int8_matmul(x, weights["w_a"]) + _reference_int8_matmul(x, weights["w_b"])
    want = ab.astype(np.float32) @ weights["w_c"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    fp32 = _run(tmp_path / "fp32.onnx", x)
    rel = np.linalg.norm(got - fp32) / np.linalg.norm(fp32)
    assert 0 < rel < 0.02


def test_a_row_gives_the_same_bits_alone_or_batched(tmp_path):
    """No row's result depends on other rows: not on batch-mates, not on padding frames."""
    rng = np.random.default_rng(1)
    _graph(tmp_path / "fp32.onnx", rng)
    quantize_rows(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")
    window = rng.standard_normal((1, 5, K)).astype(np.float32)
    alone = _run(tmp_path / "int8.onnx", window)
    batch = rng.standard_normal((3, 9, K)).astype(np.float32) * 25.0  # louder, longer mates
    batch[1, :5] = window[0]
    batch[1, 5:] = 0.0  # padding
    together = _run(tmp_path / "int8.onnx", batch)
    assert np.array_equal(alone[0], together[1, :5])
    assert np.array_equal(together[1, 5:], np.zeros_like(together[1, 5:]))


def test_a_graph_with_nothing_to_quantize_is_refused(tmp_path):
    _graph(tmp_path / "fp32.onnx", np.random.default_rng(2))
    with pytest.raises(ValueError, match="no MatMul"):
        quantize_rows(
            tmp_path / "fp32.onnx",
            tmp_path / "int8.onnx",
            nodes_to_exclude=["/proj_a/MatMul", "/proj_b/MatMul", "/out/MatMul"],
        )


@pytest.mark.parametrize(
    ("recipe", "invariant"), [("matmul-per-frame", "true"), ("matmul-per-channel", "false")]
)
def test_recipes_mark_whether_the_graph_may_batch(tmp_path, recipe, invariant):
    """The encoder reads this flag: per-tensor (quantize_dynamic) graphs run one window per
    ORT call, per-frame graphs batch."""
    from modelbuild.quant import RECIPES, quantize_int8
    from serve_app.encoder import BATCH_INVARIANT_KEY

    _graph(tmp_path / "fp32.onnx", np.random.default_rng(3))
    quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", RECIPES[recipe])
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "int8.onnx")).metadata_props}
    assert props == {BATCH_INVARIANT_KEY: invariant, "asr.quant": recipe}
    x = np.random.default_rng(4).standard_normal((2, 3, K)).astype(np.float32)
    assert _run(tmp_path / "int8.onnx", x).shape == (2, 3, N2)
