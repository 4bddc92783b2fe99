"""The synthetic corpus's plan: every parameter of the recipe, and the deterministic job list
(voice, speed, augmentation and its drawn parameters per row) that rendering follows. All
randomness derives from the seed per row (numpy PCG64), so the plan does not depend on the
number of workers. See modelbuild/synth.py for the corpus as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modelbuild import augment as A

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
