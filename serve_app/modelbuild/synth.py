"""Synthetic Vietnamese speech corpus spoken offline by espeak-ng, with augmentation.

Usage::

    python -m serve_app.modelbuild.synth --out data/corpus --n-train 12000 --n-test 300 \\
        --n-dev 300 --seed 1234 --workers 2 [--skip-train-audio]

Layout of ``OUT``:

* ``audio/NNNNNN.flac``: 16 kHz mono int16 FLAC, one per manifest row.
* ``manifest.jsonl``: one JSON object per row (see :func:`build_corpus`).
* ``recipe.json``: every generation parameter, counts, hours and timings.

Training rows (``split == "train"``) are spoken by a random dialect voice (``vi``,
``vi-vn-x-central``, ``vi-vn-x-south``) + espeak variant, speed, pitch and word gap, then
augmented at random (:data:`AUG_WEIGHTS`, signal operations in
:mod:`serve_app.modelbuild.augment`): ``clean`` (about 25 %), ``noise`` (white/pink, SNR
10-30 dB), ``colored_noise`` (pink/brown, 0-20 dB), ``gain`` (-12..+6 dB, clip-safe), ``8k``
(band limit through 8 kHz), ``telephone`` (300-3400 Hz, 8 kHz mu-law), ``mp3`` and ``ogg``
(Vorbis) round trips, ``reverb`` (synthetic room, RT60 0.2-1.0 s), ``babble`` (1-3 other
espeak-ng talkers with other voices saying other training sentences, 0-20 dB), ``speed``
(Kaldi-style speed perturbation 0.8-1.25), ``quiet`` (-30..-20 dB) and ``clipped`` (hard
clipping at 0.1-0.5 of the peak, level restored).  A fifth of the other augmented rows are
also speed perturbed (``aug_params["speed_factor"]``).  Independently of the augmentation,
half the rows get 0.1-0.6 s of extra leading and/or trailing silence (``lead_s``/``trail_s``).
About 3 % extra training rows are "empty": digital silence (``aug == "silence"``) or pure
noise (``aug == "noise"``) with text ``""``, so the model learns to emit nothing for them.

Test rows (``split == "test"``): every test sentence is spoken once (dialect cycling over the
three voices) and stored under every :data:`TEST_CONDITIONS` value -- ``clean``, ``8k``,
``mp3`` (fixed bitrate), ``noise`` (white noise, SNR 15 dB), ``reverb`` (RT60 drawn per
utterance in 0.3-0.9 s), ``babble`` (2 talkers, 8 dB), ``tempo_slow``/``tempo_fast`` (speed
0.8/1.25), ``pink`` (pink noise, 10 dB), ``telephone``, ``quiet`` (-25 dB) and ``clipped``
(at 0.3 of the peak) -- that share ``utt``.  The first four are the same samples as in
recipe version 2 for the same seed.  Durations are equal except for the tempo conditions
and ``reverb`` (which keeps up to 0.3 s of tail).  Dev rows (``split == "dev"``, for tuning
decoders; tuning on test is not allowed) are built the same way from ``--n-dev`` sentences of
a third seed, disjoint from train and test.

``--skip-train-audio`` plans everything as usual (the test and dev sentences and row ids are
those of a full run) but writes only the test and dev rows.

Every clip is padded with silence at the end to a multiple of 0.5 s (the padding is added
before noise/codec augmentation, so noisy clips are noisy to the end).  All randomness is
derived from ``--seed`` per row, so the output does not depend on ``--workers``.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from serve_app.modelbuild import augment as A
from serve_app.modelbuild import running_text
from serve_app.modelbuild import text as textgen
from serve_app.modelbuild.augment import PEAK_LIMIT, limit_peak, speech_power

RECIPE_VERSION = 4
SAMPLE_RATE = 16000
PAD_MULTIPLE_S = 0.5
DIALECTS: tuple[str, ...] = ("vi", "vi-vn-x-central", "vi-vn-x-south")
# espeak-ng variants (voices/!v).  "" is the plain dialect voice.  Novelty variants
# (Demonic, whisper, croak, robots, ...) are left out, and so are Andrea and anika, which
# make espeak-ng 1.51 segfault on ~7 % of Vietnamese sentences.
WANTED_VARIANTS: tuple[str, ...] = (
    "", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6",
    "Alicia", "Andy", "Annie", "aunty", "belinda", "david", "ed", "edward",
    "grandma", "grandpa", "iven", "john", "linda", "max", "michel", "Nguyen", "paul", "rob",
    "steph", "steph2", "steph3", "victor",
)  # fmt: skip
SPEED_RANGE = (120, 190)  # words per minute, inclusive
PITCH_RANGE = (30, 70)  # inclusive
GAP_PROB = 0.4  # probability of a non-zero word gap
GAP_RANGE = (1, 4)  # -g units of 10 ms
AUG_WEIGHTS: dict[str, float] = {
    "clean": 0.25,
    "noise": 0.08,
    "gain": 0.05,
    "8k": 0.05,
    "mp3": 0.06,
    "ogg": 0.05,
    "reverb": 0.10,
    "babble": 0.09,
    "speed": 0.07,
    "colored_noise": 0.07,
    "quiet": 0.04,
    "clipped": 0.04,
    "telephone": 0.05,
}
# Augmentations applied to the spoken speech before silence and padding are added (they
# change its length); the others are applied to the padded clip and keep its length.
PRE_PAD_AUGS = ("speed", "reverb")
SNR_RANGE_DB = (10.0, 30.0)
GAIN_RANGE_DB = (-12.0, 6.0)
CODEC_LEVEL_RANGE = (0.0, 0.9)  # libsndfile compression_level: mp3 ~50..23 kbps at 16 kHz
SPEED_FACTOR_RANGE = A.SPEED_RANGE  # drawn log-uniform, rounded to 0.01
SPEED_COMBINE_PROB = 0.2  # other augmented rows that are also speed perturbed
RT60_RANGE_S = A.RT60_RANGE_S
DRR_RANGE_DB = (-3.0, 9.0)  # direct-to-reverberant ratio of the synthetic rooms
BABBLE_SNR_RANGE_DB = (0.0, 20.0)
BABBLE_TALKERS = (1, 3)  # inclusive
COLORED_NOISE_SNR_RANGE_DB = (0.0, 20.0)
COLORED_NOISE_KINDS: tuple[str, ...] = ("pink", "brown")
QUIET_RANGE_DB = (-30.0, -20.0)
CLIP_LEVEL_RANGE = (0.1, 0.5)  # fraction of the peak
SILENCE_PROB = 0.5
SILENCE_RANGE_S = (0.1, 0.6)
EMPTY_FRACTION = 0.03
EMPTY_DURATION_RANGE_S = (0.5, 6.0)
EMPTY_NOISE_DBFS = (-60.0, -20.0)
# The first four are unchanged since recipe version 2 (same samples for the same seed).
TEST_CONDITIONS: tuple[str, ...] = (
    "clean", "8k", "mp3", "noise", "reverb", "babble", "tempo_slow", "tempo_fast", "pink",
    "telephone", "quiet", "clipped",
)  # fmt: skip
TEST_SNR_DB = 15.0
TEST_MP3_LEVEL = 0.5  # ~28 kbps
TEST_SPEED_RANGE = (130, 180)
TEST_RT60_RANGE_S = (0.3, 0.9)  # drawn once per utterance
TEST_BABBLE_TALKERS = 2
TEST_BABBLE_SNR_DB = 8.0
TEST_TEMPO: dict[str, float] = {"tempo_slow": 0.8, "tempo_fast": 1.25}
TEST_PINK_SNR_DB = 10.0
TEST_QUIET_DB = -25.0
TEST_CLIP_LEVEL = 0.3
DEFAULT_N_DEV = 300  # command line default (build_corpus defaults to no dev split)
DEFAULT_NATURAL = (12000, 300, 300)  # natural train / test / dev sentences (command line)


# --------------------------------------------------------------------------- espeak


@functools.cache
def espeak_version() -> str:
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


@functools.cache
def available_variants() -> tuple[str, ...]:
    """The WANTED_VARIANTS that this espeak-ng installation has (file names under !v)."""
    out = subprocess.run(
        ["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True
    ).stdout
    files = {line.split()[-1].split("/", 1)[-1] for line in out.splitlines()[1:] if line.strip()}
    return tuple(v for v in WANTED_VARIANTS if v == "" or v in files)


def voice_name(dialect: str, variant: str) -> str:
    return f"{dialect}+{variant}" if variant else dialect


def espeak_synth(text: str, voice: str, speed: int, pitch: int, gap: int = 0) -> np.ndarray:
    """Speak ``text`` with espeak-ng; float32 mono at 16 kHz."""
    cmd = ["espeak-ng", "-b", "1", "-v", voice, "-s", str(speed), "-p", str(pitch)]
    if gap:
        cmd += ["-g", str(gap)]
    cmd += ["--stdout", text]
    proc = subprocess.run(cmd, capture_output=True, check=True)
    audio, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return resample(audio, sr, SAMPLE_RATE)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return x.astype(np.float32, copy=False)
    g = np.gcd(sr_in, sr_out)
    return resample_poly(x, sr_out // g, sr_in // g).astype(np.float32)


# --------------------------------------------------------------------------- signal ops


def pad_to_multiple(x: np.ndarray, multiple_s: float = PAD_MULTIPLE_S) -> np.ndarray:
    """Zero-pad at the end to a whole multiple of ``multiple_s`` seconds (at least one)."""
    m = round(multiple_s * SAMPLE_RATE)
    n = max(m, -(-len(x) // m) * m)
    return np.pad(x, (0, n - len(x))) if n > len(x) else x


def add_silence(x: np.ndarray, lead_s: float, trail_s: float) -> np.ndarray:
    return np.pad(x, (round(lead_s * SAMPLE_RATE), round(trail_s * SAMPLE_RATE)))


def make_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white, pink (1/f power) or brown noise (:func:`augment.colored_noise`)."""
    return A.colored_noise(rng, n, color)


def add_noise(x: np.ndarray, snr_db: float, color: str, rng: np.random.Generator) -> np.ndarray:
    p = speech_power(x)
    noise = make_noise(len(x), color, rng) * np.sqrt(p / 10 ** (snr_db / 10))
    return limit_peak(x + noise).astype(np.float32)


def apply_gain(x: np.ndarray, gain_db: float) -> tuple[np.ndarray, float]:
    """Apply ``gain_db``, reduced where needed so the peak stays <= PEAK_LIMIT.
    Returns the signal and the gain actually applied (dB)."""
    g = 10 ** (gain_db / 20)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak * g > PEAK_LIMIT:
        g = PEAK_LIMIT / peak
    return (x * g).astype(np.float32), 20 * np.log10(g)


def band_limit_8k(x: np.ndarray) -> np.ndarray:
    """Telephone-style band limit: 16 kHz -> 8 kHz -> 16 kHz, same length."""
    y = resample_poly(resample_poly(x, 1, 2), 2, 1)
    return limit_peak(A.fit_length(y, len(x))).astype(np.float32)


def codec_roundtrip(x: np.ndarray, fmt: str, level: float) -> np.ndarray:
    """Encode/decode through MP3 or OGG/Vorbis (libsndfile), same length as the input."""
    subtype = {"mp3": "MPEG_LAYER_III", "ogg": "VORBIS"}[fmt]
    buf = io.BytesIO()
    sf.write(
        buf, limit_peak(x), SAMPLE_RATE, format=fmt.upper(), subtype=subtype,
        compression_level=float(level),
    )  # fmt: skip
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float32")
    return limit_peak(A.fit_length(y, len(x))).astype(np.float32)


def clip_restored(x: np.ndarray, clip_level: float) -> np.ndarray:
    """Hard clipping at ``clip_level`` of the peak, then back to the original peak (an
    overdriven input stage)."""
    return limit_peak(A.clip(x, clip_level) / clip_level).astype(np.float32)


def apply_aug(
    x: np.ndarray,
    aug: str,
    params: dict[str, Any],
    seed: Sequence[int],
    others: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """Apply one augmentation (length-preserving).  ``params`` may be updated in place.
    ``others`` are the babble talkers.  The PRE_PAD_AUGS are applied by :func:`render_clip`
    before padding and are a no-op here."""
    if aug == "clean" or aug in PRE_PAD_AUGS:
        return x
    if aug == "noise":
        return add_noise(x, params["snr_db"], params["color"], np.random.default_rng(seed))
    if aug == "gain":
        y, actual = apply_gain(x, params["gain_db"])
        params["gain_db_applied"] = round(actual, 2)
        return y
    if aug == "8k":
        return band_limit_8k(x)
    if aug in ("mp3", "ogg"):
        return codec_roundtrip(x, aug, params["level"])
    if aug == "colored_noise":
        rng = np.random.default_rng(seed)
        return A.add_noise(x, A.colored_noise(rng, len(x), params["color"]), params["snr_db"])
    if aug == "babble":
        return A.babble(x, others, params["snr_db"], np.random.default_rng(seed))
    if aug == "quiet":
        return A.quiet(x, params["gain_db"])
    if aug == "clipped":
        return clip_restored(x, params["clip_level"])
    if aug == "telephone":
        return A.telephone(x, SAMPLE_RATE)
    raise ValueError(f"unknown augmentation {aug!r}")


def render_clip(
    speech: np.ndarray,
    aug: str,
    params: dict[str, Any],
    seed: Sequence[int],
    others: Sequence[np.ndarray] = (),
    lead_s: float = 0.0,
    trail_s: float = 0.0,
) -> tuple[np.ndarray, float]:
    """One clip from the spoken ``speech``: speed perturbation (``params["speed_factor"]``)
    and ``reverb`` first, then leading/trailing silence and padding, then the
    length-preserving augmentation.  Returns the clip and the speech duration in seconds
    (after speed perturbation, without silence, padding or reverb tail)."""
    if "speed_factor" in params:
        speech = A.speed_perturb(speech, params["speed_factor"])
    speech_dur = round(len(speech) / SAMPLE_RATE, 4)
    if aug == "reverb":
        rng = np.random.default_rng([*seed, 1])
        rir = A.synthetic_rir(rng, params["rt60_s"], SAMPLE_RATE, params["drr_db"])
        speech = A.reverberate(speech, rir, A.REVERB_MAX_TAIL_S, SAMPLE_RATE)
    x = pad_to_multiple(add_silence(speech, lead_s, trail_s))
    return apply_aug(x, aug, params, seed, others), speech_dur


def write_flac(path: Path, x: np.ndarray) -> None:
    sf.write(path, np.clip(x, -1.0, 32767 / 32768), SAMPLE_RATE, format="FLAC", subtype="PCM_16")


# --------------------------------------------------------------------------- planning

# Random streams: every row draws from np.random.default_rng([seed, STREAM, index]).
# 1-6 are those of recipe version 2 (so test rows keep their voices and noise).
STREAM_TRAIN, STREAM_TRAIN_NOISE, STREAM_EMPTY, STREAM_EMPTY_NOISE = 1, 2, 3, 4
STREAM_TEST, STREAM_TEST_NOISE, STREAM_TEST_EXTRA = 5, 6, 7
STREAM_DEV, STREAM_DEV_NOISE, STREAM_DEV_EXTRA = 8, 9, 10
LEGACY_TEST_CONDITIONS = TEST_CONDITIONS[:4]  # their random streams are those of version 2


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def _speed_factor(rng: np.random.Generator) -> float:
    """Log-uniform in SPEED_FACTOR_RANGE (as many slowed as sped up), rounded to 0.01."""
    lo, hi = np.log(SPEED_FACTOR_RANGE[0]), np.log(SPEED_FACTOR_RANGE[1])
    return round(float(np.exp(rng.uniform(lo, hi))), 2)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float], digits: int = 2) -> float:
    return round(float(rng.uniform(*bounds)), digits)


def _aug_params(aug: str, rng: np.random.Generator) -> dict[str, Any]:
    p: dict[str, Any] = {}
    if aug == "noise":
        p = {"snr_db": _uniform(rng, SNR_RANGE_DB), "color": str(rng.choice(["white", "pink"]))}
    elif aug == "gain":
        p = {"gain_db": _uniform(rng, GAIN_RANGE_DB)}
    elif aug in ("mp3", "ogg"):
        p = {"level": _uniform(rng, CODEC_LEVEL_RANGE, 3)}
    elif aug == "reverb":
        p = {"rt60_s": _uniform(rng, RT60_RANGE_S, 3), "drr_db": _uniform(rng, DRR_RANGE_DB)}
    elif aug == "babble":
        p = {
            "snr_db": _uniform(rng, BABBLE_SNR_RANGE_DB),
            "n_talkers": int(rng.integers(BABBLE_TALKERS[0], BABBLE_TALKERS[1] + 1)),
        }
    elif aug == "speed":
        p = {"speed_factor": _speed_factor(rng)}
    elif aug == "colored_noise":
        p = {
            "snr_db": _uniform(rng, COLORED_NOISE_SNR_RANGE_DB),
            "color": str(rng.choice(list(COLORED_NOISE_KINDS))),
        }
    elif aug == "quiet":
        p = {"gain_db": _uniform(rng, QUIET_RANGE_DB)}
    elif aug == "clipped":
        p = {"clip_level": _uniform(rng, CLIP_LEVEL_RANGE, 3)}
    if aug not in ("clean", "speed") and rng.random() < SPEED_COMBINE_PROB:
        p["speed_factor"] = _speed_factor(rng)
    return p


def _talkers(
    rng: np.random.Generator,
    n: int,
    pool: Sequence[str],
    own_text: str,
    variants: Sequence[str],
    own_variant: str,
) -> list[dict[str, Any]]:
    """``n`` babble talkers: other sentences from ``pool``, each spoken by a random dialect
    with a variant different from ``own_variant`` and from the other talkers'."""
    talkers: list[dict[str, Any]] = []
    used = {own_variant}
    for _ in range(n):
        k = int(rng.integers(len(pool)))
        while pool[k] == own_text and len(pool) > 1:
            k = int(rng.integers(len(pool)))
        free = [v for v in variants if v not in used] or list(variants)
        variant = free[int(rng.integers(len(free)))]
        used.add(variant)
        talkers.append({
            "text": pool[k], "dialect": DIALECTS[int(rng.integers(len(DIALECTS)))],
            "variant": variant,
            "speed": int(rng.integers(SPEED_RANGE[0], SPEED_RANGE[1] + 1)),
            "pitch": int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)), "gap": 0,
        })  # fmt: skip
    return talkers


def _eval_job(
    split: str, j: int, sentence: str, row: int, seed: int, variants: Sequence[str],
    pool: Sequence[str],
) -> dict[str, Any]:  # fmt: skip
    """A test or dev utterance, rendered under every TEST_CONDITIONS value."""
    plan, noise, extra = (
        (STREAM_TEST, STREAM_TEST_NOISE, STREAM_TEST_EXTRA)
        if split == "test"
        else (STREAM_DEV, STREAM_DEV_NOISE, STREAM_DEV_EXTRA)
    )
    rng = _rng(seed, plan, j)
    job: dict[str, Any] = {
        "kind": "eval", "id": row, "split": split, "text": sentence,
        "utt": f"{split}{j:05d}", "dialect": DIALECTS[j % len(DIALECTS)],
        "variant": variants[int(rng.integers(len(variants)))],
        "speed": int(rng.integers(TEST_SPEED_RANGE[0], TEST_SPEED_RANGE[1] + 1)),
        "pitch": int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
        "gap": 0, "noise_seed": [seed, noise, j],
    }  # fmt: skip
    rng = _rng(seed, extra, j)
    job["reverb"] = {
        "rt60_s": _uniform(rng, TEST_RT60_RANGE_S, 3),
        "drr_db": _uniform(rng, DRR_RANGE_DB),
    }
    job["talkers"] = _talkers(rng, TEST_BABBLE_TALKERS, pool, sentence, variants, job["variant"])
    return job


def plan_corpus(
    train: Sequence[str],
    test: Sequence[str],
    seed: int,
    variants: Sequence[str],
    dev: Sequence[str] = (),
    natural: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """Deterministic job list: one job per training row / empty row / test or dev
    utterance.  Babble talkers say training sentences (test ones when there are none).
    Sentences in ``natural`` are marked ``text_kind: natural``, the others ``composed``."""
    jobs: list[dict[str, Any]] = []
    augs = list(AUG_WEIGHTS)
    probs = np.array([AUG_WEIGHTS[a] for a in augs])
    probs = probs / probs.sum()
    pool = list(train) or [*test, *dev]
    row = 0
    for i, sentence in enumerate(train):
        rng = _rng(seed, STREAM_TRAIN, i)
        dialect = DIALECTS[int(rng.integers(len(DIALECTS)))]
        variant = variants[int(rng.integers(len(variants)))]
        aug = augs[int(rng.choice(len(augs), p=probs))]
        sil = rng.random() < SILENCE_PROB
        lead, trail = (
            (round(float(rng.uniform(*SILENCE_RANGE_S)) * float(rng.random() < 0.7), 2),
             round(float(rng.uniform(*SILENCE_RANGE_S)) * float(rng.random() < 0.7), 2))
            if sil else (0.0, 0.0)
        )  # fmt: skip
        jobs.append({
            "kind": "speech", "id": row, "split": "train", "text": sentence,
            "dialect": dialect, "variant": variant,
            "speed": int(rng.integers(SPEED_RANGE[0], SPEED_RANGE[1] + 1)),
            "pitch": int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
            "gap": int(rng.integers(GAP_RANGE[0], GAP_RANGE[1] + 1))
            if rng.random() < GAP_PROB else 0,
            "aug": aug, "aug_params": _aug_params(aug, rng),
            "lead_s": lead, "trail_s": trail, "noise_seed": [seed, STREAM_TRAIN_NOISE, i],
            "text_kind": text_kind(sentence, natural),
        })  # fmt: skip
        if aug == "babble":
            n = jobs[-1]["aug_params"]["n_talkers"]
            jobs[-1]["talkers"] = _talkers(rng, n, pool, sentence, variants, variant)
        row += 1
    n_empty = round(EMPTY_FRACTION * len(train))
    for k in range(n_empty):
        rng = _rng(seed, STREAM_EMPTY, k)
        kind = "silence" if k % 3 == 0 else "noise"  # one third silence, two thirds noise
        dur = float(rng.uniform(*EMPTY_DURATION_RANGE_S))
        params: dict[str, Any] = {}
        if kind == "noise":
            params = {
                "dbfs": round(float(rng.uniform(*EMPTY_NOISE_DBFS)), 2),
                "color": str(rng.choice(["white", "pink"])),
            }
        elif rng.random() < 0.5:
            params = {"dither_dbfs": round(float(rng.uniform(-90.0, -70.0)), 2)}
        jobs.append({
            "kind": "empty", "id": row, "split": "train", "text": "", "aug": kind,
            "aug_params": params, "duration_s": dur,
            "noise_seed": [seed, STREAM_EMPTY_NOISE, k],
        })  # fmt: skip
        row += 1
    for split, sentences in (("test", test), ("dev", dev)):
        for j, sentence in enumerate(sentences):
            jobs.append(_eval_job(split, j, sentence, row, seed, variants, pool))
            jobs[-1]["text_kind"] = text_kind(sentence, natural)
            row += len(TEST_CONDITIONS)
    return jobs


def text_kind(sentence: str, natural: frozenset[str]) -> str:
    return "natural" if sentence in natural else "composed"


def condition_aug(cond: str, job: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The augmentation kind and parameters of test/dev condition ``cond``."""
    if cond in ("clean", "8k"):
        return cond, {}
    if cond == "mp3":
        return "mp3", {"level": TEST_MP3_LEVEL}
    if cond == "noise":
        return "noise", {"snr_db": TEST_SNR_DB, "color": "white"}
    if cond == "reverb":
        return "reverb", dict(job["reverb"])
    if cond == "babble":
        return "babble", {"snr_db": TEST_BABBLE_SNR_DB, "n_talkers": len(job["talkers"])}
    if cond in TEST_TEMPO:
        return "speed", {"speed_factor": TEST_TEMPO[cond]}
    if cond == "pink":
        return "colored_noise", {"snr_db": TEST_PINK_SNR_DB, "color": "pink"}
    if cond == "telephone":
        return "telephone", {}
    if cond == "quiet":
        return "quiet", {"gain_db": TEST_QUIET_DB}
    if cond == "clipped":
        return "clipped", {"clip_level": TEST_CLIP_LEVEL}
    raise ValueError(f"unknown test condition {cond!r}")


# --------------------------------------------------------------------------- rendering


def _row(job: dict[str, Any], rid: int, audio: np.ndarray, **extra: Any) -> dict[str, Any]:
    out = {
        "id": rid,
        "audio": f"audio/{rid:06d}.flac",
        "text": job["text"],
        "split": job["split"],
        "text_kind": job.get("text_kind", "empty"),
    }
    if "dialect" in job:
        out.update(
            voice=voice_name(job["dialect"], job["variant"]),
            dialect=job["dialect"],
            variant=job["variant"],
            speed=job["speed"],
            pitch=job["pitch"],
            gap=job["gap"],
        )
    else:
        out.update(voice="", dialect="", variant="", speed=0, pitch=0, gap=0)
    if "voice_fallback_from" in job:
        out["voice_fallback_from"] = job["voice_fallback_from"]
    out.update(extra)
    out["duration"] = round(len(audio) / SAMPLE_RATE, 4)
    return out


def _speak(job: dict[str, Any]) -> np.ndarray:
    """espeak-ng for a job; if the variant crashes espeak-ng (or yields no audio), fall back
    to the plain dialect voice and record that in ``job`` (deterministic: same inputs)."""
    args = (job["text"], voice_name(job["dialect"], job["variant"]), job["speed"], job["pitch"])
    try:
        speech = espeak_synth(*args, job["gap"])
        if len(speech) < SAMPLE_RATE // 10:
            raise ValueError("espeak-ng produced no audio")
    except (subprocess.CalledProcessError, ValueError, RuntimeError):
        if not job["variant"]:
            raise
        job["voice_fallback_from"] = job["variant"]
        job["variant"] = ""
        speech = espeak_synth(job["text"], job["dialect"], job["speed"], job["pitch"], job["gap"])
    return limit_peak(speech)


def _speak_talkers(talkers: Sequence[dict[str, Any]]) -> tuple[list[np.ndarray], list[str]]:
    """Babble talkers' speech and the voices actually used (after any fallback)."""
    audio, voices = [], []
    for t in talkers:
        t = dict(t)
        audio.append(_speak(t))
        voices.append(voice_name(t["dialect"], t["variant"]))
    return audio, voices


def render_job(job: dict[str, Any], out_dir: Path) -> list[dict[str, Any]]:
    """Synthesize one job and write its FLAC file(s); returns manifest rows."""
    job = dict(job)  # _speak may record a voice fallback
    audio_dir = out_dir / "audio"
    if job["kind"] == "empty":
        n = len(pad_to_multiple(np.zeros(round(job["duration_s"] * SAMPLE_RATE))))
        rng = np.random.default_rng(job["noise_seed"])
        p = job["aug_params"]
        if job["aug"] == "noise":
            x = make_noise(n, p["color"], rng) * 10 ** (p["dbfs"] / 20)
        elif "dither_dbfs" in p:
            x = rng.standard_normal(n).astype(np.float32) * 10 ** (p["dither_dbfs"] / 20)
        else:
            x = np.zeros(n, dtype=np.float32)
        x = limit_peak(x)
        write_flac(audio_dir / f"{job['id']:06d}.flac", x)
        return [_row(job, job["id"], x, aug=job["aug"], aug_params=p, empty=True,
                     speech_duration=0.0, lead_s=0.0, trail_s=0.0)]  # fmt: skip

    speech = _speak(job)
    talkers = job.get("talkers", ())
    others, voices = _speak_talkers(talkers)
    talker_info = {"talker_voices": voices, "talker_texts": [t["text"] for t in talkers]}

    if job["kind"] == "speech":
        params = dict(job["aug_params"])
        if job["aug"] == "babble":
            params.update(talker_info)
        x, speech_dur = render_clip(
            speech, job["aug"], params, job["noise_seed"], others, job["lead_s"], job["trail_s"]
        )
        write_flac(audio_dir / f"{job['id']:06d}.flac", x)
        return [_row(job, job["id"], x, aug=job["aug"], aug_params=params, empty=False,
                     speech_duration=speech_dur, lead_s=job["lead_s"],
                     trail_s=job["trail_s"])]  # fmt: skip

    # test/dev utterance: the same speech under every condition
    rows = []
    for c, cond in enumerate(TEST_CONDITIONS):
        rid = job["id"] + c
        aug, params = condition_aug(cond, job)
        if aug == "babble":
            params.update(talker_info)
        seed = job["noise_seed"] if cond in LEGACY_TEST_CONDITIONS else [*job["noise_seed"], c]
        x, speech_dur = render_clip(speech, aug, params, seed, others)
        write_flac(audio_dir / f"{rid:06d}.flac", x)
        rows.append(_row(job, rid, x, aug=aug, aug_params=params, condition=cond,
                         utt=job["utt"], empty=False, speech_duration=speech_dur,
                         lead_s=0.0, trail_s=0.0))  # fmt: skip
    return rows


def _render_worker(args: tuple[dict[str, Any], str]) -> list[dict[str, Any]]:
    job, out = args
    return render_job(job, Path(out))


# --------------------------------------------------------------------------- driver


def corpus_params(
    n_train: int,
    n_test: int,
    seed: int,
    min_words: int = 4,
    max_words: int = 14,
    n_dev: int = 0,
    skip_train_audio: bool = False,
    natural: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Everything that determines the corpus content (compared for idempotency).
    ``natural``: how many natural sentences (serve_app/modelbuild/running_text.py) each
    split gets on top of the composed ones ({"train": n, "test": n, "dev": n})."""
    natural = natural or {"train": 0, "test": 0, "dev": 0}
    return {
        "recipe_version": RECIPE_VERSION,
        "n_train": n_train,
        "n_test": n_test,
        "n_dev": n_dev,
        "skip_train_audio": skip_train_audio,
        "seed": seed,
        "test_seed": seed + textgen.TEST_SEED_OFFSET,
        "dev_seed": seed + textgen.DEV_SEED_OFFSET,
        "min_words": min_words,
        "max_words": max_words,
        "text": {
            "wordfreq_top_n": textgen.WORDFREQ_TOP_N,
            "wordfreq_flatten": textgen.WORDFREQ_FLATTEN,
            "composed_fraction": textgen.COMPOSED_FRACTION,
            "license_note": "wordfreq: code Apache-2.0, data CC-BY-SA 4.0",
        },
        "natural": {
            **natural,
            "seed_offset": running_text.NATURAL_SEED_OFFSET,
            "syllables": [running_text.SPEECH_MIN_SYLLABLES, running_text.SPEECH_MAX_SYLLABLES],
            "sources": running_text.sources_summary() if any(natural.values()) else [],
        },
        "espeak": espeak_version(),
        "dialects": list(DIALECTS),
        "variants": list(available_variants()),
        "speed_range": list(SPEED_RANGE),
        "pitch_range": list(PITCH_RANGE),
        "gap_prob": GAP_PROB,
        "gap_range": list(GAP_RANGE),
        "sample_rate": SAMPLE_RATE,
        "pad_multiple_s": PAD_MULTIPLE_S,
        "aug_weights": AUG_WEIGHTS,
        "snr_range_db": list(SNR_RANGE_DB),
        "gain_range_db": list(GAIN_RANGE_DB),
        "codec_level_range": list(CODEC_LEVEL_RANGE),
        "speed_factor_range": list(SPEED_FACTOR_RANGE),
        "speed_combine_prob": SPEED_COMBINE_PROB,
        "rt60_range_s": list(RT60_RANGE_S),
        "drr_range_db": list(DRR_RANGE_DB),
        "reverb_max_tail_s": A.REVERB_MAX_TAIL_S,
        "babble_snr_range_db": list(BABBLE_SNR_RANGE_DB),
        "babble_talkers": list(BABBLE_TALKERS),
        "colored_noise_snr_range_db": list(COLORED_NOISE_SNR_RANGE_DB),
        "colored_noise_kinds": list(COLORED_NOISE_KINDS),
        "brown_corner_hz": A.BROWN_CORNER_HZ,
        "quiet_range_db": list(QUIET_RANGE_DB),
        "clip_level_range": list(CLIP_LEVEL_RANGE),
        "telephone_band_hz": list(A.TELEPHONE_BAND_HZ),
        "silence_prob": SILENCE_PROB,
        "silence_range_s": list(SILENCE_RANGE_S),
        "empty_fraction": EMPTY_FRACTION,
        "empty_duration_range_s": list(EMPTY_DURATION_RANGE_S),
        "empty_noise_dbfs": list(EMPTY_NOISE_DBFS),
        "test_conditions": list(TEST_CONDITIONS),
        "test_snr_db": TEST_SNR_DB,
        "test_mp3_level": TEST_MP3_LEVEL,
        "test_speed_range": list(TEST_SPEED_RANGE),
        "test_rt60_range_s": list(TEST_RT60_RANGE_S),
        "test_babble_talkers": TEST_BABBLE_TALKERS,
        "test_babble_snr_db": TEST_BABBLE_SNR_DB,
        "test_tempo": TEST_TEMPO,
        "test_pink_snr_db": TEST_PINK_SNR_DB,
        "test_quiet_db": TEST_QUIET_DB,
        "test_clip_level": TEST_CLIP_LEVEL,
    }


def _run_jobs(
    jobs: Sequence[dict[str, Any]], out: Path, workers: int, progress: bool
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    args = [(j, str(out)) for j in jobs]
    t0 = time.monotonic()

    def collect(results: Iterable[list[dict[str, Any]]]) -> None:
        for k, r in enumerate(results, 1):
            rows.extend(r)
            if progress and (k % 1000 == 0 or k == len(jobs)):
                el = time.monotonic() - t0
                print(f"  {k}/{len(jobs)} jobs, {el:.0f} s", file=sys.stderr, flush=True)

    if workers <= 1:
        collect(_render_worker(a) for a in args)
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            collect(pool.imap_unordered(_render_worker, args, chunksize=8))
    rows.sort(key=lambda r: r["id"])
    return rows


def build_corpus(
    out: str | os.PathLike[str],
    n_train: int,
    n_test: int,
    seed: int,
    workers: int = 2,
    min_words: int = 4,
    max_words: int = 14,
    force: bool = False,
    progress: bool = False,
    command: str | None = None,
    n_dev: int = 0,
    skip_train_audio: bool = False,
    natural: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Generate the corpus into ``out`` and return the recipe.

    ``n_dev`` dev sentences (a third seed, disjoint from train and test) are rendered like
    the test ones.  ``natural`` adds natural sentences per split (``{"train": n, "test": n,
    "dev": n}``, from :mod:`running_text`, split by document) after the composed ones, so
    the composed rows keep their random streams.  ``skip_train_audio`` computes the same
    text split and plan (same test/dev sentences, voices and row ids as a full run) but
    writes only the test and dev rows.

    Idempotent: when ``out/manifest.jsonl`` exists and ``out/recipe.json`` has the same
    ``params``, nothing is regenerated and the stored recipe is returned (``skipped``).

    Manifest rows: ``id, audio, text, split, voice, dialect, variant, speed, pitch, gap,
    aug, aug_params, empty, speech_duration, lead_s, trail_s, duration, text_kind``
    (composed | natural | empty) plus, for test and
    dev rows, ``condition`` (one of TEST_CONDITIONS) and ``utt`` (shared by the conditions
    of one utterance).  ``aug`` is one of AUG_WEIGHTS (for test/dev rows the kind behind the
    condition, e.g. ``speed`` for ``tempo_slow``), or silence|noise for empty rows.
    ``aug_params`` holds the drawn parameters: ``snr_db``, ``color``, ``gain_db``, ``level``,
    ``rt60_s``/``drr_db``, ``n_talkers``/``talker_voices``/``talker_texts``,
    ``speed_factor`` (also on rows combined with speed perturbation), ``clip_level``.
    ``speed`` is the espeak-ng rate (words per minute), not the perturbation factor.
    """
    out = Path(out)
    params = corpus_params(
        n_train, n_test, seed, min_words, max_words, n_dev, skip_train_audio, natural
    )
    manifest = out / "manifest.jsonl"
    recipe_path = out / "recipe.json"
    if not force and manifest.exists() and recipe_path.exists():
        try:
            old = json.loads(recipe_path.read_text())
        except json.JSONDecodeError:
            old = {}
        if old.get("params") == params:
            old["skipped"] = True
            return old

    t0 = time.monotonic()
    split = textgen.split_train_test(
        n_train, n_test, seed, params["test_seed"], min_words, max_words,
        n_dev=n_dev, dev_seed=params["dev_seed"],
    )  # fmt: skip
    nat = params["natural"]
    extra = (
        running_text.natural_split(nat["train"], nat["test"], nat["dev"], seed)
        if any(nat[k] for k in ("train", "test", "dev"))
        else {"train": [], "test": [], "dev": []}
    )
    t_text = time.monotonic() - t0
    jobs = plan_corpus(
        [*split.train, *extra["train"]],
        [*split.test, *extra["test"]],
        seed,
        params["variants"],
        [*split.dev, *extra["dev"]],
        frozenset(s for v in extra.values() for s in v),
    )
    if skip_train_audio:
        jobs = [j for j in jobs if j["kind"] == "eval"]

    for stale in (manifest, recipe_path):
        stale.unlink(missing_ok=True)
    audio_dir = out / "audio"
    if audio_dir.exists():
        shutil.rmtree(audio_dir)
    audio_dir.mkdir(parents=True)

    t1 = time.monotonic()
    rows = _run_jobs(jobs, out, workers, progress)
    t_audio = time.monotonic() - t1

    tmp = manifest.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(manifest)

    recipe = {
        "params": params,
        "text_split": split.summary(),
        "counts": corpus_stats(rows),
        "timing_s": {
            "text": round(t_text, 2),
            "audio": round(t_audio, 2),
            "total": round(time.monotonic() - t0, 2),
            "workers": workers,
            "cpu_count": os.cpu_count(),
        },
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
    }
    tmp = recipe_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(recipe, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(recipe_path)
    recipe["skipped"] = False
    return recipe


OOD_SEED_OFFSET = 31_337  # the out-of-domain test set's voices and noise use seed + this


def build_ood_corpus(
    out: str | os.PathLike[str], n: int, seed: int, workers: int = 2, progress: bool = False
) -> dict[str, Any]:
    """A test-only corpus of ``n`` out-of-domain natural sentences
    (:func:`running_text.ood_clauses`, text the LM never reads), rendered under every
    TEST_CONDITIONS value like the main test split (``text_kind: ood``). Scoring only."""
    out = Path(out)
    sentences = running_text.ood_sample(n, seed)
    _, source = running_text.ood_clauses()
    params = {"recipe_version": RECIPE_VERSION, "ood": n, "seed": seed,
              "seed_offset": OOD_SEED_OFFSET, "source": source.__dict__,
              "espeak": espeak_version(), "variants": list(available_variants()),
              "test_conditions": list(TEST_CONDITIONS)}  # fmt: skip
    recipe_path = out / "recipe.json"
    if recipe_path.exists() and json.loads(recipe_path.read_text()).get("params") == params:
        return {**json.loads(recipe_path.read_text()), "skipped": True}
    jobs = plan_corpus([], sentences, seed + OOD_SEED_OFFSET, params["variants"])
    for job in jobs:
        job["text_kind"] = "ood"
    if (out / "audio").exists():
        shutil.rmtree(out / "audio")
    (out / "audio").mkdir(parents=True)
    t0 = time.monotonic()
    rows = _run_jobs(jobs, out, workers, progress)
    with (out / "manifest.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    recipe = {"params": params, "counts": corpus_stats(rows),
              "timing_s": {"total": round(time.monotonic() - t0, 2)}}  # fmt: skip
    recipe_path.write_text(json.dumps(recipe, ensure_ascii=False, indent=2) + "\n")
    return {**recipe, "skipped": False}


def corpus_stats(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    def hours(rs: Iterable[dict[str, Any]]) -> float:
        return round(sum(r["duration"] for r in rs) / 3600, 4)

    def counts(values: Iterable[Any]) -> dict[str, int]:
        return dict(sorted(Counter(values).items()))

    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    dev = [r for r in rows if r["split"] == "dev"]
    speech = [r for r in train if not r["empty"]]
    return {
        "rows": len(rows),
        "train_rows": len(train),
        "train_speech_rows": len(speech),
        "train_empty_rows": sum(r["empty"] for r in train),
        "test_rows": len(test),
        "test_utterances": len({r["utt"] for r in test}),
        "dev_rows": len(dev),
        "dev_utterances": len({r["utt"] for r in dev}),
        "hours_total": hours(rows),
        "hours_train": hours(train),
        "hours_test": hours(test),
        "hours_dev": hours(dev),
        "hours_train_speech_unpadded": round(sum(r["speech_duration"] for r in train) / 3600, 4),
        "train_aug": counts(r["aug"] for r in speech),
        "train_speed_perturbed": sum("speed_factor" in r["aug_params"] for r in speech),
        "train_aug_with_speed": counts(
            r["aug"] for r in speech if "speed_factor" in r["aug_params"] and r["aug"] != "speed"
        ),
        "train_babble_talkers": counts(
            str(r["aug_params"]["n_talkers"]) for r in speech if r["aug"] == "babble"
        ),
        "train_empty_aug": counts(r["aug"] for r in train if r["empty"]),
        "train_dialect": counts(r["dialect"] for r in train if r["dialect"]),
        "train_text_kind": counts(r["text_kind"] for r in speech),
        "test_text_kind": counts(r["text_kind"] for r in test),
        "dev_text_kind": counts(r["text_kind"] for r in dev),
        "train_voice_fallbacks": sum("voice_fallback_from" in r for r in train),
        "test_condition": counts(r["condition"] for r in test),
        "test_dialect": counts(r["dialect"] for r in test),
        "dev_condition": counts(r["condition"] for r in dev),
        "dev_dialect": counts(r["dialect"] for r in dev),
        "duration_s": {
            "min": min((r["duration"] for r in rows), default=0.0),
            "max": max((r["duration"] for r in rows), default=0.0),
            "mean": round(sum(r["duration"] for r in rows) / max(1, len(rows)), 3),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m serve_app.modelbuild.synth",
        description="Generate the synthetic Vietnamese espeak-ng speech corpus.",
    )
    ap.add_argument("--out", required=True, help="output folder (e.g. data/corpus)")
    ap.add_argument("--n-train", type=int, default=12000, help="composed training sentences")
    ap.add_argument(
        "--n-test", type=int, default=300,
        help=f"test sentences (x{len(TEST_CONDITIONS)} conditions)",
    )  # fmt: skip
    ap.add_argument(
        "--n-dev", type=int, default=DEFAULT_N_DEV,
        help="dev (tuning) sentences from a third seed, rendered like the test ones",
    )  # fmt: skip
    ap.add_argument(
        "--skip-train-audio", action="store_true",
        help="same text split and plan, but write only the test and dev rows",
    )  # fmt: skip
    ap.add_argument(
        "--natural", type=int, nargs=3, default=list(DEFAULT_NATURAL),
        metavar=("TRAIN", "TEST", "DEV"),
        help="natural sentences (law codes, LibreOffice help; split by document) per split",
    )  # fmt: skip
    ap.add_argument(
        "--ood", type=int, default=0, metavar="N",
        help="instead: a test-only corpus of N out-of-domain natural sentences",
    )  # fmt: skip
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--min-words", type=int, default=4)
    ap.add_argument("--max-words", type=int, default=14)
    ap.add_argument("--force", action="store_true", help="regenerate even if up to date")
    a = ap.parse_args(argv)
    if a.ood:
        recipe = build_ood_corpus(a.out, a.ood, a.seed, a.workers, progress=True)
        c = recipe["counts"]
        print(f"{a.out}: {c['test_rows']} out-of-domain test rows, {c['hours_test']:.2f} h")
        return 0
    recipe = build_corpus(
        a.out, a.n_train, a.n_test, a.seed, a.workers, a.min_words, a.max_words,
        force=a.force, progress=True, n_dev=a.n_dev, skip_train_audio=a.skip_train_audio,
        natural=dict(zip(("train", "test", "dev"), a.natural, strict=True)),
        command=" ".join(["python -m serve_app.modelbuild.synth", *(argv or sys.argv[1:])]),
    )  # fmt: skip
    if recipe.get("skipped"):
        print(f"{a.out}: up to date (recipe matches), skipped", file=sys.stderr)
    c, t = recipe["counts"], recipe["timing_s"]
    print(
        f"{a.out}: {c['rows']} rows ({c['train_rows']} train incl. {c['train_empty_rows']} "
        f"empty, {c['test_rows']} test, {c['dev_rows']} dev), {c['hours_total']:.2f} h "
        f"(train {c['hours_train']:.2f} h), generated in {t['total']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
