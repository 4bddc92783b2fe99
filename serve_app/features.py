"""Whisper's log-mel spectrogram in numpy, without torch.

Numerically the same as transformers' `WhisperFeatureExtractor` (its numpy path) and
openai/whisper's `log_mel_spectrogram`: 25 ms periodic-Hann STFT every 10 ms with centred
reflect padding, power spectrum, Slaney mel filterbank up to 8 kHz, log10, an 80 dB floor
below the loudest value, and the affine map (x + 4) / 4.

Whisper always pads the audio to 30 s before computing features; here that is opt-in
(`pad_to_frames=N_FRAMES`). The difference matters twice: the padded zeros add frames, and the
80 dB floor is taken relative to the maximum over the whole (padded or not) signal.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from threadpoolctl import ThreadpoolController

from serve_app.audio import SAMPLE_RATE
from serve_app.errors import EmptyAudioError

N_FFT = 400  # samples: a 25 ms analysis window
HOP_LENGTH = 160  # samples: one frame every 10 ms
CHUNK_LENGTH = 30  # seconds: Whisper's fixed input length
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in a 30-second chunk
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in a 30-second chunk
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames per second (10 ms each)
ENCODER_STRIDE = 2  # the encoder's second conv has stride 2...
ENCODER_FRAMES_PER_SECOND = FRAMES_PER_SECOND // ENCODER_STRIDE  # ...so 50 outputs per second
N_FREQUENCIES = N_FFT // 2 + 1  # 201 rfft bins
MEL_MAX_HZ = 8000.0  # Whisper's filterbank spans 0 Hz to Nyquist at 16 kHz
SUPPORTED_N_MELS = (80, 128)  # 128 for large-v3 and its descendants, 80 for everything else
LOG_FLOOR = 1e-10  # mel power floor before log10, as Whisper
DYNAMIC_RANGE = 8.0  # log10 units (80 dB) kept below the loudest value
FRAMES_PER_BLOCK = 3000  # STFT frames computed at once: bounds memory on long audio

# Slaney's mel scale: linear below 1 kHz, logarithmic above.
MEL_LOG_START_HZ = 1000.0
MEL_LOG_START = 15.0  # mel value at 1 kHz
MELS_PER_LOG_HZ = 27.0 / np.log(6.4)  # mels per natural-log unit of frequency above 1 kHz


def log_mel_spectrogram(
    audio: np.ndarray, n_mels: int = 80, pad_to_frames: int | None = None
) -> np.ndarray:
    """Whisper log-mel features of 16 kHz mono audio, float32 of shape [n_mels, n_frames].

    pad_to_frames=None (the default) uses the audio as it is: n_frames = len(audio) // 160,
    rounded up to an even number (at least 2) by appending zeros, because the encoder's stride-2
    conv halves the frame count and an odd length would drop or pad a frame inside the model.

    pad_to_frames=N appends zeros to N * 160 samples first, exactly as Whisper does with
    N_FRAMES (3000): the result then equals WhisperFeatureExtractor's output for this audio.
    Longer audio raises ValueError rather than being silently truncated.

    `audio` must be finite (decode_audio guarantees it).
    """
    if n_mels not in SUPPORTED_N_MELS:
        raise ValueError(f"n_mels must be one of {SUPPORTED_N_MELS}, got {n_mels}")
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D mono, got shape {audio.shape}")
    if len(audio) == 0:
        raise EmptyAudioError("cannot compute features of empty audio")
    samples = _pad(audio, _target_frames(len(audio), pad_to_frames))
    mel = _mel_power(samples, mel_filters(n_mels))
    log_spec = np.log10(np.maximum(mel, LOG_FLOOR))
    log_spec = np.maximum(log_spec, log_spec.max() - DYNAMIC_RANGE)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def num_frames(n_samples: int) -> int:
    """Mel frames `log_mel_spectrogram` returns for this many samples when not padding to 30 s."""
    return _target_frames(n_samples, None)


@cache
def mel_filters(n_mels: int) -> np.ndarray:
    """Slaney-normalised, Slaney-scale mel filterbank, float64 [n_mels, 201] (read-only).

    The same matrix (transposed) as transformers' `mel_filter_bank(num_frequency_bins=201,
    num_mel_filters=n_mels, min_frequency=0, max_frequency=8000, sampling_rate=16000,
    norm="slaney", mel_scale="slaney")` and librosa's `filters.mel(sr=16000, n_fft=400)`.
    """
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(MEL_MAX_HZ), n_mels + 2))
    bins_hz = np.linspace(0, SAMPLE_RATE // 2, N_FREQUENCIES)
    # Triangles: rising from edge i to edge i+1, falling from edge i+1 to edge i+2.
    slopes = edges_hz[np.newaxis, :] - bins_hz[:, np.newaxis]
    widths = np.diff(edges_hz)
    falling = -slopes[:, :-2] / widths[:-1]
    rising = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(falling, rising))
    # Slaney normalisation: every filter gets the same area, i.e. roughly constant energy.
    filters *= 2.0 / (edges_hz[2:] - edges_hz[:-2])
    filters = np.ascontiguousarray(filters.T)
    filters.flags.writeable = False
    return filters


def _target_frames(n_samples: int, pad_to_frames: int | None) -> int:
    if pad_to_frames is None:
        frames = n_samples // HOP_LENGTH
        return max(ENCODER_STRIDE, frames + frames % ENCODER_STRIDE)
    if pad_to_frames < ENCODER_STRIDE:
        raise ValueError(f"pad_to_frames must be at least {ENCODER_STRIDE}, got {pad_to_frames}")
    if n_samples > pad_to_frames * HOP_LENGTH:
        raise ValueError(
            f"{n_samples} samples do not fit in {pad_to_frames} frames; split the audio first"
        )
    return pad_to_frames


def _pad(audio: np.ndarray, frames: int) -> np.ndarray:
    """Append zeros so the STFT below yields exactly `frames` frames after dropping the last."""
    # With centred frames every HOP_LENGTH samples, len // HOP_LENGTH + 1 frames come out and
    # Whisper drops the last, so `frames` needs at least frames * HOP_LENGTH samples.
    missing = frames * HOP_LENGTH - len(audio)
    if missing <= 0:
        return audio
    return np.concatenate([audio, np.zeros(missing, dtype=audio.dtype)])


def _mel_power(samples: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """Mel power spectrogram [n_mels, len // HOP_LENGTH], float64 like the reference."""
    padded = np.pad(samples, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH]
    n_frames = len(samples) // HOP_LENGTH  # Whisper drops the STFT's last frame
    window = _hann_window()
    mel = np.empty((filters.shape[0], n_frames), dtype=np.float64)
    # One BLAS thread for the filterbank product: OpenBLAS' extra threads busy-wait after
    # each call and took the cores from ONNX Runtime (in-process transcription of short
    # clips ran at about half speed; python -m bench.stages measures it).
    with _blas().limit(limits=1, user_api="blas"):
        for start in range(0, n_frames, FRAMES_PER_BLOCK):
            stop = min(start + FRAMES_PER_BLOCK, n_frames)
            # float64 like the reference: float32 FFT error is large relative to the weak
            # bins that survive the 80 dB floor.
            spectrum = np.fft.rfft(frames[start:stop] * window, axis=-1)  # window is float64
            power = spectrum.real**2 + spectrum.imag**2
            mel[:, start:stop] = filters @ power.T
    return mel


@cache
def _blas() -> ThreadpoolController:
    """The process's BLAS libraries (numpy's OpenBLAS), found once: limiting them through
    it costs microseconds per call."""
    return ThreadpoolController()


@cache
def _hann_window() -> np.ndarray:
    # Periodic Hann (torch.hann_window's default): the symmetric N+1 window minus its last point.
    window = np.hanning(N_FFT + 1)[:-1]
    window.flags.writeable = False
    return window


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = 3.0 * hz / 200.0
    logarithmic = (
        MEL_LOG_START
        + np.log(np.maximum(hz, MEL_LOG_START_HZ) / MEL_LOG_START_HZ) * MELS_PER_LOG_HZ
    )
    return np.where(hz >= MEL_LOG_START_HZ, logarithmic, linear)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    linear = 200.0 * mels / 3.0
    logarithmic = MEL_LOG_START_HZ * np.exp(
        (np.maximum(mels, MEL_LOG_START) - MEL_LOG_START) / MELS_PER_LOG_HZ
    )
    return np.where(mels >= MEL_LOG_START, logarithmic, linear)
