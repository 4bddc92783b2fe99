"""The benchmark's test clips, built deterministically with known transcripts.

Three kinds, as the service's users send them:

    short   3-5 s    one sentence
    medium  15 s     sentences joined with short pauses, padded to exactly 15 s
    long    120 s    the same, padded to exactly 2 minutes (4+ encoder windows)

The sentences are the held-out test sentences of the default head's recipe (seed 1234, 12,000
training sentences, as tests/data/make_clips.py uses), so the head never saw them; espeak-ng
speaks them, cycling over the three dialect voices. Every clip is 16 kHz mono 16-bit WAV, its
reference text the sentences it holds joined by spaces, so CER can be computed for any
system. Building all of them takes a few seconds; same arguments, same bytes.

    python -m bench.clips --out bench/results/clips     # writes the WAVs + manifest.jsonl
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
SEED, N_TRAIN = 1234, 12000  # the default head's recipe: its test split is held out
VOICES = ("vi", "vi-vn-x-central", "vi-vn-x-south")
SPEEDS_WPM = (140, 150, 160)
PITCH = 50
EDGE_SILENCE_S = 0.3  # before the first and after the last sentence
GAP_S = 0.4  # between sentences: a quiet point where long audio may be cut into windows
PEAK = 0.8
SHORT_RANGE_S = (3.0, 5.0)
KIND_SECONDS = {"short": SHORT_RANGE_S, "medium": 15.0, "long": 120.0}
DEFAULT_COUNTS = {"short": 8, "medium": 4, "long": 2}
MAX_SKIPS = 12  # sentences tried past one that does not fit before a clip is closed

# speak(text, voice, speed) -> float32 mono audio at SAMPLE_RATE
Speaker = Callable[[str, str, int], np.ndarray]


@dataclass(frozen=True)
class Clip:
    name: str
    kind: str
    audio: np.ndarray  # float32 mono, SAMPLE_RATE
    text: str  # reference transcript
    sentences: tuple[str, ...] = ()  # what `text` joins

    @property
    def duration_s(self) -> float:
        return self.audio.size / SAMPLE_RATE

    def wav_bytes(self) -> bytes:
        buffer = io.BytesIO()
        sf.write(buffer, self.audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
        return buffer.getvalue()


def espeak_speaker(text: str, voice: str, speed: int) -> np.ndarray:
    from modelbuild.synth_render import espeak_synth

    return espeak_synth(text, voice, speed, PITCH)


def held_out_sentences(n: int) -> list[str]:
    from modelbuild.text import split_train_test

    return split_train_test(N_TRAIN, n, SEED).test


def pack(durations: Sequence[float], target_s: float, gap_s: float = GAP_S) -> list[int]:
    """Indices of the pieces (in order, skipping those that do not fit) that fill `target_s`
    seconds with `gap_s` between pieces and EDGE_SILENCE_S at both ends. Stops after
    MAX_SKIPS misfits in a row or at the end of `durations`."""
    chosen: list[int] = []
    used = 2 * EDGE_SILENCE_S
    skips = 0
    for i, d in enumerate(durations):
        need = d + (gap_s if chosen else 0.0)
        if used + need <= target_s:
            chosen.append(i)
            used += need
            skips = 0
        else:
            skips += 1
            if skips > MAX_SKIPS:
                break
    return chosen


def join(pieces: Sequence[np.ndarray], total_s: float | None = None) -> np.ndarray:
    """Pieces separated by GAP_S, EDGE_SILENCE_S around them, zero-padded to `total_s`,
    scaled to a PEAK peak."""
    gap = np.zeros(round(GAP_S * SAMPLE_RATE), np.float32)
    edge = np.zeros(round(EDGE_SILENCE_S * SAMPLE_RATE), np.float32)
    parts = [edge]
    for i, piece in enumerate(pieces):
        parts += [gap, piece] if i else [piece]
    parts.append(edge)
    audio = np.concatenate(parts).astype(np.float32)
    if total_s is not None:
        n = round(total_s * SAMPLE_RATE)
        if audio.size > n:
            raise ValueError(f"{audio.size / SAMPLE_RATE:.2f} s of audio exceed {total_s} s")
        audio = np.pad(audio, (0, n - audio.size))
    return (PEAK * audio / max(1e-6, float(np.abs(audio).max()))).astype(np.float32)


class _Stream:
    """Held-out sentences, spoken one by one on demand, each used at most once."""

    def __init__(self, sentences: Sequence[str], speak: Speaker) -> None:
        self.sentences = list(sentences)
        self.speak = speak
        self.spoken: dict[int, np.ndarray] = {}
        self.used: set[int] = set()

    def audio(self, i: int) -> np.ndarray:
        if i not in self.spoken:
            voice, speed = VOICES[i % len(VOICES)], SPEEDS_WPM[i % len(SPEEDS_WPM)]
            self.spoken[i] = self.speak(self.sentences[i], voice, speed)
        return self.spoken[i]

    def unused(self) -> Iterator[int]:
        return (i for i in range(len(self.sentences)) if i not in self.used)


def build_clips(
    counts: dict[str, int] | None = None,
    speak: Speaker = espeak_speaker,
    sentences: Sequence[str] | None = None,
) -> list[Clip]:
    """`counts[kind]` clips of each kind (DEFAULT_COUNTS by default), deterministic."""
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    if unknown := set(counts) - set(KIND_SECONDS):
        raise ValueError(f"unknown clip kinds {sorted(unknown)}")
    need = counts["short"] * 3 + counts["medium"] * 6 + counts["long"] * 40 + 20
    stream = _Stream(sentences if sentences is not None else held_out_sentences(need), speak)
    clips: list[Clip] = []
    low, high = SHORT_RANGE_S
    for i in stream.unused():
        if sum(c.kind == "short" for c in clips) >= counts["short"]:
            break
        audio = join([stream.audio(i)])
        if low <= audio.size / SAMPLE_RATE <= high:
            stream.used.add(i)
            text = stream.sentences[i]
            clips.append(Clip(f"short-{len(clips):02d}", "short", audio, text, (text,)))
    for kind in ("medium", "long"):
        target = float(KIND_SECONDS[kind])  # type: ignore[arg-type]
        for n in range(counts[kind]):
            candidates = list(stream.unused())
            durations = []
            for i in candidates:  # speak lazily: stop once the clip can hold no more
                durations.append(stream.audio(i).size / SAMPLE_RATE)
                if sum(durations) + GAP_S * len(durations) > target + 10:
                    break
            picked = [candidates[j] for j in pack(durations, target)]
            stream.used.update(picked)
            audio = join([stream.audio(i) for i in picked], total_s=target)
            sentences = tuple(stream.sentences[i] for i in picked)
            clips.append(Clip(f"{kind}-{n:02d}", kind, audio, " ".join(sentences), sentences))
    for kind, count in counts.items():
        got = sum(c.kind == kind for c in clips)
        if got < count:
            raise RuntimeError(f"only {got} of {count} {kind} clips could be built")
    return clips


def write_clips(clips: Sequence[Clip], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for clip in clips:
        (out / f"{clip.name}.wav").write_bytes(clip.wav_bytes())
        rows.append(
            {
                "audio": f"{clip.name}.wav",
                "text": clip.text,
                "kind": clip.kind,
                "duration_s": round(clip.duration_s, 3),
            }
        )
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for WAVs + manifest")
    for kind, count in DEFAULT_COUNTS.items():
        parser.add_argument(f"--{kind}", type=int, default=count, help=f"{kind} clips")
    args = parser.parse_args(argv)
    clips = build_clips({k: getattr(args, k) for k in DEFAULT_COUNTS})
    manifest = write_clips(clips, args.out)
    for clip in clips:
        print(f"{clip.name}: {clip.duration_s:6.2f} s  {clip.text[:70]}")
    print(f"wrote {manifest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
