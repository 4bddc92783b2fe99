"""Regenerate the committed test clips: `python tests/data/make_clips.py`.

Sentences are the first held-out test sentences of the default training recipe (seed 1234;
they are still test sentences of the shipped head's corpus, `vi-asr train-head`), so no
clip's text occurs in the head's training data. espeak-ng
speaks them; each clip uses a different dialect voice, container, sample rate and channel
count so the end-to-end tests cover the decoding paths users hit.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from modelbuild.synth_render import espeak_synth, resample
from modelbuild.text import split_train_test

OUT = Path(__file__).resolve().parent / "clips"
SEED, N_TRAIN = 1234, 12000
SILENCE_S = 0.3

# (file name, voice, speed wpm, sample rate, channels)
CLIPS = [
    ("north_16k.wav", "vi", 150, 16000, 1),
    ("central_44k_stereo.flac", "vi-vn-x-central", 160, 44100, 2),
    ("south_48k.ogg", "vi-vn-x-south", 140, 48000, 1),
    ("north_f2_22k.mp3", "vi+f2", 155, 22050, 1),
    ("south_m3_8k.wav", "vi-vn-x-south+m3", 150, 8000, 1),
]


def _write(path: Path, audio: np.ndarray, rate: int, channels: int) -> None:
    if channels > 1:
        audio = np.stack([audio] * channels, axis=1)
    if path.suffix == ".mp3":
        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
            sf.write(tmp.name, audio, rate, subtype="PCM_16")
            subprocess.run(
                ["ffmpeg", "-loglevel", "error", "-y", "-i", tmp.name, "-b:a", "64k", str(path)],
                check=True,
            )
    elif path.suffix == ".ogg":
        sf.write(path, audio, rate, format="OGG", subtype="VORBIS")
    else:
        sf.write(path, audio, rate, subtype="PCM_16")


def main() -> None:
    sentences = split_train_test(N_TRAIN, len(CLIPS), SEED).test
    pad = np.zeros(int(SILENCE_S * 16000), dtype=np.float32)
    rows = []
    for (name, voice, speed, rate, channels), text in zip(CLIPS, sentences, strict=True):
        audio = np.concatenate([pad, espeak_synth(text, voice, speed, 50), pad])
        audio = 0.8 * audio / max(1e-6, float(np.abs(audio).max()))
        _write(OUT / name, resample(audio, 16000, rate), rate, channels)
        rows.append(
            {"audio": name, "text": text, "voice": voice, "sample_rate": rate, "channels": channels}
        )
    rng = np.random.default_rng(SEED)
    sf.write(OUT / "silence.wav", np.zeros(2 * 16000, dtype=np.float32), 16000, subtype="PCM_16")
    noise = (0.05 * rng.standard_normal(3 * 16000)).astype(np.float32)
    sf.write(OUT / "noise.flac", noise, 16000, subtype="PCM_16")
    rows += [{"audio": "silence.wav", "text": ""}, {"audio": "noise.flac", "text": ""}]
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    (OUT / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    print(f"wrote {len(rows)} clips to {OUT}")


if __name__ == "__main__":
    main()
