"""`vi-asr` as a user runs it, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import CLIPS_DIR

pytestmark = pytest.mark.slow


def _vi_asr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serve_app.cli", *args], capture_output=True, text=True, timeout=300
    )


def _clips() -> list[dict]:
    return [json.loads(x) for x in (CLIPS_DIR / "manifest.jsonl").read_text().splitlines() if x]


def test_transcribe_json_lines_in_input_order(default_bundle):
    rows = _clips()
    files = [str(CLIPS_DIR / r["audio"]) for r in rows]
    proc = _vi_asr("transcribe", "--model", str(default_bundle), "--format", "json", *files)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["file"] for o in out] == files
    assert all("text" in o and "words" in o for o in out)
    assert out[-1]["text"] == "" and out[-2]["text"] == ""  # noise, silence


def test_transcribe_text_and_srt(default_bundle):
    clip = str(CLIPS_DIR / _clips()[0]["audio"])
    text = _vi_asr("transcribe", "--model", str(default_bundle), clip)
    assert text.returncode == 0 and text.stdout.strip()
    srt = _vi_asr("transcribe", "--model", str(default_bundle), "--format", "srt", clip)
    assert srt.returncode == 0
    assert srt.stdout.startswith("1\n00:00:0") and " --> " in srt.stdout


def test_bad_file_is_reported_not_fatal(default_bundle, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wav")
    good = str(CLIPS_DIR / _clips()[0]["audio"])
    proc = _vi_asr("transcribe", "--model", str(default_bundle), "--format", "json", str(bad), good)
    assert proc.returncode == 1
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert "error" in lines[0] and lines[1]["text"]
    assert "bad.wav" in proc.stderr


def test_missing_model_explains_how_to_build(tmp_path):
    proc = _vi_asr("transcribe", "--model", str(tmp_path / "none"), str(CLIPS_DIR / "silence.wav"))
    assert proc.returncode == 2
    assert "vi-asr build-model" in proc.stderr


def test_eval_writes_json(default_bundle, tmp_path):
    rows = [r for r in _clips() if r["text"]]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "\n".join(
            json.dumps({"audio": str(CLIPS_DIR / r["audio"]), "text": r["text"]}) for r in rows
        )
    )
    out = tmp_path / "res.json"
    proc = _vi_asr("eval", str(manifest), "--model", str(default_bundle), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "CER" in proc.stdout and "WER" in proc.stdout
    result = json.loads(out.read_text())
    assert result["n_utterances"] == len(rows)
    assert 0.0 <= result["cer"] <= 0.15
