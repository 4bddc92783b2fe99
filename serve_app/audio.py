"""Decode uploaded audio bytes into the mono 16 kHz float32 waveform the encoder expects.

WAV/FLAC/OGG (Vorbis, Opus)/MP3/AIFF/... are decoded in-process with libsndfile (soundfile).
Containers libsndfile cannot read (MP4/M4A, raw AAC, WebM, AMR, WMA) go through an `ffmpeg`
subprocess when one is on PATH, and are rejected as unsupported otherwise.

Untrusted input is checked as early as it can be: the byte size before decoding anything, the
duration from the header before reading any samples. Decoding then runs block by block, so a
many-channel or high-rate file never has to be held at its native rate and channel count.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import soundfile as sf

from serve_app.errors import (
    AudioTooLargeError,
    AudioTooLongError,
    CorruptAudioError,
    EmptyAudioError,
    UnsupportedAudioError,
)

SAMPLE_RATE = 16000  # Hz: the rate Whisper's encoder was trained on
MIN_SAMPLE_RATE = 4000  # Hz: below this there is hardly any speech band left to recognise
MAX_SAMPLE_RATE = 384000  # Hz: the highest rate real recording hardware produces
DEFAULT_MAX_BYTES = 100 * 1024 * 1024  # 100 MiB per upload
DEFAULT_MAX_DURATION_S = 3600.0  # 1 hour; 230 MB of decoded float32 at 16 kHz
READ_BLOCK_S = 10.0  # seconds of audio decoded per block, bounds peak memory while decoding
# Decoding cost grows with rate x channels, not with duration alone: an hour of silence at
# 96 kHz x 8 channels is a 3 MB FLAC that takes a minute of CPU to decode. Samples over all
# channels are capped at max_duration_s of 48 kHz stereo (an hour of it decodes in ~8 s).
MAX_DECODED_SAMPLES_PER_S = 48000 * 2
UNKNOWN_FRAMES = 2**63 - 1  # libsndfile's frame count for a stream without a length (SF_COUNT_MAX)
FFMPEG_TIMEOUT_S = 120.0  # seconds; ffmpeg decodes an hour of AAC in a few seconds
FFMPEG_DURATION_MARGIN_S = 1.0  # decode this much past the limit, to tell "too long" apart

# scipy.signal.resample_poly's own filter design, reproduced so the filter is built once per
# file instead of once per block: a Kaiser-windowed sinc, 10 taps per side per max(up, down).
RESAMPLE_KAISER_BETA = 5.0
RESAMPLE_HALF_TAPS_PER_RATE = 10
# An odd rate (44101 Hz) makes the exact ratio 16000/44101 and a filter of 10^5-10^6 taps that
# takes seconds per second of audio. Such ratios are replaced by the nearest fraction with
# terms up to this bound: every common rate stays exact, odd ones drift by < 0.01%.
MAX_RESAMPLE_TERM = 1000

# libsndfile formats we accept. It also opens exotic ones (MAT4, HTK, VOC, ...) whose weak
# magic numbers random bytes can match; those are refused rather than decoded into noise.
SOUNDFILE_FORMATS = frozenset(
    {"WAV", "WAVEX", "RF64", "W64", "FLAC", "OGG", "MP3", "AIFF", "CAF", "AU", "NIST"}
)

# What soundfile raises on bad input: LibsndfileError is a RuntimeError; SoundFileError
# covers the rest of its own exceptions.
_SOUNDFILE_ERRORS = (sf.SoundFileError, RuntimeError)


@dataclass(frozen=True)
class AudioLimits:
    """Per-request limits on untrusted audio, checked before the expensive work."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_duration_s: float = DEFAULT_MAX_DURATION_S

    def __post_init__(self) -> None:
        if not (isinstance(self.max_bytes, int) and self.max_bytes > 0):
            raise ValueError(f"max_bytes must be a positive int, got {self.max_bytes!r}")
        if not (math.isfinite(self.max_duration_s) and self.max_duration_s > 0):
            raise ValueError(
                f"max_duration_s must be positive and finite, got {self.max_duration_s!r}"
            )


DEFAULT_LIMITS = AudioLimits()


def decode_audio(data: bytes, limits: AudioLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode an audio file's bytes to a mono float32 waveform at 16 kHz in [-1, 1].

    Raises EmptyAudioError, AudioTooLargeError, AudioTooLongError, CorruptAudioError or
    UnsupportedAudioError; never returns an empty or non-finite array.
    """
    if len(data) == 0:
        raise EmptyAudioError("the audio upload is empty")
    _check_size(len(data), limits)
    try:
        sound_file = sf.SoundFile(io.BytesIO(data))
    except _SOUNDFILE_ERRORS as error:
        container = _ffmpeg_only_container(data)
        if container is None:
            raise CorruptAudioError("not a decodable audio file") from error
        audio = _decode_with_ffmpeg(data, container, limits)
    else:
        with sound_file:
            if sound_file.frames == UNKNOWN_FRAMES:
                # A stream written without its length (FLAC piped out of an encoder):
                # libsndfile fails on its last block, ffmpeg reads it to the end.
                audio = _decode_with_ffmpeg(data, sound_file.format.lower(), limits)
            else:
                audio = _decode_with_soundfile(sound_file, limits)
    return _finish(audio)


def load_audio_file(
    path: str | os.PathLike[str], limits: AudioLimits = DEFAULT_LIMITS
) -> np.ndarray:
    """Read and decode an audio file from disk; see `decode_audio`."""
    # Checked on the file's size first so an oversized file is never read into memory.
    _check_size(os.path.getsize(path), limits)
    with open(path, "rb") as file:
        return decode_audio(file.read(), limits)


def duration_s(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Duration in seconds of a mono waveform."""
    return len(audio) / sample_rate


def _check_size(n_bytes: int, limits: AudioLimits) -> None:
    if n_bytes > limits.max_bytes:
        raise AudioTooLargeError(
            f"audio upload is {n_bytes} bytes, the limit is {limits.max_bytes} bytes"
        )


def _check_duration(seconds: float, limits: AudioLimits) -> None:
    if seconds > limits.max_duration_s:
        raise AudioTooLongError(
            f"audio is {seconds:.1f} s long, the limit is {limits.max_duration_s:.1f} s"
        )


def _check_decoded_samples(frames: int, channels: int, limits: AudioLimits) -> None:
    budget = limits.max_duration_s * MAX_DECODED_SAMPLES_PER_S
    if frames * channels > budget:
        raise AudioTooLargeError(
            f"audio decodes to {frames * channels} samples ({channels} channels), the limit is "
            f"{budget:.0f} ({limits.max_duration_s:.0f} s of 48 kHz stereo)"
        )


def _decode_with_soundfile(sound_file: sf.SoundFile, limits: AudioLimits) -> np.ndarray:
    if sound_file.format not in SOUNDFILE_FORMATS:
        raise UnsupportedAudioError(f"audio format {sound_file.format} is not supported")
    rate = sound_file.samplerate
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise UnsupportedAudioError(
            f"sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
        )
    if sound_file.channels < 1:
        raise CorruptAudioError(f"audio header declares {sound_file.channels} channels")
    # The header's frame count: rejects a long file before a single sample is decoded.
    _check_duration(sound_file.frames / rate, limits)
    _check_decoded_samples(sound_file.frames, sound_file.channels, limits)

    resampler = _Resampler(rate, SAMPLE_RATE)
    pieces: list[np.ndarray] = []
    for block in _mono_blocks(sound_file, limits):
        pieces.extend(resampler.push(block))
    pieces.append(resampler.flush())
    return np.concatenate(pieces)


def _mono_blocks(sound_file: sf.SoundFile, limits: AudioLimits) -> Iterator[np.ndarray]:
    """Yield the file's samples block by block, downmixed to mono by averaging channels."""
    rate = sound_file.samplerate
    block_frames = max(1, round(READ_BLOCK_S * rate))
    max_frames = math.floor(limits.max_duration_s * rate)
    frames_read = 0
    while True:
        try:
            block = sound_file.read(block_frames, dtype="float32", always_2d=True)
        except _SOUNDFILE_ERRORS as error:
            raise CorruptAudioError("audio data is corrupt") from error
        if len(block) == 0:
            return
        frames_read += len(block)
        # The header's length was checked already; this catches headers that understate it.
        if frames_read > max_frames:
            _check_duration(frames_read / rate, limits)
        _check_decoded_samples(frames_read, block.shape[1], limits)
        # Checked before the downmix: inf and -inf in two channels would average to NaN.
        if not np.isfinite(block).all():
            raise CorruptAudioError("audio contains NaN or infinite samples")
        yield block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)


class _Resampler:
    """`scipy.signal.resample_poly`, fed block by block, with the same output as one call.

    Each block is filtered together with `context` neighbouring input samples on both sides,
    enough to cover the FIR filter's support, and only the output belonging to the block's own
    input is kept. Blocks start at multiples of `down` input samples, so each block's outputs
    fall on the whole signal's output grid.
    """

    def __init__(self, rate_in: int, rate_out: int) -> None:
        ratio = Fraction(rate_out, rate_in)
        if max(ratio.numerator, ratio.denominator) > MAX_RESAMPLE_TERM:
            ratio = ratio.limit_denominator(MAX_RESAMPLE_TERM)
        self.up, self.down = ratio.numerator, ratio.denominator
        max_rate = max(self.up, self.down)
        half_taps = RESAMPLE_HALF_TAPS_PER_RATE * max_rate
        self.filter: np.ndarray | None = None
        if not self.is_identity:
            from scipy.signal import firwin  # 0.6 s to import: only where audio is resampled

            self.filter = firwin(
                2 * half_taps + 1, 1.0 / max_rate, window=("kaiser", RESAMPLE_KAISER_BETA)
            ).astype(np.float32)
        # Input samples one output depends on, each side, rounded up to whole `down` groups.
        self.context = self.down * math.ceil((half_taps // self.up + 2) / self.down)
        self.step = self.down * max(1, round(READ_BLOCK_S * rate_in / self.down))
        self._pending = np.zeros(0, dtype=np.float32)  # input not yet resampled, plus context
        self._left = 0  # how many samples at the start of _pending are left context only

    @property
    def is_identity(self) -> bool:
        return self.up == self.down

    def push(self, samples: np.ndarray) -> list[np.ndarray]:
        """Add input; return the output blocks that no longer depend on input still to come."""
        if self.is_identity:
            return [samples]
        self._pending = np.concatenate([self._pending, samples])
        outputs = []
        while len(self._pending) - self._left >= self.step + self.context:
            outputs.append(self._emit(self.step))
        return outputs

    def flush(self) -> np.ndarray:
        """Return the output for the remaining input, treating the signal as ended."""
        remaining = len(self._pending) - self._left
        if self.is_identity or remaining == 0:
            return np.zeros(0, dtype=np.float32)
        return self._emit(remaining)

    def _emit(self, n_in: int) -> np.ndarray:
        from scipy.signal import resample_poly

        end = min(len(self._pending), self._left + n_in + self.context)
        resampled = resample_poly(self._pending[:end], self.up, self.down, window=self.filter)
        first = self._left * self.up // self.down
        n_out = -(-n_in * self.up // self.down)  # ceil: resample_poly's output length rule
        output = resampled[first : first + n_out].astype(np.float32, copy=False)
        keep_from = max(0, self._left + n_in - self.context)
        self._pending = self._pending[keep_from:]
        self._left = self._left + n_in - keep_from
        return output


def resample(samples: np.ndarray, rate_in: int) -> np.ndarray:
    """Mono float32 at `rate_in` -> SAMPLE_RATE, with the same filter as decoded uploads."""
    resampler = _Resampler(rate_in, SAMPLE_RATE)
    if resampler.is_identity:
        return samples.astype(np.float32, copy=False)
    return np.concatenate([*resampler.push(samples.astype(np.float32)), resampler.flush()])


def needs_ffmpeg(data: bytes) -> bool:
    """Whether decoding these bytes runs an ffmpeg subprocess (containers libsndfile lacks)."""
    return _ffmpeg_only_container(data) is not None


def _ffmpeg_only_container(data: bytes) -> str | None:
    """Name the container if it is one libsndfile cannot read but ffmpeg can, else None."""
    head = data[:16]
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free"):
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"#!AMR"):
        return "amr"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "asf"
    # ADTS AAC: 12-bit sync word then layer bits 00 (MP3 frames have a non-zero layer).
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "aac"
    return None


def _decode_with_ffmpeg(data: bytes, container: str, limits: AudioLimits) -> np.ndarray:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise UnsupportedAudioError(f"{container} audio needs ffmpeg, which is not installed")
    # A temporary file, not stdin: MP4 files usually keep their index (moov) after the audio
    # data, and ffmpeg cannot seek back to it on a pipe.
    with tempfile.NamedTemporaryFile(suffix=f".{container}") as source:
        source.write(data)
        source.flush()
        command = [
            ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
            "-protocol_whitelist", "file",
            "-i", source.name,
            "-map", "0:a:0", "-vn",
            # Decoding stops just past the limit, so an endless stream costs bounded time.
            "-t", f"{limits.max_duration_s + FFMPEG_DURATION_MARGIN_S:.3f}",
            "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "pipe:1",
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as error:
            raise CorruptAudioError(f"decoding {container} audio timed out") from error
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise CorruptAudioError(f"cannot decode {container} audio: {detail[0]}")
    audio = np.frombuffer(result.stdout, dtype="<f4").astype(np.float32)
    _check_duration(len(audio) / SAMPLE_RATE, limits)
    if not np.isfinite(audio).all():
        raise CorruptAudioError("audio contains NaN or infinite samples")
    return audio


def _finish(audio: np.ndarray) -> np.ndarray:
    if len(audio) == 0:
        raise EmptyAudioError("the audio contains no samples")
    # Integer PCM decodes into [-1, 1) already; float files may hold any scale and the
    # resampling filter can overshoot slightly. Rescale rather than clip, which would distort.
    peak = float(np.max(np.abs(audio)))
    if peak > 1.0:
        audio /= peak
    return np.ascontiguousarray(audio, dtype=np.float32)
