"""Recording-condition augmentations for the synthetic corpus (numpy/scipy only).

Every function is pure: it takes float32 mono audio (16 kHz unless ``sample_rate`` says
otherwise) and, where it is random, a :class:`numpy.random.Generator`, and returns new
float32 audio.  Levels are kept below :data:`PEAK_LIMIT` wherever a function can raise them.

* :func:`synthetic_rir` / :func:`reverberate`: room reverberation (RT60 0.2-1.0 s).
* :func:`babble`: other talkers under the speech at a given SNR.
* :func:`speed_perturb`: Kaldi-style speed perturbation (tempo and pitch together).
* :func:`colored_noise` / :func:`add_noise`: white, pink or brown noise at a given SNR.
* :func:`quiet` / :func:`clip`: a far-away / quiet microphone and an overdriven one.
* :func:`telephone`: 300-3400 Hz band pass, 8 kHz, 8-bit mu-law, back to 16 kHz.

SNRs are speech power over noise power, where speech power is the mean power of the active
20 ms frames of the speech (:func:`speech_power`, so leading/trailing silence does not count)
and noise power is the mean power of the added signal over the whole clip.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from scipy.signal import butter, fftconvolve, resample_poly, sosfiltfilt

SAMPLE_RATE = 16000
PEAK_LIMIT = 0.98
ACTIVE_FRAME_S = 0.02  # speech_power frame
ACTIVE_RANGE_DB = 30.0  # frames within this of the loudest frame count as speech

RT60_RANGE_S = (0.2, 1.0)
RIR_LENGTH_RT60 = 1.2  # RIR length in units of RT60 (72 dB of decay)
RIR_DRR_DB = 3.0  # default direct-to-reverberant energy ratio
RIR_N_EARLY = (3, 6)  # early reflections, inclusive
RIR_EARLY_DELAY_S = (0.002, 0.025)
RIR_EARLY_GAIN = (0.2, 0.6)  # amplitude relative to the tail's total amplitude
RIR_TAIL_ONSET_S = 0.003  # the diffuse tail starts this long after the direct path
REVERB_MAX_TAIL_S = 0.3  # reverb tail kept after the end of the input

SPEED_RANGE = (0.8, 1.25)
SPEED_MAX_DENOMINATOR = 100  # resampling ratio precision (factor rounded to ~0.01)

NOISE_KINDS: tuple[str, ...] = ("white", "pink", "brown")
BROWN_CORNER_HZ = 20.0  # brown noise is flat below this (no infrasonic rumble)

TELEPHONE_BAND_HZ = (300.0, 3400.0)
TELEPHONE_FILTER_ORDER = 4  # Butterworth band pass (applied forward-backward)
TELEPHONE_RATE = 8000
MU_LAW_MU = 255


# --------------------------------------------------------------------------- levels


def speech_power(x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Mean power over active 20 ms frames (those within 30 dB of the loudest frame)."""
    frame = round(sample_rate * ACTIVE_FRAME_S)
    n = len(x) // frame
    if n == 0:
        return float(np.mean(x.astype(np.float64) ** 2)) if len(x) else 0.0
    e = np.mean(x[: n * frame].astype(np.float64).reshape(n, frame) ** 2, axis=1)
    active = e[e >= e.max() * 10 ** (-ACTIVE_RANGE_DB / 10)]
    return float(active.mean()) if active.size else 0.0


def limit_peak(x: np.ndarray, peak: float = PEAK_LIMIT) -> np.ndarray:
    """Scale ``x`` down (never up) so that its peak is at most ``peak``."""
    m = float(np.max(np.abs(x))) if len(x) else 0.0
    return x * (peak / m) if m > peak else x


def fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """Cut or zero-pad ``y`` to ``n`` samples."""
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


def loop_to_length(y: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    """Repeat ``y`` (circularly, starting at ``offset``) and cut it to ``n`` samples."""
    if len(y) == 0:
        return np.zeros(n, dtype=np.float32)
    reps = -(-(n + offset) // len(y))
    return np.tile(y, reps)[offset : offset + n]


def _scale_to_snr(speech: np.ndarray, other: np.ndarray, snr_db: float) -> np.ndarray:
    """``other`` scaled so that speech_power(speech) / mean(other**2) is ``snr_db``."""
    p_other = float(np.mean(other.astype(np.float64) ** 2))
    if p_other == 0.0:
        return other.astype(np.float32)
    gain = np.sqrt(speech_power(speech) / (p_other * 10 ** (snr_db / 10)))
    return (other * gain).astype(np.float32)


# --------------------------------------------------------------------------- reverb


def synthetic_rir(
    rng: np.random.Generator,
    rt60_s: float,
    sample_rate: int = SAMPLE_RATE,
    drr_db: float = RIR_DRR_DB,
) -> np.ndarray:
    """A synthetic room impulse response with reverberation time ``rt60_s``.

    Direct path at t = 0, then the reverberant part: Gaussian noise from 3 ms on whose
    energy envelope falls by 60 dB in ``rt60_s`` (amplitude ``exp(-3 ln(10) t / rt60_s)``)
    plus a few early reflections (2-25 ms, random sign, each 0.2-0.6 of the tail's
    amplitude in energy terms, on the same decay).  The reverberant part is scaled so that
    direct energy over reverberant energy is ``drr_db``, and the whole response has unit
    energy (sum of squares 1), so convolving speech with it keeps its level about the same.
    """
    if rt60_s <= 0:
        raise ValueError("rt60_s must be > 0")
    n = max(2, round(RIR_LENGTH_RT60 * rt60_s * sample_rate))
    t = np.arange(n) / sample_rate
    decay = np.exp(-3 * np.log(10) * t / rt60_s)  # amplitude: energy -60 dB at rt60_s
    reverb = rng.standard_normal(n) * decay * (t >= RIR_TAIL_ONSET_S)
    tail_rms = np.sqrt(np.sum(reverb**2))
    for _ in range(int(rng.integers(RIR_N_EARLY[0], RIR_N_EARLY[1] + 1))):
        k = min(n - 1, max(1, round(float(rng.uniform(*RIR_EARLY_DELAY_S)) * sample_rate)))
        sign = 1.0 if rng.random() < 0.5 else -1.0
        reverb[k] += sign * float(rng.uniform(*RIR_EARLY_GAIN)) * tail_rms * decay[k]
    reverb_energy = float(np.sum(reverb**2)) or 1.0
    h = reverb * np.sqrt(10 ** (-drr_db / 10) / reverb_energy)
    h[0] = 1.0
    return (h / np.sqrt(np.sum(h**2))).astype(np.float32)


def reverberate(
    audio: np.ndarray,
    rir: np.ndarray,
    max_tail_s: float = REVERB_MAX_TAIL_S,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Convolve with ``rir``; the output keeps at most ``max_tail_s`` of reverb tail after
    the end of ``audio`` (so it is up to that much longer) and its peak is limited."""
    tail = min(len(rir) - 1, round(max_tail_s * sample_rate))
    y = fftconvolve(audio.astype(np.float64), rir.astype(np.float64))[: len(audio) + tail]
    return limit_peak(y).astype(np.float32)


# --------------------------------------------------------------------------- talkers


def babble(
    audio: np.ndarray,
    others: Sequence[np.ndarray],
    snr_db: float,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Mix other utterances under ``audio`` at ``snr_db`` (same length as ``audio``).

    Each talker is looped/cut to the length of ``audio`` (from a random start when ``rng``
    is given) and brought to the same speech power, so no talker dominates; the sum is then
    scaled to the SNR.
    """
    if not others:
        raise ValueError("babble needs at least one other utterance")
    n = len(audio)
    mix = np.zeros(n, dtype=np.float64)
    for other in others:
        offset = int(rng.integers(len(other))) if rng is not None and len(other) else 0
        y = loop_to_length(other.astype(np.float64), n, offset)
        p = speech_power(y)
        if p > 0:
            mix += y / np.sqrt(p)
    return limit_peak(audio + _scale_to_snr(audio, mix, snr_db)).astype(np.float32)


def speed_perturb(audio: np.ndarray, factor: float) -> np.ndarray:
    """Kaldi-style speed perturbation: play ``factor`` times faster (tempo and pitch rise
    together), i.e. resample so the length becomes ``len(audio) / factor``."""
    if factor <= 0:
        raise ValueError("factor must be > 0")
    ratio = Fraction(factor).limit_denominator(SPEED_MAX_DENOMINATOR)
    if ratio == 1:
        return audio.astype(np.float32, copy=True)
    y = resample_poly(audio.astype(np.float64), ratio.denominator, ratio.numerator)
    return limit_peak(y).astype(np.float32)


# --------------------------------------------------------------------------- noise


def colored_noise(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """Unit-RMS noise: ``white``, ``pink`` (1/f power) or ``brown`` (1/f^2 power, flat
    below BROWN_CORNER_HZ)."""
    white = rng.standard_normal(n)
    if kind == "white":
        noise = white
    elif kind in ("pink", "brown"):
        spec = np.fft.rfft(white)
        f = np.arange(len(spec), dtype=np.float64)
        f[0] = 1.0
        if kind == "pink":
            noise = np.fft.irfft(spec / np.sqrt(f), n)
        else:
            corner = BROWN_CORNER_HZ * n / SAMPLE_RATE  # in FFT bins
            noise = np.fft.irfft(spec / np.maximum(f, corner), n)
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    rms = np.sqrt(np.mean(noise**2)) or 1.0
    return (noise / rms).astype(np.float32)


def add_noise(audio: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Add ``noise`` (looped/cut to the length of ``audio``) at ``snr_db``."""
    noise = loop_to_length(noise, len(audio))
    return limit_peak(audio + _scale_to_snr(audio, noise, snr_db)).astype(np.float32)


# --------------------------------------------------------------------------- level, clipping


def quiet(audio: np.ndarray, gain_db: float) -> np.ndarray:
    """Attenuate by ``gain_db`` (negative, e.g. -30..-20 dB: a distant or quiet microphone)."""
    if gain_db > 0:
        raise ValueError("quiet() only attenuates (gain_db <= 0)")
    return (audio * 10 ** (gain_db / 20)).astype(np.float32)


def clip(audio: np.ndarray, clip_level: float) -> np.ndarray:
    """Hard-clip at ``clip_level`` times the peak of ``audio`` (0 < clip_level <= 1)."""
    if not 0 < clip_level <= 1:
        raise ValueError("clip_level must be in (0, 1]")
    t = clip_level * (float(np.max(np.abs(audio))) if len(audio) else 0.0)
    return np.clip(audio, -t, t).astype(np.float32)


# --------------------------------------------------------------------------- telephone


def mu_law_roundtrip(x: np.ndarray, mu: int = MU_LAW_MU) -> np.ndarray:
    """Encode to 8-bit mu-law (sign bit + 7-bit companded magnitude, as in G.711) and decode
    again.  Input in [-1, 1]; silence stays exactly 0."""
    x = np.clip(x.astype(np.float64), -1.0, 1.0)
    companded = np.log1p(mu * np.abs(x)) / np.log1p(mu)
    magnitude = np.round(companded * 127)  # 7-bit code 0..127
    return np.sign(x) * ((1 + mu) ** (magnitude / 127) - 1) / mu


def telephone(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Narrow-band telephone channel, same length as the input: 300-3400 Hz band pass,
    resample to 8 kHz, 8-bit mu-law (G.711-style) round trip, back to ``sample_rate`` and
    band pass again (the receiving side)."""
    sos = butter(
        TELEPHONE_FILTER_ORDER, TELEPHONE_BAND_HZ, btype="bandpass", fs=sample_rate, output="sos"
    )
    g = np.gcd(sample_rate, TELEPHONE_RATE)
    up, down = TELEPHONE_RATE // g, sample_rate // g
    x = sosfiltfilt(sos, audio.astype(np.float64))
    narrow = resample_poly(limit_peak(x), up, down)
    wide = resample_poly(mu_law_roundtrip(narrow), down, up)
    y = sosfiltfilt(sos, fit_length(wide, len(audio)))
    return limit_peak(y).astype(np.float32)
