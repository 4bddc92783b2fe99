"""Pure helpers over one /transcribe result: timing text, the words table, the download
files, and this session's history. No Streamlit here, so tests call them directly.

The .txt/.srt/.vtt files come from `ui/subtitles.py`, which renders them byte-for-byte as
the service's `response_format=text|srt|vtt` would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePath
from typing import Any

from ui.subtitles import RENDERERS, Segment, Transcript, Word, segments_of, words_of

MAX_HISTORY = 50  # results kept per browser session, oldest dropped first
PREVIEW_CHARS = 60
DOWNLOAD_FORMATS = ("txt", "srt", "vtt", "json")
MIME_TYPES = {
    "txt": "text/plain",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
    "json": "application/json",
}


@dataclass(frozen=True)
class Result:
    """One transcription as the service returned it, plus where the audio came from."""

    source: str  # the uploaded file's name, or "recording-<time>.wav"
    body: dict[str, Any]  # the service's JSON, kept whole for the .json download

    @property
    def text(self) -> str:
        return str(self.body.get("text") or "")

    @property
    def duration(self) -> float:
        return float(self.body.get("duration") or 0.0)

    @property
    def processing_time(self) -> float | None:
        return _float_or_none(self.body.get("processing_time"))

    @property
    def real_time_factor(self) -> float | None:
        return _float_or_none(self.body.get("real_time_factor"))

    @property
    def words(self) -> list[Word]:
        return words_of(self.body)

    @property
    def segments(self) -> list[Segment]:
        return segments_of(self.body)

    def transcript(self) -> Transcript:
        return Transcript.from_json(self.body)

    @property
    def stem(self) -> str:
        return PurePath(self.source).stem or "transcript"


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def clock(seconds: float) -> str:
    """`MM:SS.ss`, or `H:MM:SS.ss` from an hour on: short marks for reading along."""
    seconds = max(0.0, seconds)
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:05.2f}"
    return f"{minutes:02d}:{secs:05.2f}"


def timed_lines(result: Result) -> list[str]:
    """One line per segment: `[00:01.20 → 00:03.40] text`, then its words with start marks."""
    words = result.words
    lines = []
    for segment in result.segments:
        inside = [w for w in words if segment.start <= w.start < segment.end + 1e-6]
        marked = " ".join(f"[{clock(w.start)}] {w.word}" for w in inside) or segment.text
        lines.append(f"[{clock(segment.start)} → {clock(segment.end)}] {marked}")
    if not lines and words:
        lines.append(" ".join(f"[{clock(w.start)}] {w.word}" for w in words))
    return lines


def word_rows(result: Result) -> list[dict[str, Any]]:
    """The words table: one row per word with its times in seconds."""
    return [
        {
            "#": i,
            "word": w.word,
            "start (s)": round(w.start, 2),
            "end (s)": round(w.end, 2),
            "length (s)": round(w.end - w.start, 2),
        }
        for i, w in enumerate(result.words, start=1)
    ]


def format_seconds(value: float | None) -> str:
    """`2.50 s`; under a second in milliseconds (`85 ms`), as processing times often are."""
    if value is None:
        return "–"
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.0f} ms"


def format_rtf(value: float | None) -> str:
    """Real-time factor: processing time per second of audio (below 1 is faster than real time)."""
    return "–" if value is None else f"{value:.3f}"


@dataclass(frozen=True)
class Download:
    file_name: str
    mime: str
    data: bytes


def downloads(result: Result) -> list[Download]:
    """.txt, .srt, .vtt and .json of a result (the JSON is the service's answer as is)."""
    transcript = result.transcript()
    files = []
    for ext in DOWNLOAD_FORMATS:
        if ext == "json":
            text = json.dumps(result.body, ensure_ascii=False, indent=2) + "\n"
        else:
            text = RENDERERS[ext](transcript)
        files.append(Download(f"{result.stem}.{ext}", MIME_TYPES[ext], text.encode("utf-8")))
    return files


@dataclass
class History:
    """This browser session's results, newest first, at most `limit`."""

    limit: int = MAX_HISTORY
    entries: list[tuple[datetime, Result]] = field(default_factory=list)

    def add(self, result: Result, at: datetime | None = None) -> None:
        self.entries.insert(0, (at or datetime.now(), result))
        del self.entries[self.limit :]

    def clear(self) -> None:
        self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)

    def labels(self) -> list[str]:
        return [f"{at:%H:%M:%S} · {result.source}" for at, result in self.entries]

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "time": f"{at:%H:%M:%S}",
                "source": result.source,
                "duration (s)": round(result.duration, 2),
                "processing (s)": result.processing_time,
                "RTF": result.real_time_factor,
                "words": len(result.body.get("words") or []),
                "text": _preview(result.text),
            }
            for at, result in self.entries
        ]


def _preview(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
