"""Split long audio into windows of at most 30 s, cutting where the signal is quietest.

The encoder sees at most 30 s at a time. Cutting blindly every 30 s would split words, so each
cut is placed at the quietest moment of the last stretch of the allowed span (by default the
last 10 s, i.e. windows are 20-30 s long). Quietness is the short-time energy of 20 ms frames
averaged over 200 ms, so a long pause wins over the brief silence inside a stop consonant.

Windows are contiguous and cover every sample exactly once: nothing is dropped or overlapped,
and the same audio always gives the same windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serve_app.audio import SAMPLE_RATE
from serve_app.features import CHUNK_LENGTH

MAX_WINDOW_S = float(CHUNK_LENGTH)  # seconds: Whisper's encoder input length
# By default cuts are searched in the last third of the allowed span: 20-30 s into a window.
MIN_WINDOW_FRACTION = 2 / 3
ENERGY_FRAME_S = 0.02  # seconds: 20 ms energy frames, short against a pause
SMOOTHING_S = 0.2  # seconds: pauses shorter than this (stop closures) hardly count


@dataclass(frozen=True)
class Window:
    """Samples [start, end) of the audio."""

    start: int
    end: int
    sample_rate: int = SAMPLE_RATE

    @property
    def start_s(self) -> float:
        return self.start / self.sample_rate

    @property
    def end_s(self) -> float:
        return self.end / self.sample_rate

    @property
    def duration_s(self) -> float:
        return (self.end - self.start) / self.sample_rate

    def slice(self, audio: np.ndarray) -> np.ndarray:
        return audio[self.start : self.end]


def split_windows(
    audio: np.ndarray,
    max_window_s: float = MAX_WINDOW_S,
    min_window_s: float | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> list[Window]:
    """Cut mono audio into contiguous windows of at most max_window_s seconds.

    Every window but the last is between min_window_s and max_window_s long, cut at the
    quietest point of that range; min_window_s defaults to 2/3 of max_window_s (20 s of 30 s).
    The last window holds whatever remains (it can be short).
    Audio no longer than max_window_s is one window; empty audio gives no windows.
    """
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D mono, got shape {audio.shape}")
    if min_window_s is None:
        min_window_s = max_window_s * MIN_WINDOW_FRACTION
    if not 0 < min_window_s <= max_window_s:
        raise ValueError(
            f"need 0 < min_window_s <= max_window_s, got {min_window_s}, {max_window_s}"
        )
    n_samples = len(audio)
    max_len = int(max_window_s * sample_rate)
    min_len = max(1, int(min_window_s * sample_rate))
    if max_len < 1:
        raise ValueError(f"max_window_s={max_window_s} is shorter than one sample")
    frame_len = max(1, round(ENERGY_FRAME_S * sample_rate))

    energy = _smoothed_energy(audio, frame_len) if n_samples > max_len else np.zeros(0)
    windows = []
    start = 0
    while n_samples - start > max_len:
        end = _quietest_cut(energy, frame_len, start + min_len, start + max_len)
        windows.append(Window(start, end, sample_rate))
        start = end
    if start < n_samples:
        windows.append(Window(start, n_samples, sample_rate))
    return windows


def _smoothed_energy(audio: np.ndarray, frame_len: int) -> np.ndarray:
    """Mean square of each frame_len frame (the last may be partial), averaged over SMOOTHING_S."""
    n_full = len(audio) // frame_len
    frames = audio[: n_full * frame_len].reshape(n_full, frame_len)  # a view, not a copy
    # einsum squares and sums without a full-size temporary array.
    energy = np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / frame_len
    tail = audio[n_full * frame_len :]
    if len(tail):
        energy = np.append(energy, np.mean(np.square(tail, dtype=np.float64)))
    smoothing = max(1, round(SMOOTHING_S / ENERGY_FRAME_S))
    return np.convolve(energy, np.full(smoothing, 1.0 / smoothing), mode="same")


def _quietest_cut(energy: np.ndarray, frame_len: int, lo: int, hi: int) -> int:
    """Sample index in [lo, hi] at the centre of the quietest energy frame there."""
    first = -(-lo // frame_len)  # frames that lie entirely inside [lo, hi]
    last = min(hi // frame_len, len(energy))
    if last <= first:
        return hi
    region = energy[first:last]
    quietest = int(np.argmin(region))
    # In digital silence many frames tie; cut in the middle of the tied run, away from speech.
    louder_after = np.flatnonzero(region[quietest:] > region[quietest])
    run_len = int(louder_after[0]) if len(louder_after) else len(region) - quietest
    frame = first + quietest + (run_len - 1) // 2
    return min(hi, max(lo, frame * frame_len + frame_len // 2))
