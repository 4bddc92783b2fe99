"""Rendering the synthetic corpus: espeak-ng speaks a job, the augmentations of
modelbuild/augment.py are applied, and the FLAC files and manifest rows are written.
"""

from __future__ import annotations

import functools
import io
import subprocess
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from modelbuild import augment as A
from modelbuild.augment import PEAK_LIMIT, limit_peak, speech_power
from modelbuild.synth_plan import (
    LEGACY_TEST_CONDITIONS,
    PAD_MULTIPLE_S,
    PRE_PAD_AUGS,
    SAMPLE_RATE,
    TEST_CONDITIONS,
    WANTED_VARIANTS,
    condition_aug,
)

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
