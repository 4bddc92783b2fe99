"""Decoding uploads: formats, sample rates, channel counts, limits and malformed input."""

from __future__ import annotations

import io
import math
import shutil
import struct
import subprocess

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from serve_app import audio as audio_module
from serve_app.audio import (
    SAMPLE_RATE,
    AudioLimits,
    decode_audio,
    duration_s,
    load_audio_file,
)
from serve_app.errors import (
    AudioTooLargeError,
    AudioTooLongError,
    CorruptAudioError,
    EmptyAudioError,
    InputError,
    UnsupportedAudioError,
)

TONE_HZ = 440.0
TONE_AMPLITUDE = 0.5
TONE_S = 2.0

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def tone(sample_rate: int, seconds: float = TONE_S, channels: int = 1) -> np.ndarray:
    """[frames, channels] float32 sine at TONE_HZ; channel c has amplitude scaled by 1/(c+1)."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    wave = TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)
    gains = 1.0 / (np.arange(channels) + 1.0)
    return (wave[:, np.newaxis] * gains).astype(np.float32)


def encode(samples: np.ndarray, sample_rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def dominant_hz(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)), n=8 * len(audio)))
    return float(np.argmax(spectrum)) * sample_rate / (8 * len(audio))


def ffmpeg_encode(wav: bytes, tmp_path, suffix: str, *args: str) -> bytes:
    source, target = tmp_path / "in.wav", tmp_path / f"out{suffix}"
    source.write_bytes(wav)
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), *args, str(target)],
        check=True,
        timeout=60,
    )
    return target.read_bytes()


@pytest.mark.parametrize("channels", [1, 2, 8])
@pytest.mark.parametrize("sample_rate", [8000, 16000, 22050, 44100, 48000, 96000])
def test_wav_any_rate_and_channel_count(sample_rate: int, channels: int) -> None:
    samples = tone(sample_rate, channels=channels)
    audio = decode_audio(encode(samples, sample_rate, "WAV", "PCM_16"))

    assert audio.dtype == np.float32 and audio.ndim == 1 and audio.flags.c_contiguous
    assert len(audio) == math.ceil(len(samples) * SAMPLE_RATE / sample_rate)
    assert dominant_hz(audio) == pytest.approx(TONE_HZ, abs=1.0)
    # Downmix is the mean of the channels, whose gains are 1, 1/2, ..., 1/channels.
    expected_rms = TONE_AMPLITUDE * np.mean(1.0 / np.arange(1, channels + 1)) / np.sqrt(2)
    assert np.sqrt(np.mean(audio[1000:-1000] ** 2)) == pytest.approx(expected_rms, rel=0.01)


@pytest.mark.parametrize(
    ("fmt", "subtype", "sample_rate"),
    [
        ("FLAC", "PCM_16", 44100),
        ("FLAC", "PCM_24", 96000),
        ("OGG", "VORBIS", 44100),
        ("OGG", "OPUS", 48000),
        ("MP3", "MPEG_LAYER_III", 44100),
        ("MP3", "MPEG_LAYER_III", 22050),
        ("WAV", "FLOAT", 22050),
        ("WAV", "PCM_24", 48000),
        ("WAV", "PCM_U8", 8000),
        ("AIFF", "PCM_16", 44100),
    ],
)
def test_compressed_and_other_formats(fmt: str, subtype: str, sample_rate: int) -> None:
    if fmt not in sf.available_formats():
        pytest.skip(f"this libsndfile cannot write {fmt}")
    audio = decode_audio(encode(tone(sample_rate, channels=2), sample_rate, fmt, subtype))

    # Lossy codecs may add encoder delay and padding; a few tens of ms at most.
    assert abs(len(audio) - TONE_S * SAMPLE_RATE) <= 0.06 * SAMPLE_RATE
    assert dominant_hz(audio) == pytest.approx(TONE_HZ, abs=1.0)
    assert np.abs(audio).max() <= 1.0


def test_downmix_is_channel_mean_and_16k_passes_through() -> None:
    rng = np.random.default_rng(0)
    stereo = (0.3 * rng.standard_normal((SAMPLE_RATE, 2))).clip(-1, 1).astype(np.float32)
    audio = decode_audio(encode(stereo, SAMPLE_RATE, "WAV", "FLOAT"))
    np.testing.assert_allclose(audio, stereo.mean(axis=1), atol=1e-7)


@pytest.mark.parametrize("sample_rate", [8000, 44100, 96000])
def test_block_resampling_equals_one_resample_poly_call(sample_rate: int) -> None:
    # 25 s spans several decode blocks: the seams must be invisible.
    rng = np.random.default_rng(1)
    noise = (0.1 * rng.standard_normal(round(25.3 * sample_rate))).astype(np.float32)
    audio = decode_audio(encode(noise, sample_rate, "WAV", "FLOAT"))

    divisor = math.gcd(sample_rate, SAMPLE_RATE)
    expected = resample_poly(noise, SAMPLE_RATE // divisor, sample_rate // divisor)
    assert len(audio) == len(expected)
    np.testing.assert_allclose(audio, expected, atol=1e-6)


def test_float_audio_beyond_full_scale_is_rescaled_not_clipped() -> None:
    samples = 4.0 * tone(SAMPLE_RATE)[:, 0] / TONE_AMPLITUDE
    audio = decode_audio(encode(samples, SAMPLE_RATE, "WAV", "FLOAT"))
    assert np.abs(audio).max() == pytest.approx(1.0)
    np.testing.assert_allclose(audio, samples / np.abs(samples).max(), atol=1e-6)


def test_load_audio_file_and_duration(tmp_path) -> None:
    path = tmp_path / "tone.flac"
    sf.write(path, tone(44100), 44100)
    audio = load_audio_file(path)
    assert duration_s(audio) == pytest.approx(TONE_S, abs=1e-3)
    with pytest.raises(AudioTooLargeError):
        load_audio_file(path, AudioLimits(max_bytes=100))


def test_empty_input() -> None:
    with pytest.raises(EmptyAudioError):
        decode_audio(b"")


def test_header_only_wav_is_empty() -> None:
    with pytest.raises(EmptyAudioError):
        decode_audio(encode(np.zeros((0, 1), np.float32), SAMPLE_RATE, "WAV", "PCM_16"))


@pytest.mark.parametrize(
    "data",
    [
        b"\x00" * 64,
        np.random.default_rng(2).bytes(4096),
        b"RIFF\x24\x00\x00\x00WAVEfmt ",  # a WAV header cut short
        b"fLaC\x00\x00\x00\x22" + b"\x00" * 10,  # a FLAC header cut short
        b"OggS" + b"\x00" * 40,
    ],
    ids=["zeros", "random", "truncated-wav", "truncated-flac", "bad-ogg"],
)
def test_undecodable_bytes_are_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptAudioError):
        decode_audio(data)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_float_wav_is_corrupt(bad_value: float) -> None:
    samples = tone(SAMPLE_RATE)[:, 0]
    samples[1234] = bad_value
    with pytest.raises(CorruptAudioError):
        decode_audio(encode(samples, SAMPLE_RATE, "WAV", "FLOAT"))


def test_non_finite_sample_in_one_channel_is_corrupt() -> None:
    samples = tone(44100, channels=2)
    samples[500, 1] = np.nan
    with pytest.raises(CorruptAudioError):
        decode_audio(encode(samples, 44100, "WAV", "FLOAT"))


def test_too_large_is_rejected_before_decoding(monkeypatch) -> None:
    data = encode(tone(SAMPLE_RATE), SAMPLE_RATE, "WAV", "PCM_16")
    monkeypatch.setattr(sf, "SoundFile", _must_not_be_called)
    with pytest.raises(AudioTooLargeError):
        decode_audio(data, AudioLimits(max_bytes=len(data) - 1))


def test_too_long_is_rejected_from_the_header_without_reading_samples(monkeypatch) -> None:
    data = encode(tone(44100, seconds=3.0), 44100, "FLAC", "PCM_16")
    monkeypatch.setattr(sf.SoundFile, "read", _must_not_be_called)
    with pytest.raises(AudioTooLongError):
        decode_audio(data, AudioLimits(max_duration_s=2.5))


def test_duration_limit_is_inclusive() -> None:
    data = encode(tone(SAMPLE_RATE, seconds=2.0), SAMPLE_RATE, "WAV", "PCM_16")
    assert len(decode_audio(data, AudioLimits(max_duration_s=2.0))) == 2 * SAMPLE_RATE


def _must_not_be_called(*args, **kwargs):
    raise AssertionError("decoding started although the input should have been rejected")


def _wav_with_sizes(riff_size: int | None, data_size: int) -> bytes:
    wav = bytearray(encode(tone(SAMPLE_RATE), SAMPLE_RATE, "WAV", "PCM_16"))
    data_at = wav.index(b"data")
    struct.pack_into("<I", wav, data_at + 4, data_size)
    if riff_size is not None:
        struct.pack_into("<I", wav, 4, riff_size)
    return bytes(wav)


@pytest.mark.parametrize(
    ("riff_size", "data_size"),
    [(None, 10 * 64000), (None, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (36, 64000)],
    ids=["data-10x", "data-max", "riff-and-data-max", "riff-too-small"],
)
def test_wav_header_lying_about_its_length_decodes_what_is_there(
    riff_size: int | None, data_size: int
) -> None:
    audio = decode_audio(_wav_with_sizes(riff_size, data_size))
    assert 0 < len(audio) <= TONE_S * SAMPLE_RATE
    assert dominant_hz(audio) == pytest.approx(TONE_HZ, abs=1.0)


def test_wav_header_understating_its_length_reads_the_declared_part() -> None:
    audio = decode_audio(_wav_with_sizes(None, 2 * SAMPLE_RATE // 2))  # claims 0.5 s of 2 s
    assert len(audio) == SAMPLE_RATE // 2


def test_libsndfile_format_outside_the_allow_list_is_unsupported() -> None:
    with pytest.raises(UnsupportedAudioError):
        decode_audio(encode(tone(SAMPLE_RATE), SAMPLE_RATE, "MAT5", "PCM_16"))


@pytest.mark.parametrize("sample_rate", [1000, 768000])
def test_sample_rate_out_of_range_is_unsupported(sample_rate: int) -> None:
    with pytest.raises(UnsupportedAudioError):
        decode_audio(encode(np.zeros((sample_rate // 10, 1), np.float32), sample_rate, "WAV"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_bytes": 0},
        {"max_bytes": -5},
        {"max_bytes": 1.5},
        {"max_duration_s": 0.0},
        {"max_duration_s": -1.0},
        {"max_duration_s": math.nan},
        {"max_duration_s": math.inf},
    ],
)
def test_audio_limits_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        AudioLimits(**kwargs)


@needs_ffmpeg
def test_m4a_via_ffmpeg_with_index_after_the_audio(tmp_path) -> None:
    # 20 s is past ffmpeg's probe buffer: read from a pipe, its moov-at-the-end index
    # (ffmpeg's default) would be unreachable. decode_audio uses a temporary file.
    wav = encode(tone(44100, seconds=20.0, channels=2), 44100, "WAV", "PCM_16")
    m4a = ffmpeg_encode(wav, tmp_path, ".m4a", "-c:a", "aac", "-b:a", "64k")
    assert m4a[4:8] == b"ftyp"

    audio = decode_audio(m4a)
    assert abs(len(audio) - 20.0 * SAMPLE_RATE) <= 0.06 * SAMPLE_RATE
    assert dominant_hz(audio) == pytest.approx(TONE_HZ, abs=1.0)


@needs_ffmpeg
def test_adts_aac_via_ffmpeg(tmp_path) -> None:
    wav = encode(tone(48000), 48000, "WAV", "PCM_16")
    aac = ffmpeg_encode(wav, tmp_path, ".aac", "-c:a", "aac", "-f", "adts")
    audio = decode_audio(aac)
    assert dominant_hz(audio) == pytest.approx(TONE_HZ, abs=1.0)


@needs_ffmpeg
def test_ffmpeg_path_enforces_the_duration_limit(tmp_path) -> None:
    wav = encode(tone(SAMPLE_RATE, seconds=4.0), SAMPLE_RATE, "WAV", "PCM_16")
    m4a = ffmpeg_encode(wav, tmp_path, ".m4a", "-c:a", "aac")
    with pytest.raises(AudioTooLongError):
        decode_audio(m4a, AudioLimits(max_duration_s=2.0))


@needs_ffmpeg
def test_broken_mp4_via_ffmpeg_is_corrupt() -> None:
    with pytest.raises(CorruptAudioError):
        decode_audio(b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 200)


def test_ffmpeg_only_container_without_ffmpeg_is_unsupported(monkeypatch) -> None:
    monkeypatch.setattr(audio_module.shutil, "which", lambda name: None)
    with pytest.raises(UnsupportedAudioError):
        decode_audio(b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 200)


@pytest.mark.parametrize(
    ("fmt", "subtype"),
    [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")],
)
def test_mangled_files_raise_input_errors_or_decode_cleanly(fmt: str, subtype: str) -> None:
    """Truncated and bit-flipped files must never escape as anything but an InputError."""
    original = encode(tone(22050, seconds=1.0, channels=2), 22050, fmt, subtype)
    rng = np.random.default_rng(3)
    for _ in range(25):
        data = bytearray(original[: rng.integers(1, len(original) + 1)])
        for position in rng.integers(0, len(data), size=rng.integers(0, 8)):
            data[position] = rng.integers(0, 256)
        try:
            audio = decode_audio(bytes(data))
        except InputError:
            continue
        assert audio.dtype == np.float32 and len(audio) > 0
        assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
