"""Splitting long audio into <= 30 s windows at pauses."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from serve_app.audio import SAMPLE_RATE
from serve_app.windows import Window, split_windows

NOISE_FLOOR = 1e-3  # background noise in the pauses: a real recording is never digital zero


def speech_with_pauses(
    seconds: float, seed: int = 0, zero_gaps: bool = False
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Bursts of 2-6 s of modulated noise ("speech") separated by 0.4-1.2 s pauses.

    Returns the audio and the pauses as [start, end) sample ranges. With speech at most 6 s
    long, every 10 s stretch holds at least one whole pause.
    """
    rng = np.random.default_rng(seed)
    n_samples = round(seconds * SAMPLE_RATE)
    audio = (NOISE_FLOOR * rng.standard_normal(n_samples)).astype(np.float32)
    if zero_gaps:
        audio[:] = 0.0
    pauses = []
    position = 0
    while position < n_samples:
        speech_len = round(rng.uniform(2.0, 6.0) * SAMPLE_RATE)
        end = min(n_samples, position + speech_len)
        t = np.arange(end - position) / SAMPLE_RATE
        syllables = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)  # 4 Hz syllable rhythm
        audio[position:end] += 0.3 * syllables * rng.standard_normal(end - position)
        pause_len = round(rng.uniform(0.4, 1.2) * SAMPLE_RATE)
        if end + pause_len < n_samples:
            pauses.append((end, end + pause_len))
        position = end + pause_len
    return audio, pauses


def assert_tiles(windows: list[Window], n_samples: int, max_s: float = 30.0) -> None:
    assert windows[0].start == 0 and windows[-1].end == n_samples
    for before, after in itertools.pairwise(windows):
        assert before.end == after.start
    for window in windows:
        assert 0 < window.end - window.start <= max_s * SAMPLE_RATE


def test_five_minutes_cut_inside_pauses() -> None:
    audio, pauses = speech_with_pauses(300.0)
    windows = split_windows(audio)

    assert_tiles(windows, len(audio))
    assert len(windows) >= 10
    margin = round(0.05 * SAMPLE_RATE)  # a cut this close to speech could clip a phoneme
    for window in windows[:-1]:
        assert window.duration_s >= 20.0
        assert any(start + margin <= window.end <= end - margin for start, end in pauses), (
            f"cut at {window.end_s:.2f} s is not inside a pause"
        )


def test_cut_lands_mid_pause_in_digital_silence() -> None:
    audio, pauses = speech_with_pauses(100.0, seed=4, zero_gaps=True)
    windows = split_windows(audio)

    assert_tiles(windows, len(audio))
    for window in windows[:-1]:
        start, end = next((s, e) for s, e in pauses if s <= window.end <= e)
        # The middle of the part of the pause where the cut was allowed (20-30 s in), give or
        # take half the 200 ms smoothing when the pause is clipped at one end of that range.
        start = max(start, window.start + 20 * SAMPLE_RATE)
        end = min(end, window.start + 30 * SAMPLE_RATE)
        assert abs(window.end - (start + end) / 2) <= 0.1 * SAMPLE_RATE


def test_continuous_sound_without_pauses_still_splits_within_limits() -> None:
    audio = (0.2 * np.random.default_rng(5).standard_normal(95 * SAMPLE_RATE)).astype(np.float32)
    windows = split_windows(audio)
    assert_tiles(windows, len(audio))
    assert all(window.duration_s >= 20.0 for window in windows[:-1])


@pytest.mark.parametrize(
    ("n_samples", "expected"),
    [
        (1, [Window(0, 1)]),
        (10 * SAMPLE_RATE, [Window(0, 10 * SAMPLE_RATE)]),
        (30 * SAMPLE_RATE, [Window(0, 30 * SAMPLE_RATE)]),
    ],
)
def test_short_audio_is_one_window(n_samples: int, expected: list[Window]) -> None:
    assert split_windows(np.ones(n_samples, dtype=np.float32)) == expected


def test_just_over_the_limit_gives_two_windows() -> None:
    audio, _ = speech_with_pauses(30.0 + 1 / SAMPLE_RATE, seed=6)
    windows = split_windows(audio)
    assert len(windows) == 2
    assert_tiles(windows, len(audio))


def test_empty_audio_has_no_windows() -> None:
    assert split_windows(np.zeros(0, dtype=np.float32)) == []


def test_custom_limits_and_determinism() -> None:
    audio, _ = speech_with_pauses(120.0, seed=7)
    windows = split_windows(audio, max_window_s=10.0, min_window_s=5.0)
    assert_tiles(windows, len(audio), max_s=10.0)
    assert all(window.duration_s >= 5.0 for window in windows[:-1])
    assert windows == split_windows(audio.copy(), max_window_s=10.0, min_window_s=5.0)


def test_min_window_defaults_to_two_thirds_of_max() -> None:
    audio, _ = speech_with_pauses(60.0, seed=9)
    windows = split_windows(audio, max_window_s=9.0)
    assert_tiles(windows, len(audio), max_s=9.0)
    assert all(window.duration_s >= 6.0 for window in windows[:-1])


def test_other_sample_rate() -> None:
    rate = 8000
    audio = np.random.default_rng(8).standard_normal(70 * rate).astype(np.float32)
    windows = split_windows(audio, sample_rate=rate)
    assert windows[-1].end == len(audio)
    assert all(window.sample_rate == rate and window.duration_s <= 30.0 for window in windows)


def test_window_accessors() -> None:
    window = Window(16000, 48000)
    assert (window.start_s, window.end_s, window.duration_s) == (1.0, 3.0, 2.0)
    audio = np.arange(64000, dtype=np.float32)
    np.testing.assert_array_equal(window.slice(audio), audio[16000:48000])


@pytest.mark.parametrize(
    "kwargs",
    [{"min_window_s": 0.0}, {"min_window_s": 31.0}, {"max_window_s": -1.0}, {"max_window_s": 1e-6}],
)
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        split_windows(np.zeros(10, dtype=np.float32), **kwargs)


def test_multichannel_is_rejected() -> None:
    with pytest.raises(ValueError):
        split_windows(np.zeros((2, 10), dtype=np.float32))
