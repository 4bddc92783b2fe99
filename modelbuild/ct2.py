"""Read a CTranslate2 `model.bin` (the format faster-whisper ships) into numpy arrays.

Layout (CTranslate2 spec revision 6): u32 version, name, u32 revision, u32 variable count,
then per variable: name, u8 rank, u32 dims[rank], u8 dtype, u32 byte count, raw bytes;
then u32 alias count and (alias, target) name pairs. Strings are a u16 length (NUL
included) followed by the bytes.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

# CTranslate2's DataType enum, in file order.
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    # 5 (bfloat16) has no numpy dtype; we read it as uint16 and widen it below.
    5: np.dtype("<u2"),
}
_BF16 = 5
SUPPORTED_VERSION = 6


def _u32(f: io.BufferedIOBase) -> int:
    return struct.unpack("<I", f.read(4))[0]


def _string(f: io.BufferedIOBase) -> str:
    (length,) = struct.unpack("<H", f.read(2))
    return f.read(length)[:-1].decode("utf-8")


def read_ct2_model(parts: Iterable[Path | str]) -> dict[str, np.ndarray]:
    """Parse a model.bin (possibly split into parts, concatenated in order).

    Returns every variable as a numpy array (bf16 widened to float32; other dtypes kept);
    aliases map to the same array as their target.
    """
    data = b"".join(Path(p).read_bytes() for p in parts)
    f = io.BytesIO(data)
    version = _u32(f)
    if version != SUPPORTED_VERSION:
        raise ValueError(f"CTranslate2 model.bin version {version} is not supported")
    _string(f)  # spec name, e.g. WhisperSpec
    _u32(f)  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(_u32(f)):
        name = _string(f)
        rank = f.read(1)[0]
        dims = struct.unpack(f"<{rank}I", f.read(4 * rank))
        dtype_id = f.read(1)[0]
        n_bytes = _u32(f)
        raw = np.frombuffer(f.read(n_bytes), dtype=_DTYPES[dtype_id]).reshape(dims)
        if dtype_id == _BF16:
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        variables[name] = raw
    remaining = f.read(4)
    if len(remaining) == 4:
        for _ in range(struct.unpack("<I", remaining)[0]):
            alias, target = _string(f), _string(f)
            variables[alias] = variables[target]
    return variables


def whisper_encoder_state_dict(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map CTranslate2 Whisper encoder variables to Hugging Face `WhisperEncoder` names (fp32).

    Self-attention `linear_0` is the fused q;k;v projection (k has no bias in Whisper),
    `linear_1` the output projection; `ffn/linear_0|1` are fc1|fc2.
    """
    sd: dict[str, np.ndarray] = {}

    def put(name: str, array: np.ndarray) -> None:
        sd[name] = np.ascontiguousarray(array, dtype=np.float32)

    for conv in ("conv1", "conv2"):
        put(f"{conv}.weight", variables[f"encoder/{conv}/weight"])
        put(f"{conv}.bias", variables[f"encoder/{conv}/bias"])
    put("embed_positions.weight", variables["encoder/position_encodings/encodings"])
    put("layer_norm.weight", variables["encoder/layer_norm/gamma"])
    put("layer_norm.bias", variables["encoder/layer_norm/beta"])
    n_layers = 1 + max(
        int(k.split("/")[1].removeprefix("layer_"))
        for k in variables
        if re.match(r"encoder/layer_\d+/", k)
    )
    for i in range(n_layers):
        src, dst = f"encoder/layer_{i}", f"layers.{i}"
        qkv_w = variables[f"{src}/self_attention/linear_0/weight"]
        qkv_b = variables[f"{src}/self_attention/linear_0/bias"]
        q_w, k_w, v_w = np.split(qkv_w, 3, axis=0)
        q_b, _k_b, v_b = np.split(qkv_b, 3, axis=0)
        put(f"{dst}.self_attn.q_proj.weight", q_w)
        put(f"{dst}.self_attn.q_proj.bias", q_b)
        put(f"{dst}.self_attn.k_proj.weight", k_w)
        put(f"{dst}.self_attn.v_proj.weight", v_w)
        put(f"{dst}.self_attn.v_proj.bias", v_b)
        put(f"{dst}.self_attn.out_proj.weight", variables[f"{src}/self_attention/linear_1/weight"])
        put(f"{dst}.self_attn.out_proj.bias", variables[f"{src}/self_attention/linear_1/bias"])
        put(
            f"{dst}.self_attn_layer_norm.weight",
            variables[f"{src}/self_attention/layer_norm/gamma"],
        )
        put(f"{dst}.self_attn_layer_norm.bias", variables[f"{src}/self_attention/layer_norm/beta"])
        put(f"{dst}.fc1.weight", variables[f"{src}/ffn/linear_0/weight"])
        put(f"{dst}.fc1.bias", variables[f"{src}/ffn/linear_0/bias"])
        put(f"{dst}.fc2.weight", variables[f"{src}/ffn/linear_1/weight"])
        put(f"{dst}.fc2.bias", variables[f"{src}/ffn/linear_1/bias"])
        put(f"{dst}.final_layer_norm.weight", variables[f"{src}/ffn/layer_norm/gamma"])
        put(f"{dst}.final_layer_norm.bias", variables[f"{src}/ffn/layer_norm/beta"])
    return sd
