"""Transcript data classes and their renderings: plain text, JSON, SRT, WebVTT, and the
bodies of OpenAI's transcription API (`json`: text only; `verbose_json`: segments and,
when asked, words)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Subtitle-sized segments: a reader manages about two lines of ~42 characters in ~6 s.
DEFAULT_MAX_SEGMENT_S = 6.0
DEFAULT_MAX_GAP_S = 0.8  # a pause this long between words starts a new subtitle
DEFAULT_MAX_SEGMENT_CHARS = 84
SENTENCE_END = (".", "?", "!", "…")
_MS_PER_S = 1000
_TIME_DECIMALS = 3


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
    text: str
    language: str
    duration: float  # seconds of audio
    words: list[Word] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "language": self.language,
            "duration": round(self.duration, _TIME_DECIMALS),
            "words": [{"word": w.word, "start": w.start, "end": w.end} for w in self.words],
            "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in self.segments],
        }


def words_to_segments(
    words: Sequence[Word],
    max_segment_s: float = DEFAULT_MAX_SEGMENT_S,
    max_gap_s: float = DEFAULT_MAX_GAP_S,
    max_chars: int = DEFAULT_MAX_SEGMENT_CHARS,
) -> list[Segment]:
    """Group words into subtitle-sized segments.

    A new segment starts after a sentence-ending word, at a pause longer than `max_gap_s`,
    or when adding the word would make the segment longer than `max_segment_s` or
    `max_chars`. A single word that is too long on its own still gets its own segment.
    """
    segments: list[Segment] = []
    current: list[Word] = []
    for word in words:
        if current and _starts_new_segment(current, word, max_segment_s, max_gap_s, max_chars):
            segments.append(_segment_of(current))
            current = []
        current.append(word)
    if current:
        segments.append(_segment_of(current))
    return segments


def _starts_new_segment(
    current: list[Word], word: Word, max_segment_s: float, max_gap_s: float, max_chars: int
) -> bool:
    previous = current[-1]
    text_length = sum(len(w.word) + 1 for w in current) + len(word.word)
    return (
        previous.word.endswith(SENTENCE_END)
        or word.start - previous.end > max_gap_s
        or word.end - current[0].start > max_segment_s
        or text_length > max_chars
    )


def _segment_of(words: list[Word]) -> Segment:
    return Segment(words[0].start, words[-1].end, " ".join(w.word for w in words))


def _cues(transcript: Transcript) -> list[Segment]:
    """The segments to show as subtitles, derived from words or text when none were set."""
    if transcript.segments:
        return list(transcript.segments)
    if transcript.words:
        return words_to_segments(transcript.words)
    if transcript.text.strip():
        return [Segment(0.0, transcript.duration, transcript.text)]
    return []


def _split_ms(seconds: float) -> tuple[int, int, int, int]:
    total_ms = max(0, round(seconds * _MS_PER_S))
    total_s, ms = divmod(total_ms, _MS_PER_S)
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


def to_json(transcript: Transcript) -> str:
    # ensure_ascii=False: Vietnamese stays readable instead of \u escapes.
    return json.dumps(transcript.to_dict(), ensure_ascii=False)


def _srt_cue(index: int, cue: Segment) -> str:
    timing = f"{srt_timestamp(cue.start)} --> {srt_timestamp(cue.end)}"
    return f"{index}\n{timing}\n{_one_line(cue.text)}\n"


def _vtt_cue(cue: Segment) -> str:
    timing = f"{vtt_timestamp(cue.start)} --> {vtt_timestamp(cue.end)}"
    return f"{timing}\n{_vtt_escape(_one_line(cue.text))}\n"


def to_srt(transcript: Transcript) -> str:
    """Numbered cues separated by blank lines; an empty transcript is an empty file."""
    cues = _cues(transcript)
    return "\n".join(_srt_cue(index, cue) for index, cue in enumerate(cues, start=1))


def to_vtt(transcript: Transcript) -> str:
    """The `WEBVTT` header, then a blank line before each cue; no cues is just the header."""
    return "WEBVTT\n" + "".join("\n" + _vtt_cue(cue) for cue in _cues(transcript))


RENDERERS: dict[str, Callable[[Transcript], str]] = {
    "text": to_text,
    "json": to_json,
    "srt": to_srt,
    "vtt": to_vtt,
}
FORMATS = tuple(RENDERERS)


def render(transcript: Transcript, fmt: str) -> str:
    try:
        renderer = RENDERERS[fmt]
    except KeyError:
        raise ValueError(
            f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}"
        ) from None
    return renderer(transcript)


# OpenAI's verbose_json names the language in full.
LANGUAGE_NAMES = {"vi": "vietnamese"}


def openai_json(transcript: Transcript) -> dict[str, Any]:
    return {"text": transcript.text}


def openai_verbose_json(transcript: Transcript, with_words: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": LANGUAGE_NAMES.get(transcript.language, transcript.language),
        "duration": round(transcript.duration, _TIME_DECIMALS),
        "text": transcript.text,
        "segments": [
            {"id": i, "start": s.start, "end": s.end, "text": s.text}
            for i, s in enumerate(transcript.segments)
        ],
    }
    if with_words:
        body["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in transcript.words]
    return body
