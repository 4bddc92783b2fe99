"""Tests for the espeak-ng corpus synthesizer (serve_app.modelbuild.synth)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

from serve_app.modelbuild import synth as S  # noqa: E402

TEXT = "xin chào các bạn"


def _speech_job(i: int, aug: str, params: dict) -> dict:
    return {
        "kind": "speech", "id": i, "split": "train", "text": TEXT, "dialect": S.DIALECTS[i % 3],
        "variant": "f3" if i % 2 else "", "speed": 175, "pitch": 50, "gap": 0, "aug": aug,
        "aug_params": params, "lead_s": 0.2 if i == 0 else 0.0, "trail_s": 0.0,
        "noise_seed": [1, i],
    }  # fmt: skip


def _check_audio(path: Path, duration: float) -> np.ndarray:
    info = sf.info(path)
    assert info.samplerate == S.SAMPLE_RATE and info.channels == 1
    assert info.format == "FLAC" and info.subtype == "PCM_16"
    x, _ = sf.read(path, dtype="float32")
    assert len(x) % (S.SAMPLE_RATE // 2) == 0  # multiple of 0.5 s
    assert len(x) == round(duration * S.SAMPLE_RATE)
    assert np.isfinite(x).all()
    return x


def test_espeak_synth_16k() -> None:
    x = S.espeak_synth(TEXT, "vi-vn-x-south+m3", 160, 50, 2)
    assert x.dtype == np.float32 and x.ndim == 1
    assert 0.5 < len(x) / S.SAMPLE_RATE < 5
    assert np.abs(x).max() > 0.05
    assert set(S.DIALECTS) <= {"vi", "vi-vn-x-central", "vi-vn-x-south"}
    assert "" in S.available_variants() and "f1" in S.available_variants()


def test_each_augmentation_renders_and_decodes(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    augs = {
        "clean": {}, "noise": {"snr_db": 10.0, "color": "pink"}, "gain": {"gain_db": 6.0},
        "8k": {}, "mp3": {"level": 0.5}, "ogg": {"level": 0.5},
    }  # fmt: skip
    clean = None
    for i, (aug, params) in enumerate(augs.items()):
        (row,) = S.render_job(_speech_job(i, aug, params), tmp_path)
        assert row["aug"] == aug and row["text"] == TEXT and not row["empty"]
        assert row["audio"] == f"audio/{i:06d}.flac"
        assert row["duration"] >= row["speech_duration"] + row["lead_s"]
        x = _check_audio(tmp_path / row["audio"], row["duration"])
        assert np.abs(x).max() <= S.PEAK_LIMIT + 1e-3
        if aug == "clean":
            clean = x
            assert np.all(x[: int(0.19 * S.SAMPLE_RATE)] == 0)  # leading silence
    assert clean is not None


def test_band_limit_removes_high_band() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(16000).astype(np.float32) * 0.1
    y = S.band_limit_8k(x)
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / S.SAMPLE_RATE)
    assert len(y) == len(x)
    assert spec[f > 4500].sum() < 0.01 * spec[f < 3500].sum()


def test_noise_snr() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(32000) / S.SAMPLE_RATE
    x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    y = S.add_noise(x, 15.0, "white", rng)
    snr = 10 * np.log10(np.mean(x**2) / np.mean((y - x) ** 2))
    assert abs(snr - 15.0) < 0.5


def test_build_corpus_manifest_and_idempotency(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    recipe = S.build_corpus(out, n_train=34, n_test=2, seed=5, workers=2, max_words=6)
    assert not recipe["skipped"]
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    assert len(train) == 35 and sum(r["empty"] for r in train) == 1
    assert len(test) == 2 * len(S.TEST_CONDITIONS)
    assert [r["id"] for r in rows] == list(range(len(rows)))
    for r in rows:
        assert {"audio", "text", "split", "voice", "speed", "pitch", "aug", "duration"} <= set(r)
        _check_audio(out / r["audio"], r["duration"])
        if r["empty"]:
            assert r["text"] == "" and r["aug"] in ("silence", "noise")
        else:
            assert r["text"] and r["aug"] in S.AUG_WEIGHTS
            assert r["voice"].split("+")[0] in S.DIALECTS
    # test set: same utterance under every condition, same length, dialects cycle
    for utt in {r["utt"] for r in test}:
        group = [r for r in test if r["utt"] == utt]
        assert sorted(r["condition"] for r in group) == sorted(S.TEST_CONDITIONS)
        assert len({r["text"] for r in group}) == 1
        assert len({r["duration"] for r in group}) == 1
        assert len({r["voice"] for r in group}) == 1
    assert [r["dialect"] for r in test if r["condition"] == "clean"] == list(S.DIALECTS[:2])
    assert not {r["text"] for r in test} & {r["text"] for r in train}
    stored = json.loads((out / "recipe.json").read_text())
    assert stored["counts"]["rows"] == len(rows)
    assert stored["params"]["seed"] == 5
    # idempotent: same params -> skipped, files untouched
    mtime = (out / "manifest.jsonl").stat().st_mtime_ns
    again = S.build_corpus(out, n_train=34, n_test=2, seed=5, workers=1, max_words=6)
    assert again["skipped"]
    assert (out / "manifest.jsonl").stat().st_mtime_ns == mtime


def test_variant_crash_falls_back_to_plain_voice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "audio").mkdir()
    real = S.espeak_synth

    def flaky(text: str, voice: str, *args: int) -> np.ndarray:
        if "+" in voice:
            raise S.subprocess.CalledProcessError(-11, ["espeak-ng"])
        return real(text, voice, *args)

    monkeypatch.setattr(S, "espeak_synth", flaky)
    job = _speech_job(1, "clean", {})
    (row,) = S.render_job(job, tmp_path)
    assert row["voice"] == row["dialect"] and row["variant"] == ""
    assert row["voice_fallback_from"] == "f3"
    assert job["variant"] == "f3"  # the plan is not mutated
    _check_audio(tmp_path / row["audio"], row["duration"])
