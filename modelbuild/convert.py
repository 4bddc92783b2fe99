"""Turn a published PhoWhisper-CTC Lightning checkpoint into a model bundle.

The checkpoint's `state_dict` holds `encoder.*` in Hugging Face WhisperEncoder naming and the
seed head as `ctc_head.{0,2,3}.*` or `ctc_head.layers.{0,2,3}.*`
(Linear-GELU-LayerNorm-Linear). Its vocabulary is Whisper's byte-level BPE (50258 with the
blank = the pad token) and it was trained on 30 s padded input, so the bundle asks for that.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from modelbuild.export import export_onnx
from modelbuild.model import EncoderCTC, EncoderDims, SeedHead, WhisperEncoder
from modelbuild.quant import DEFAULT_QUANT_RECIPE, RECIPES, quantize_int8
from serve_app.bundle import BundleConfig, write_config

WHISPER_HEAD_DIM = 64  # every Whisper size uses 64-dim attention heads
_HEAD_PREFIXES = ("ctc_head.layers.", "ctc_head.")


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Load the state dict with `weights_only=True`: a pickle from the internet is code."""
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError or RuntimeError for unsafe pickles
        raise ValueError(
            f"{path} could not be loaded with weights_only=True ({exc}); refusing to unpickle it"
        ) from exc
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state_dict")
    return state


def split_state_dict(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    encoder = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    head: dict[str, torch.Tensor] = {}
    for prefix in _HEAD_PREFIXES:
        found = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        if found:
            head = {f"mlp.{k}": v for k, v in found.items()}
            break
    if not encoder or not head:
        raise ValueError("checkpoint lacks encoder.* or ctc_head.* weights (not PhoWhisper-CTC?)")
    return encoder, head


def _blank_id(tokenizer_json: Path, vocab_size: int) -> int:
    """The pad token, which PhoWhisper-CTC uses as blank: Whisper's <|endoftext|>."""
    added = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("added_tokens", [])
    for tok in added:
        if tok.get("content") == "<|endoftext|>" and tok["id"] < vocab_size:
            return int(tok["id"])
    return vocab_size - 1


def convert_checkpoint(
    ckpt: Path,
    tokenizer_json: Path,
    out: Path,
    blank_id: int | None = None,
    n_heads: int | None = None,
    int8: bool = False,
) -> Path:
    enc_sd, head_sd = split_state_dict(load_checkpoint(ckpt))
    d_model = enc_sd["conv1.weight"].shape[0]
    dims = EncoderDims.from_state_dict(enc_sd, n_heads=n_heads or d_model // WHISPER_HEAD_DIM)
    encoder = WhisperEncoder(dims)
    encoder.load_state_dict({k: v.float() for k, v in enc_sd.items()})
    hidden, vocab_size = head_sd["mlp.0.weight"].shape[0], head_sd["mlp.3.weight"].shape[0]
    head = SeedHead(d_model, hidden, vocab_size)
    head.load_state_dict({k: v.float() for k, v in head_sd.items()})
    model = EncoderCTC(encoder, head).eval()

    out.mkdir(parents=True, exist_ok=True)
    export_onnx(model, out / "model.onnx")
    models = {"fp32": "model.onnx"}
    if int8:
        quantize_int8(out / "model.onnx", out / "model.int8.onnx", RECIPES[DEFAULT_QUANT_RECIPE])
        models["int8"] = "model.int8.onnx"
    shutil.copy(tokenizer_json, out / "tokenizer.json")
    config = BundleConfig(
        name=f"phowhisper-ctc-{ckpt.stem}",
        n_mels=dims.n_mels,
        blank_id=_blank_id(tokenizer_json, vocab_size) if blank_id is None else blank_id,
        vocab_kind="bpe",
        vocab_file="tokenizer.json",
        models=models,
        pad_to_30s=True,  # trained on 30 s padded windows: shorter input shifts its outputs
        default_precision="fp32",
        architecture={
            "encoder": "whisper",
            "d_model": dims.d_model,
            "n_layers": dims.n_layers,
            "n_heads": dims.n_heads,
            "head": {"kind": "mlp", "hidden": hidden, "vocab_size": vocab_size},
        },
        provenance={"source_weights": f"PhoWhisper-CTC checkpoint {ckpt.name}"},
    )
    write_config(out, config)
    return out
