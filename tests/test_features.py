"""Log-mel features against transformers' WhisperFeatureExtractor, the reference."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import WhisperFeatureExtractor
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

from serve_app.errors import EmptyAudioError
from serve_app.features import (
    FRAMES_PER_SECOND,
    HOP_LENGTH,
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    log_mel_spectrogram,
    mel_filters,
    num_frames,
)

TOLERANCE = 1e-4


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """A chirp, a harmonic tone and bursts of noise, with a silent gap: a wide dynamic range."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    chirp = 0.3 * np.sin(2 * np.pi * (100 * t + 300 * t**2 / max(seconds, 1e-3)))
    harmonics = sum(0.1 / k * np.sin(2 * np.pi * 180 * k * t) for k in range(1, 6))
    bursts = 0.05 * rng.standard_normal(len(t)) * (np.sin(2 * np.pi * 1.5 * t) > 0.6)
    audio = chirp + harmonics + bursts
    audio[len(audio) // 3 : len(audio) // 3 + SAMPLE_RATE // 4] = 0.0
    return audio.astype(np.float32)


@pytest.fixture(scope="module", params=[80, 128], ids=["80mel", "128mel"])
def extractor(request) -> WhisperFeatureExtractor:
    return WhisperFeatureExtractor(feature_size=request.param)


def reference_numpy(extractor: WhisperFeatureExtractor, audio: np.ndarray) -> np.ndarray:
    """The extractor's numpy path on exactly this audio (no padding added)."""
    return extractor._np_extract_fbank_features(audio[np.newaxis].astype(np.float32), "cpu")[0]


def reference_filters(n_mels: int) -> np.ndarray:
    """transformers' Whisper filterbank: slaney scale and norm, 0-8 kHz, 201 FFT bins."""
    return mel_filter_bank(
        num_frequency_bins=201,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )


def reference_unpadded(audio: np.ndarray, n_mels: int) -> np.ndarray:
    """Built from transformers.audio_utils directly, as the extractor does, without padding."""
    log_spec = spectrogram(
        audio,
        window_function(400, "hann"),
        frame_length=400,
        hop_length=HOP_LENGTH,
        power=2.0,
        mel_filters=reference_filters(n_mels),
        log_mel="log10",
    )[:, :-1]
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_match_transformers(n_mels: int) -> None:
    expected = reference_filters(n_mels)
    np.testing.assert_allclose(mel_filters(n_mels), expected.T, rtol=1e-12, atol=1e-15)
    assert mel_filters(n_mels) is mel_filters(n_mels)  # computed once
    assert not mel_filters(n_mels).flags.writeable


@pytest.mark.parametrize("seconds", [0.5, 7.3, 30.0])
def test_padded_mode_matches_whisper_feature_extractor(extractor, seconds: float) -> None:
    audio = speechlike(seconds)
    n_mels = extractor.feature_size
    ours = log_mel_spectrogram(audio, n_mels=n_mels, pad_to_frames=N_FRAMES)

    # The extractor's default call pads to 30 s itself (and uses torch's STFT when installed).
    called = extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="np")["input_features"][0]
    padded = np.pad(audio, (0, N_SAMPLES - len(audio)))
    numpy_path = reference_numpy(extractor, padded)

    assert ours.shape == called.shape == numpy_path.shape == (n_mels, N_FRAMES)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, numpy_path, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(ours, called, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("seconds", [0.02, 1.0, 7.3, 30.0, 42.0])
def test_unpadded_mode_with_even_frame_count_matches_reference(extractor, seconds: float) -> None:
    audio = speechlike(seconds, seed=1)
    assert (len(audio) // HOP_LENGTH) % 2 == 0
    n_mels = extractor.feature_size
    ours = log_mel_spectrogram(audio, n_mels=n_mels)

    assert ours.shape == (n_mels, len(audio) // HOP_LENGTH)
    np.testing.assert_allclose(ours, reference_numpy(extractor, audio), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(ours, reference_unpadded(audio, n_mels), atol=TOLERANCE, rtol=0)
    called = extractor(
        audio,
        sampling_rate=SAMPLE_RATE,
        padding="do_not_pad",
        truncation=False,  # it cuts at 30 s by default
        return_tensors="np",
    )["input_features"][0]
    np.testing.assert_allclose(ours, called, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("n_samples", [1, 159, 160, 481, 16000 + 160, 16000 + 319])
def test_unpadded_mode_rounds_frames_up_to_even_with_zeros(n_samples: int) -> None:
    audio = speechlike(n_samples / SAMPLE_RATE, seed=2)[:n_samples]
    ours = log_mel_spectrogram(audio)

    frames = max(2, -(-(n_samples // HOP_LENGTH) // 2) * 2)
    assert ours.shape == (80, frames) and num_frames(n_samples) == frames
    zero_padded = np.pad(audio, (0, max(0, frames * HOP_LENGTH - n_samples)))
    np.testing.assert_allclose(ours, reference_unpadded(zero_padded, 80), atol=TOLERANCE, rtol=0)


def test_padding_to_30s_only_changes_the_last_frames() -> None:
    # Zeros never raise the maximum, so the 80 dB floor is the same in both modes; only the
    # frames whose window reaches the end differ (reflected audio versus appended zeros).
    audio = speechlike(7.3)
    unpadded = log_mel_spectrogram(audio)
    padded = log_mel_spectrogram(audio, pad_to_frames=N_FRAMES)
    n = unpadded.shape[1]
    np.testing.assert_allclose(unpadded[:, : n - 2], padded[:, : n - 2], atol=TOLERANCE, rtol=0)
    assert not np.allclose(unpadded[:, -1], padded[:, n - 1], atol=TOLERANCE)


def test_float64_and_float32_input_agree() -> None:
    audio = speechlike(3.0)
    np.testing.assert_allclose(
        log_mel_spectrogram(audio.astype(np.float64)), log_mel_spectrogram(audio), atol=1e-5
    )


def test_silence_is_constant() -> None:
    features = log_mel_spectrogram(np.zeros(SAMPLE_RATE, dtype=np.float32))
    np.testing.assert_array_equal(features, np.full_like(features, (-10.0 + 4.0) / 4.0))


def test_frame_rate_constant() -> None:
    assert log_mel_spectrogram(speechlike(10.0)).shape[1] == 10 * FRAMES_PER_SECOND


def test_invalid_arguments() -> None:
    audio = speechlike(1.0)
    with pytest.raises(ValueError):
        log_mel_spectrogram(audio, n_mels=64)
    with pytest.raises(ValueError):
        log_mel_spectrogram(np.stack([audio, audio]))
    with pytest.raises(ValueError):
        log_mel_spectrogram(audio, pad_to_frames=50)  # 1 s does not fit in 0.5 s
    with pytest.raises(ValueError):
        log_mel_spectrogram(audio[:100], pad_to_frames=1)
    with pytest.raises(EmptyAudioError):
        log_mel_spectrogram(np.zeros(0, dtype=np.float32))


def test_the_filterbank_product_runs_on_one_blas_thread_and_restores_the_count(monkeypatch):
    """OpenBLAS' spinning helper threads took the cores from ONNX Runtime; the log-mel
    product runs on one BLAS thread, and the process's own setting comes back afterwards."""
    from threadpoolctl import threadpool_info

    from serve_app import features

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    seen: list[list[int]] = []
    real_rfft = np.fft.rfft

    def rfft(*args, **kwargs):
        seen.append(blas_threads())
        return real_rfft(*args, **kwargs)

    monkeypatch.setattr(features.np.fft, "rfft", rfft)
    log_mel_spectrogram(np.random.default_rng(0).standard_normal(16000).astype(np.float32))
    assert seen and all(threads == [1] * len(before) for threads in seen)
    assert blas_threads() == before
