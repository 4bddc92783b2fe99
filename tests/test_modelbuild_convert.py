"""PhoWhisper-CTC checkpoints (Lightning .ckpt layout) convert to a working bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFEncoder

from modelbuild.convert import convert_checkpoint
from modelbuild.weights import whisper_tokenizer_json
from serve_app.bundle import load_bundle
from serve_app.transcriber import Transcriber

VOCAB = 50258  # Whisper BPE + one, as published; blank is the pad token (<|endoftext|>)
HIDDEN = 16


def _tiny_checkpoint(path, head_prefix: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    cfg = WhisperConfig(
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        encoder_attention_heads=1,
        encoder_ffn_dim=128,
        max_source_positions=1500,
    )
    encoder = HFEncoder(cfg)
    head = torch.nn.Sequential(
        torch.nn.Linear(64, HIDDEN),
        torch.nn.GELU(),
        torch.nn.LayerNorm(HIDDEN),
        torch.nn.Linear(HIDDEN, VOCAB),
    )
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state |= {f"{head_prefix}{k}": v for k, v in head.state_dict().items()}
    torch.save(
        {
            "state_dict": state,
            "epoch": 3,
            "global_step": 100,
            "pytorch-lightning_version": "2.2.0",
            "hyper_parameters": {"lr": 1e-4},
        },
        path,
    )
    return {"encoder": encoder.eval(), "head": head.eval()}


@pytest.mark.parametrize("head_prefix", ["ctc_head.", "ctc_head.layers."])
def test_convert_tiny_checkpoint(tmp_path, head_prefix):
    ckpt = tmp_path / "phowhisper-ctc-tiny.ckpt"
    ref = _tiny_checkpoint(ckpt, head_prefix)
    out = convert_checkpoint(ckpt, whisper_tokenizer_json(), tmp_path / "bundle")

    bundle = load_bundle(out)
    assert bundle.config.pad_to_30s is True
    assert bundle.config.vocab_kind == "bpe"
    assert bundle.config.blank_id == 50257
    assert bundle.vocabulary().blank_id == 50257

    # The ONNX graph equals the reference model on a 30 s padded input.
    mel = torch.randn(1, 80, 3000) * 0.5
    with torch.no_grad():
        expected = ref["head"](ref["encoder"](mel).last_hidden_state).log_softmax(-1)[0].numpy()
    transcriber = Transcriber(out, precision="fp32")
    got = transcriber.encoder.run([mel[0].numpy()])[0]
    assert got.shape == (1500, VOCAB)
    assert np.abs(got - expected).max() < 1e-3

    # The whole pipeline runs on it (random weights: the text itself is meaningless).
    audio = (0.1 * np.sin(np.linspace(0, 2000, 16000 * 3))).astype(np.float32)
    transcript = transcriber.transcribe_audio(audio)
    assert transcript.duration == 3.0
    assert all(w.end <= 3.0 for w in transcript.words)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_refuses_pickled_code(tmp_path):
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Evil()}, ckpt)
    with pytest.raises(ValueError, match="weights_only"):
        convert_checkpoint(ckpt, whisper_tokenizer_json(), tmp_path / "out")


def test_config_written(tmp_path):
    ckpt = tmp_path / "m.ckpt"
    _tiny_checkpoint(ckpt, "ctc_head.")
    out = convert_checkpoint(ckpt, whisper_tokenizer_json(), tmp_path / "b", int8=True)
    config = json.loads((out / "config.json").read_text())
    assert config["models"] == {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    assert config["architecture"]["head"] == {"kind": "mlp", "hidden": HIDDEN, "vocab_size": VOCAB}
