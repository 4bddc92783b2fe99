"""Tests for the espeak-ng corpus synthesizer (modelbuild.synth)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

from modelbuild import synth as S  # noqa: E402
from modelbuild import synth_plan as P  # noqa: E402
from modelbuild import synth_render as R  # noqa: E402

TEXT = "xin chào các bạn"


def _speech_job(i: int, aug: str, params: dict) -> dict:
    return {
        "kind": "speech", "id": i, "split": "train", "text": TEXT, "dialect": P.DIALECTS[i % 3],
        "variant": "f3" if i % 2 else "", "speed": 175, "pitch": 50, "gap": 0, "aug": aug,
        "aug_params": params, "lead_s": 0.2 if i == 0 else 0.0, "trail_s": 0.0,
        "noise_seed": [1, i],
    }  # fmt: skip


def _check_audio(path: Path, duration: float) -> np.ndarray:
    info = sf.info(path)
    assert info.samplerate == P.SAMPLE_RATE and info.channels == 1
    assert info.format == "FLAC" and info.subtype == "PCM_16"
    x, _ = sf.read(path, dtype="float32")
    assert len(x) % (P.SAMPLE_RATE // 2) == 0  # multiple of 0.5 s
    assert len(x) == round(duration * P.SAMPLE_RATE)
    assert np.isfinite(x).all()
    return x


def test_espeak_synth_16k() -> None:
    x = R.espeak_synth(TEXT, "vi-vn-x-south+m3", 160, 50, 2)
    assert x.dtype == np.float32 and x.ndim == 1
    assert 0.5 < len(x) / P.SAMPLE_RATE < 5
    assert np.abs(x).max() > 0.05
    assert set(P.DIALECTS) <= {"vi", "vi-vn-x-central", "vi-vn-x-south"}
    assert "" in R.available_variants() and "f1" in R.available_variants()


TALKERS = [
    {"text": "một hai ba bốn năm", "dialect": "vi", "variant": "m1", "speed": 160, "pitch": 40,
     "gap": 0},
    {"text": "trời hôm nay đẹp quá", "dialect": "vi-vn-x-south", "variant": "f2", "speed": 150,
     "pitch": 60, "gap": 0},
]  # fmt: skip


def test_each_augmentation_renders_and_decodes(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    augs = {
        "clean": {}, "noise": {"snr_db": 10.0, "color": "pink"}, "gain": {"gain_db": 6.0},
        "8k": {}, "mp3": {"level": 0.5}, "ogg": {"level": 0.5},
        "reverb": {"rt60_s": 0.9, "drr_db": 0.0}, "babble": {"snr_db": 5.0, "n_talkers": 2},
        "speed": {"speed_factor": 0.8}, "colored_noise": {"snr_db": 5.0, "color": "brown"},
        "quiet": {"gain_db": -30.0}, "clipped": {"clip_level": 0.2}, "telephone": {},
    }  # fmt: skip
    assert set(augs) == set(P.AUG_WEIGHTS)
    rows, clips = {}, {}
    for i, (aug, params) in enumerate(augs.items()):
        job = _speech_job(i, aug, params)
        if aug == "babble":
            job["talkers"] = TALKERS
        (row,) = R.render_job(job, tmp_path)
        assert row["aug"] == aug and row["text"] == TEXT and not row["empty"]
        assert row["audio"] == f"audio/{i:06d}.flac"
        assert row["duration"] >= row["speech_duration"] + row["lead_s"]
        x = _check_audio(tmp_path / row["audio"], row["duration"])
        assert np.abs(x).max() <= R.PEAK_LIMIT + 1e-3
        rows[aug], clips[aug] = row, x
    assert np.all(clips["clean"][: int(0.19 * P.SAMPLE_RATE)] == 0)  # leading silence
    # speed 0.8: 1/0.8 times the speech of the same voice unperturbed
    same_voice = {**_speech_job(8, "clean", {}), "id": 99}
    (unperturbed,) = R.render_job(same_voice, tmp_path)
    ratio = rows["speed"]["speech_duration"] / unperturbed["speech_duration"]
    assert abs(ratio - 1.25) < 0.01
    assert rows["babble"]["aug_params"]["talker_voices"] == ["vi+m1", "vi-vn-x-south+f2"]
    assert rows["babble"]["aug_params"]["talker_texts"] == [t["text"] for t in TALKERS]
    assert np.abs(clips["quiet"]).max() < 0.04  # -30 dB of a <= 0.98 peak
    # clipped: level restored, a flat top at the peak
    assert np.mean(np.abs(clips["clipped"]) > 0.9 * np.abs(clips["clipped"]).max()) > 0.02
    # reverb rows keep a tail: energy after the speech where the clean clip is silent
    end = round((rows["reverb"]["lead_s"] + rows["reverb"]["speech_duration"]) * P.SAMPLE_RATE)
    assert np.mean(clips["reverb"][end : end + 1600] ** 2) > 1e-6


def test_speed_combined_with_another_augmentation(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    (plain,) = R.render_job(_speech_job(0, "noise", {"snr_db": 20.0, "color": "white"}), tmp_path)
    params = {"snr_db": 20.0, "color": "white", "speed_factor": 1.25}
    (fast,) = R.render_job({**_speech_job(0, "noise", params), "id": 1}, tmp_path)
    assert fast["aug"] == "noise" and fast["aug_params"]["speed_factor"] == 1.25
    assert abs(fast["speech_duration"] * 1.25 - plain["speech_duration"]) < 0.01
    _check_audio(tmp_path / fast["audio"], fast["duration"])


def test_legacy_test_conditions_follow_version_2() -> None:
    """clean/8k/mp3/noise are computed exactly as in recipe version 2 (same samples)."""
    split = S.textgen.split_train_test(8, 2, seed=3, max_words=6)
    jobs = P.plan_corpus(split.train, split.test, 3, R.available_variants())
    job = next(j for j in jobs if j["kind"] == "eval")
    assert job["noise_seed"] == [3, 6, 0]
    base = R.pad_to_multiple(R._speak(dict(job)))
    expected = {
        "clean": base,
        "8k": R.band_limit_8k(base),
        "mp3": R.codec_roundtrip(base, "mp3", P.TEST_MP3_LEVEL),
        "noise": R.add_noise(base, P.TEST_SNR_DB, "white", np.random.default_rng([3, 6, 0])),
    }
    assert P.TEST_CONDITIONS[:4] == tuple(expected)
    for cond, want in expected.items():
        aug, params = P.condition_aug(cond, job)
        got, _ = R.render_clip(R._speak(dict(job)), aug, params, job["noise_seed"])
        assert np.array_equal(got, want), cond


def test_plan_mix_and_babble_talkers() -> None:
    train = [f"câu số {i}" for i in range(2000)]
    variants = R.available_variants()
    jobs = P.plan_corpus(train, ["thử một"], 9, variants, ["thử hai"])
    assert jobs == P.plan_corpus(train, ["thử một"], 9, variants, ["thử hai"])  # deterministic
    speech = [j for j in jobs if j["kind"] == "speech"]
    share = Counter(j["aug"] for j in speech)
    assert set(share) == set(P.AUG_WEIGHTS)
    for aug, w in P.AUG_WEIGHTS.items():
        assert abs(share[aug] / len(speech) - w) < 0.03, aug
    combined = [j for j in speech if "speed_factor" in j["aug_params"] and j["aug"] != "speed"]
    augmented = [j for j in speech if j["aug"] not in ("clean", "speed")]
    assert abs(len(combined) / len(augmented) - P.SPEED_COMBINE_PROB) < 0.04
    assert not any("speed_factor" in j["aug_params"] for j in speech if j["aug"] == "clean")
    factors = [j["aug_params"]["speed_factor"] for j in speech if "speed_factor" in j["aug_params"]]
    assert min(factors) >= 0.8 and max(factors) <= 1.25
    assert 0.4 < np.mean(np.array(factors) < 1.0) < 0.6  # as many slowed as sped up
    for j in speech:
        p = j["aug_params"]
        if j["aug"] == "reverb":
            assert P.RT60_RANGE_S[0] <= p["rt60_s"] <= P.RT60_RANGE_S[1]
        if j["aug"] in ("babble", "colored_noise"):
            assert 0.0 <= p["snr_db"] <= 20.0
        if j["aug"] == "quiet":
            assert -30.0 <= p["gain_db"] <= -20.0
        if j["aug"] == "clipped":
            assert 0.1 <= p["clip_level"] <= 0.5
        if j["aug"] == "babble":
            talkers = j["talkers"]
            assert len(talkers) == p["n_talkers"] and 1 <= len(talkers) <= 3
            assert all(t["text"] in train and t["text"] != j["text"] for t in talkers)
            own_and_talkers = [j["variant"], *(t["variant"] for t in talkers)]
            assert len(set(own_and_talkers)) == len(own_and_talkers)  # all different voices
        else:
            assert "talkers" not in j
    test_job, dev_job = (j for j in jobs if j["kind"] == "eval")
    assert (test_job["split"], test_job["utt"], dev_job["split"], dev_job["utt"]) == (
        "test", "test00000", "dev", "dev00000",
    )  # fmt: skip
    assert dev_job["id"] == test_job["id"] + len(P.TEST_CONDITIONS)
    for j in (test_job, dev_job):
        assert P.TEST_RT60_RANGE_S[0] <= j["reverb"]["rt60_s"] <= P.TEST_RT60_RANGE_S[1]
        assert len(j["talkers"]) == P.TEST_BABBLE_TALKERS
        assert all(t["text"] in train for t in j["talkers"])
    assert test_job["noise_seed"] != dev_job["noise_seed"]


def test_band_limit_removes_high_band() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(16000).astype(np.float32) * 0.1
    y = R.band_limit_8k(x)
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / P.SAMPLE_RATE)
    assert len(y) == len(x)
    assert spec[f > 4500].sum() < 0.01 * spec[f < 3500].sum()


def test_noise_snr() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(32000) / P.SAMPLE_RATE
    x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    y = R.add_noise(x, 15.0, "white", rng)
    snr = 10 * np.log10(np.mean(x**2) / np.mean((y - x) ** 2))
    assert abs(snr - 15.0) < 0.5


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _samples_hash(path: Path) -> str:
    return hashlib.sha256(sf.read(path, dtype="int16")[0].tobytes()).hexdigest()


def test_build_corpus_manifest_and_idempotency(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    recipe = S.build_corpus(out, n_train=34, n_test=2, seed=5, workers=2, max_words=6, n_dev=2)
    assert not recipe["skipped"]
    rows = _manifest(out)
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    dev = [r for r in rows if r["split"] == "dev"]
    assert len(train) == 35 and sum(r["empty"] for r in train) == 1
    assert len(test) == len(dev) == 2 * len(P.TEST_CONDITIONS)
    assert [r["id"] for r in rows] == list(range(len(rows)))
    for r in rows:
        assert {"audio", "text", "split", "voice", "speed", "pitch", "aug", "duration"} <= set(r)
        _check_audio(out / r["audio"], r["duration"])
        if r["empty"]:
            assert r["text"] == "" and r["aug"] in ("silence", "noise")
        else:
            assert r["text"] and r["aug"] in P.AUG_WEIGHTS
            assert r["voice"].split("+")[0] in P.DIALECTS
    # test and dev: same utterance under every condition, dialects cycle
    for rs in (test, dev):
        for utt in {r["utt"] for r in rs}:
            group = {r["condition"]: r for r in rs if r["utt"] == utt}
            assert sorted(group) == sorted(P.TEST_CONDITIONS)
            assert len({r["text"] for r in group.values()}) == 1
            assert len({r["voice"] for r in group.values()}) == 1
            same_length = [c for c in P.TEST_CONDITIONS if c not in ("reverb", *P.TEST_TEMPO)]
            assert len({group[c]["duration"] for c in same_length}) == 1
            clean = group["clean"]
            assert group["reverb"]["duration"] >= clean["duration"]
            assert group["tempo_slow"]["duration"] >= clean["duration"]
            assert group["tempo_fast"]["duration"] <= clean["duration"]
            for c, f in P.TEST_TEMPO.items():
                want = clean["speech_duration"] / f
                assert abs(group[c]["speech_duration"] - want) < 0.01
                assert group[c]["aug"] == "speed" and group[c]["aug_params"]["speed_factor"] == f
            assert group["babble"]["aug_params"]["n_talkers"] == P.TEST_BABBLE_TALKERS
            assert group["babble"]["aug_params"]["snr_db"] == P.TEST_BABBLE_SNR_DB
            assert 0.3 <= group["reverb"]["aug_params"]["rt60_s"] <= 0.9
        assert [r["dialect"] for r in rs if r["condition"] == "clean"] == list(P.DIALECTS[:2])
        assert all(r["utt"].startswith(rs[0]["split"]) for r in rs)
    train_texts, test_texts = {r["text"] for r in train}, {r["text"] for r in test}
    dev_texts = {r["text"] for r in dev}
    assert len(dev_texts) == 2
    assert not test_texts & train_texts and not dev_texts & (train_texts | test_texts)
    stored = json.loads((out / "recipe.json").read_text())
    assert stored["counts"]["rows"] == len(rows)
    assert stored["counts"]["dev_condition"] == {c: 2 for c in sorted(P.TEST_CONDITIONS)}
    assert stored["counts"]["train_aug"] == dict(
        sorted(Counter(r["aug"] for r in train if not r["empty"]).items())
    )
    assert stored["params"]["seed"] == 5 and stored["params"]["recipe_version"] == 4
    assert stored["text_split"]["n_dev"] == 2
    # idempotent: same params -> skipped, files untouched
    mtime = (out / "manifest.jsonl").stat().st_mtime_ns
    again = S.build_corpus(out, n_train=34, n_test=2, seed=5, workers=1, max_words=6, n_dev=2)
    assert again["skipped"]
    assert (out / "manifest.jsonl").stat().st_mtime_ns == mtime

    # --skip-train-audio: the same test/dev rows (ids, text, samples), no training audio
    skip = tmp_path / "skip"
    recipe = S.build_corpus(
        skip, n_train=34, n_test=2, seed=5, workers=1, max_words=6, n_dev=2,
        skip_train_audio=True,
    )  # fmt: skip
    assert recipe["counts"]["train_rows"] == 0 and recipe["params"]["skip_train_audio"]
    assert recipe["text_split"] == stored["text_split"]
    skip_rows = _manifest(skip)
    assert skip_rows == test + dev
    assert len(list((skip / "audio").iterdir())) == len(skip_rows)
    for r in skip_rows[:: len(P.TEST_CONDITIONS) // 3]:
        assert _samples_hash(skip / r["audio"]) == _samples_hash(out / r["audio"])


def test_variant_crash_falls_back_to_plain_voice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "audio").mkdir()
    real = R.espeak_synth

    def flaky(text: str, voice: str, *args: int) -> np.ndarray:
        if "+" in voice:
            raise R.subprocess.CalledProcessError(-11, ["espeak-ng"])
        return real(text, voice, *args)

    monkeypatch.setattr(R, "espeak_synth", flaky)
    job = _speech_job(1, "clean", {})
    (row,) = R.render_job(job, tmp_path)
    assert row["voice"] == row["dialect"] and row["variant"] == ""
    assert row["voice_fallback_from"] == "f3"
    assert job["variant"] == "f3"  # the plan is not mutated
    _check_audio(tmp_path / row["audio"], row["duration"])
