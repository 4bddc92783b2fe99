"""Waveform data for the plot: a min/max envelope of the audio and the word boundaries.

The audio is decoded here only to draw it (soundfile: WAV, FLAC, OGG, MP3); transcription
always happens in the service. A format soundfile cannot read (m4a) just gets no plot.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import altair as alt
import numpy as np
import pandas as pd
import soundfile as sf

from ui.subtitles import Word

ENVELOPE_POINTS = 1200  # columns of the plot: enough for a wide screen, light for the browser
MAX_PLOT_SECONDS = 3600.0  # longer audio is not decoded just for a picture
PLOT_HEIGHT_PX = 180
TIME_TITLE = "time (s)"


@dataclass(frozen=True)
class Envelope:
    """Per time bucket, the lowest and highest sample (mono, -1..1)."""

    time_s: np.ndarray
    low: np.ndarray
    high: np.ndarray
    duration_s: float


def decode_mono(audio: bytes) -> tuple[np.ndarray, int] | None:
    """Mono float32 samples and their rate, or None when soundfile cannot read the bytes."""
    try:
        with sf.SoundFile(io.BytesIO(audio)) as f:
            if f.frames > MAX_PLOT_SECONDS * f.samplerate:
                return None
            samples = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None
    if samples.size == 0:
        return None
    return samples.mean(axis=1), rate


def envelope(samples: np.ndarray, rate: int, points: int = ENVELOPE_POINTS) -> Envelope:
    """Min/max per bucket of `len(samples) / points` samples (fewer buckets for short audio)."""
    n = len(samples)
    buckets = max(1, min(points, n))
    edges = np.linspace(0, n, buckets + 1).astype(int)
    starts = edges[:-1]
    low = np.minimum.reduceat(samples, starts)
    high = np.maximum.reduceat(samples, starts)
    return Envelope(starts / rate, low, high, n / rate)


def envelope_of(audio: bytes) -> Envelope | None:
    decoded = decode_mono(audio)
    return envelope(*decoded) if decoded else None


def chart(env: Envelope, words: list[Word]) -> alt.LayerChart:
    """The waveform as a filled band, each word's span shaded, its start marked and labelled."""
    wave = pd.DataFrame({"time (s)": env.time_s, "low": env.low, "high": env.high})
    layers = [
        alt.Chart(wave)
        .mark_area(color="#4c78a8", opacity=0.85)
        .encode(
            x=alt.X("time (s):Q", title=TIME_TITLE, scale=alt.Scale(domain=[0, env.duration_s])),
            y=alt.Y("low:Q", title="amplitude", scale=alt.Scale(domain=[-1, 1])),
            y2="high:Q",
        )
    ]
    if words:
        spans = pd.DataFrame(
            {
                "word": [w.word for w in words],
                "start": [w.start for w in words],
                "end": [w.end for w in words],
            }
        )
        base = alt.Chart(spans)
        start = alt.X("start:Q", title=TIME_TITLE)
        tooltip = ["word:N", "start:Q", "end:Q"]
        layers += [
            base.mark_rect(color="#f58518", opacity=0.15).encode(
                x=start, x2="end:Q", tooltip=tooltip
            ),
            base.mark_rule(color="#e45756", strokeWidth=1).encode(x=start, tooltip=tooltip),
            base.mark_rule(color="#e45756", strokeDash=[3, 3], opacity=0.6).encode(
                x=alt.X("end:Q", title=TIME_TITLE)
            ),
            base.mark_text(align="left", baseline="top", dx=2, dy=2, fontSize=11).encode(
                x=start, y=alt.value(2), text="word:N"
            ),
        ]
    return alt.layer(*layers).properties(height=PLOT_HEIGHT_PX)
