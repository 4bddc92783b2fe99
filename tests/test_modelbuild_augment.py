"""Tests for the recording-condition augmentations (modelbuild.augment)."""

from __future__ import annotations

import numpy as np
import pytest

from modelbuild import augment as A

SR = A.SAMPLE_RATE


def _speechlike(seed: int = 0, seconds: float = 2.0, level: float = 0.1) -> np.ndarray:
    """Amplitude-modulated harmonic tone with pauses: bursty like speech, deterministic."""
    t = np.arange(round(seconds * SR)) / SR
    f0 = 120 + 20 * seed
    tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 15))
    envelope = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) ** 0.5  # syllables and gaps
    x = tone * envelope
    return (level * x / np.max(np.abs(x))).astype(np.float32)


def _snr_db(clean: np.ndarray, mixed: np.ndarray) -> float:
    added = mixed.astype(np.float64) - clean
    return 10 * np.log10(A.speech_power(clean) / np.mean(added**2))


def _schroeder_rt60(h: np.ndarray, lo_db: float = -5.0, hi_db: float = -35.0) -> float:
    """RT60 from the Schroeder backward-integrated energy decay curve (T30: a line fitted
    between -5 and -35 dB, extrapolated to 60 dB)."""
    edc = np.cumsum(h[::-1].astype(np.float64) ** 2)[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    idx = np.flatnonzero((edc_db <= lo_db) & (edc_db >= hi_db))
    slope = np.polyfit(idx / SR, edc_db[idx], 1)[0]  # dB per second
    return -60.0 / slope


def _band_energy(x: np.ndarray, lo_hz: float, hi_hz: float) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spec[(f >= lo_hz) & (f < hi_hz)].sum())


# --------------------------------------------------------------------------- reverb


@pytest.mark.parametrize("rt60", [0.2, 0.5, 1.0])
@pytest.mark.parametrize("drr_db", [-3.0, 3.0, 9.0])
def test_rir_decay_matches_rt60(rt60: float, drr_db: float) -> None:
    for seed in range(4):
        h = A.synthetic_rir(np.random.default_rng(seed), rt60, SR, drr_db)
        assert np.array_equal(h, A.synthetic_rir(np.random.default_rng(seed), rt60, SR, drr_db))
        assert h.dtype == np.float32 and np.isfinite(h).all()
        assert abs(float(np.sum(h.astype(np.float64) ** 2)) - 1) < 1e-4  # unit energy
        assert np.argmax(np.abs(h)) == 0  # the direct path is the strongest tap
        assert len(h) == round(A.RIR_LENGTH_RT60 * rt60 * SR)
        measured = _schroeder_rt60(h)
        assert abs(measured / rt60 - 1) < 0.2, (seed, measured)
        direct, rest = float(h[0]) ** 2, float(np.sum(h[1:].astype(np.float64) ** 2))
        assert abs(10 * np.log10(direct / rest) - drr_db) < 0.05
        # silence between the direct path and the first reflection / tail onset
        first = round(min(A.RIR_EARLY_DELAY_S[0], A.RIR_TAIL_ONSET_S) * SR)
        assert not np.any(h[1:first])


def test_rir_longer_rt60_decays_slower() -> None:
    rng = np.random.default_rng
    short = _schroeder_rt60(A.synthetic_rir(rng(1), 0.3))
    long = _schroeder_rt60(A.synthetic_rir(rng(1), 0.9))
    assert 2.4 < long / short < 3.6
    with pytest.raises(ValueError):
        A.synthetic_rir(rng(0), 0.0)


def test_reverberate_length_tail_and_peak() -> None:
    rir = A.synthetic_rir(np.random.default_rng(3), 0.8)
    impulse = np.zeros(SR, dtype=np.float32)
    impulse[0] = 0.5
    y = A.reverberate(impulse, rir)
    tail = round(A.REVERB_MAX_TAIL_S * SR)
    assert len(y) == SR + tail  # tail kept up to the limit (the RIR is 0.96 s long)
    np.testing.assert_allclose(y[:1000], 0.5 * rir[:1000], atol=1e-6)
    short_rir = A.synthetic_rir(np.random.default_rng(3), 0.2)
    assert len(A.reverberate(impulse, short_rir)) == SR + len(short_rir) - 1
    loud = _speechlike(level=0.98)
    y = A.reverberate(loud, rir, max_tail_s=0.1)
    assert len(y) == len(loud) + round(0.1 * SR)
    assert np.max(np.abs(y)) <= A.PEAK_LIMIT + 1e-6
    # reverberation smears energy into the pauses between "syllables"
    gaps = np.sin(2 * np.pi * 2.5 * np.arange(len(loud)) / SR) < -0.5
    assert np.mean(y[: len(loud)][gaps] ** 2) > 1e3 * np.mean(loud[gaps] ** 2) + 1e-6


# --------------------------------------------------------------------------- talkers, noise


@pytest.mark.parametrize("snr_db", [0.0, 8.0, 20.0])
def test_babble_hits_snr_and_length(snr_db: float) -> None:
    speech = _speechlike(0, 3.0)
    others = [_speechlike(1, 1.3, 0.5), _speechlike(2, 0.7, 0.02), _speechlike(3, 5.0, 0.3)]
    for n_talkers in (1, 2, 3):
        y = A.babble(speech, others[:n_talkers], snr_db, np.random.default_rng(0))
        assert y.dtype == np.float32 and len(y) == len(speech)
        assert abs(_snr_db(speech, y) - snr_db) < 0.5
    # talkers are levelled: a quiet talker is not drowned by a loud one
    mix = A.babble(np.zeros(SR, np.float32) + 1e-3, others[:2], 0.0) - 1e-3
    a = A.loop_to_length(others[0], SR)
    b = A.loop_to_length(others[1], SR)
    coef = np.linalg.lstsq(np.stack([a, b], 1), mix, rcond=None)[0]
    ratio = (coef[0] ** 2 * A.speech_power(a)) / (coef[1] ** 2 * A.speech_power(b))
    assert 0.8 < ratio < 1.25
    with pytest.raises(ValueError):
        A.babble(speech, [], 5.0)


def test_babble_deterministic_and_looped() -> None:
    speech, other = _speechlike(0, 3.0), _speechlike(1, 0.5)
    a = A.babble(speech, [other], 5.0, np.random.default_rng(7))
    b = A.babble(speech, [other], 5.0, np.random.default_rng(7))
    c = A.babble(speech, [other], 5.0, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    looped = A.loop_to_length(np.arange(5.0), 12, offset=3)
    assert looped.tolist() == [3, 4, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4]


@pytest.mark.parametrize("kind", A.NOISE_KINDS)
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_colored_noise_snr(kind: str, snr_db: float) -> None:
    speech = _speechlike(0, 2.0)
    noise = A.colored_noise(np.random.default_rng(1), len(speech), kind)
    assert noise.dtype == np.float32 and len(noise) == len(speech)
    assert abs(float(np.sqrt(np.mean(noise.astype(np.float64) ** 2))) - 1) < 1e-3
    y = A.add_noise(speech, noise, snr_db)
    assert len(y) == len(speech)
    assert abs(_snr_db(speech, y) - snr_db) < 0.5
    short = A.add_noise(speech, noise[:1000], snr_db)  # looped to length
    assert len(short) == len(speech) and abs(_snr_db(speech, short) - snr_db) < 0.5


def test_noise_colors_have_their_spectral_slopes() -> None:
    rng = np.random.default_rng(2)
    n = 8 * SR
    low, high = (200.0, 400.0), (3200.0, 6400.0)  # two octaves, 4 octaves apart
    slopes = {}
    for kind in A.NOISE_KINDS:
        x = A.colored_noise(rng, n, kind)
        # power per octave: white +3 dB/oct, pink flat, brown -3 dB/oct
        ratio_db = 10 * np.log10(_band_energy(x, *high) / _band_energy(x, *low))
        slopes[kind] = ratio_db / 4
    assert abs(slopes["white"] - 3.0) < 0.5
    assert abs(slopes["pink"]) < 0.5
    assert abs(slopes["brown"] + 3.0) < 0.5
    a = A.colored_noise(np.random.default_rng(5), 1000, "pink")
    assert np.array_equal(a, A.colored_noise(np.random.default_rng(5), 1000, "pink"))
    with pytest.raises(ValueError):
        A.colored_noise(rng, 10, "blue")


def test_add_noise_is_peak_safe() -> None:
    loud = _speechlike(level=0.98)
    noise = A.colored_noise(np.random.default_rng(0), len(loud), "white")
    assert np.max(np.abs(A.add_noise(loud, noise, 0.0))) <= A.PEAK_LIMIT + 1e-6


# --------------------------------------------------------------------------- speed, level


@pytest.mark.parametrize("factor", [0.8, 0.9, 1.1, 1.25])
def test_speed_perturb_changes_length_and_pitch(factor: float) -> None:
    t = np.arange(2 * SR) / SR
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y = A.speed_perturb(x, factor)
    assert y.dtype == np.float32
    assert abs(len(y) - len(x) / factor) <= 1
    spec = np.abs(np.fft.rfft(y[SR // 4 : -SR // 4] * np.hanning(len(y) - SR // 2)))
    f = np.fft.rfftfreq(len(y) - SR // 2, 1 / SR)
    assert abs(f[np.argmax(spec)] - 440 * factor) < 3  # pitch moves with tempo
    assert np.max(np.abs(y)) <= A.PEAK_LIMIT + 1e-6
    assert np.array_equal(A.speed_perturb(x, 1.0), x)


def test_quiet_and_clip() -> None:
    x = _speechlike(level=0.8)
    q = A.quiet(x, -25.0)
    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2))
    assert abs(20 * np.log10(np.sqrt(np.mean(q.astype(np.float64) ** 2)) / rms) + 25) < 1e-3
    with pytest.raises(ValueError):
        A.quiet(x, 3.0)
    for level in (0.1, 0.3, 0.5):
        c = A.clip(x, level)
        assert np.max(np.abs(c)) <= level * 0.8 + 1e-6
        assert np.mean(np.abs(c) >= level * 0.8 - 1e-6) > 0.05  # really clipped
        small = np.abs(x) < level * 0.8
        assert np.array_equal(c[small], x[small])  # untouched below the threshold
    with pytest.raises(ValueError):
        A.clip(x, 0.0)


# --------------------------------------------------------------------------- telephone


def test_telephone_band_and_length() -> None:
    x = 0.1 * np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32)
    y = A.telephone(x, SR)
    assert y.dtype == np.float32 and len(y) == len(x)
    total = _band_energy(y, 0, SR / 2)
    assert _band_energy(y, 3600, SR / 2) < 0.01 * total  # nothing above the channel
    assert _band_energy(y, 0, 200) < 0.01 * total  # nor below it
    assert _band_energy(y, 500, 3000) > 0.8 * total
    assert np.max(np.abs(y)) <= A.PEAK_LIMIT + 1e-6


def test_mu_law_roundtrip_is_8_bit() -> None:
    x = np.linspace(-1, 1, 20001)
    y = A.mu_law_roundtrip(x)
    assert len(np.unique(y)) <= 255  # sign + 7-bit magnitude (+0 and -0 are one level)
    assert A.mu_law_roundtrip(np.zeros(3)).tolist() == [0, 0, 0]
    # companding: relative precision is kept for quiet signals, coarse steps near full scale
    small = np.abs(x) > 0.005
    assert np.max(np.abs(y - x)[small] / np.abs(x)[small]) < 0.05
    assert np.max(np.abs(y - x)) < 0.025
    assert np.max(np.abs(y - x)[np.abs(x) < 0.01]) < 3e-4
