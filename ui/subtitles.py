"""The service's JSON transcript as .txt, .srt and .vtt files, for the download buttons.

The UI knows the service only by its JSON, so the subtitle rules of serve_app/formats.py are
repeated here rather than imported: a downloaded .srt or .vtt must be byte-for-byte what
`response_format=srt|vtt` returns, and tests/test_ui_app.py checks that on several
transcripts against the service's own renderer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Subtitle-sized segments, as the service cuts them when a transcript has words but no
# segments: a reader manages about two lines of ~42 characters in ~6 s.
MAX_SEGMENT_S = 6.0
MAX_GAP_S = 0.8  # a pause this long between words starts a new subtitle
MAX_SEGMENT_CHARS = 84
SENTENCE_END = (".", "?", "!", "…")
MS_PER_S = 1000


@dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds
    end: float  # seconds


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float  # seconds
    text: str


@dataclass(frozen=True)
class Transcript:
    """What the files are made of: the JSON's text, duration, words and segments."""

    text: str
    duration: float  # seconds of audio
    words: list[Word] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Transcript:
        return cls(
            text=str(body.get("text") or ""),
            duration=float(body.get("duration") or 0.0),
            words=words_of(body),
            segments=segments_of(body),
        )


def words_of(body: dict[str, Any]) -> list[Word]:
    return [
        Word(str(w["word"]), float(w["start"]), float(w["end"])) for w in body.get("words") or []
    ]


def segments_of(body: dict[str, Any]) -> list[Segment]:
    return [
        Segment(float(s["start"]), float(s["end"]), str(s["text"]))
        for s in body.get("segments") or []
    ]


def words_to_segments(words: Sequence[Word]) -> list[Segment]:
    """Words grouped into subtitles: a new one after a sentence end, at a long pause, or when
    the next word would make it too long in time or characters."""
    segments: list[Segment] = []
    current: list[Word] = []
    for word in words:
        if current and _starts_new_segment(current, word):
            segments.append(_segment_of(current))
            current = []
        current.append(word)
    if current:
        segments.append(_segment_of(current))
    return segments


def _starts_new_segment(current: list[Word], word: Word) -> bool:
    previous = current[-1]
    text_length = sum(len(w.word) + 1 for w in current) + len(word.word)
    return (
        previous.word.endswith(SENTENCE_END)
        or word.start - previous.end > MAX_GAP_S
        or word.end - current[0].start > MAX_SEGMENT_S
        or text_length > MAX_SEGMENT_CHARS
    )


def _segment_of(words: list[Word]) -> Segment:
    return Segment(words[0].start, words[-1].end, " ".join(w.word for w in words))


def cues(transcript: Transcript) -> list[Segment]:
    """The subtitles: the segments, else words grouped, else the whole text at once."""
    if transcript.segments:
        return list(transcript.segments)
    if transcript.words:
        return words_to_segments(transcript.words)
    if transcript.text.strip():
        return [Segment(0.0, transcript.duration, transcript.text)]
    return []


def _split_ms(seconds: float) -> tuple[int, int, int, int]:
    total_ms = max(0, round(seconds * MS_PER_S))
    total_s, ms = divmod(total_ms, MS_PER_S)
    minutes_total, secs = divmod(total_s, 60)
    hours, minutes = divmod(minutes_total, 60)
    return hours, minutes, secs, ms


def srt_timestamp(seconds: float) -> str:
    """`HH:MM:SS,mmm` (SRT uses a comma before the milliseconds)."""
    hours, minutes, secs, ms = _split_ms(seconds)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{ms:03d}"


def vtt_timestamp(seconds: float) -> str:
    """`HH:MM:SS.mmm`."""
    hours, minutes, secs, ms = _split_ms(seconds)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{ms:03d}"


def _one_line(text: str) -> str:
    # A blank line ends a cue in both SRT and VTT, so cue text is kept on one line.
    return " ".join(text.split())


def _vtt_escape(text: str) -> str:
    # VTT cue text is HTML-like: "&" and "<" start entities and tags, "-->" ends the timing.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_text(transcript: Transcript) -> str:
    return transcript.text + "\n" if transcript.text else ""


def _srt_cue(index: int, cue: Segment) -> str:
    timing = f"{srt_timestamp(cue.start)} --> {srt_timestamp(cue.end)}"
    return f"{index}\n{timing}\n{_one_line(cue.text)}\n"


def _vtt_cue(cue: Segment) -> str:
    timing = f"{vtt_timestamp(cue.start)} --> {vtt_timestamp(cue.end)}"
    return f"{timing}\n{_vtt_escape(_one_line(cue.text))}\n"


def to_srt(transcript: Transcript) -> str:
    """Numbered cues separated by blank lines; an empty transcript is an empty file."""
    return "\n".join(_srt_cue(i, cue) for i, cue in enumerate(cues(transcript), start=1))


def to_vtt(transcript: Transcript) -> str:
    """The `WEBVTT` header, then a blank line before each cue; no cues is just the header."""
    return "WEBVTT\n" + "".join("\n" + _vtt_cue(cue) for cue in cues(transcript))


# File extension -> renderer; the service calls the first one's format "text".
RENDERERS: dict[str, Callable[[Transcript], str]] = {"txt": to_text, "srt": to_srt, "vtt": to_vtt}
