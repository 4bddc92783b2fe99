from __future__ import annotations

import json

import pytest

from serve_app.ctc import Word
from serve_app.formats import (
    Segment,
    Transcript,
    render,
    srt_timestamp,
    to_json,
    to_srt,
    to_text,
    to_vtt,
    vtt_timestamp,
    words_to_segments,
)

WORDS = [
    Word("Xin", 0.0, 0.3),
    Word("chào.", 0.32, 0.8),
    Word("Tôi", 1.0, 1.2),
    Word("là", 1.22, 1.4),
    Word("Lan", 3725.5, 3726.04),
]


def small_transcript() -> Transcript:
    return Transcript(
        text="Xin chào. Tôi là Lan",
        language="vi",
        duration=3726.5,
        words=list(WORDS),
        segments=[
            Segment(0.0, 0.8, "Xin chào."),
            Segment(1.0, 1.4, "Tôi là"),
            Segment(3725.5, 3726.04, "Lan"),
        ],
    )


def empty_transcript() -> Transcript:
    return Transcript(text="", language="vi", duration=2.0)


def test_srt_exact() -> None:
    assert to_srt(small_transcript()) == (
        "1\n00:00:00,000 --> 00:00:00,800\nXin chào.\n"
        "\n"
        "2\n00:00:01,000 --> 00:00:01,400\nTôi là\n"
        "\n"
        "3\n01:02:05,500 --> 01:02:06,040\nLan\n"
    )


def test_vtt_exact() -> None:
    assert to_vtt(small_transcript()) == (
        "WEBVTT\n"
        "\n"
        "00:00:00.000 --> 00:00:00.800\nXin chào.\n"
        "\n"
        "00:00:01.000 --> 00:00:01.400\nTôi là\n"
        "\n"
        "01:02:05.500 --> 01:02:06.040\nLan\n"
    )


def test_empty_transcript_renders_valid_empty_files() -> None:
    transcript = empty_transcript()
    assert to_srt(transcript) == ""
    assert to_vtt(transcript) == "WEBVTT\n"
    assert to_text(transcript) == ""
    assert json.loads(to_json(transcript)) == {
        "text": "",
        "language": "vi",
        "duration": 2.0,
        "words": [],
        "segments": [],
    }


def test_timestamps_round_to_milliseconds() -> None:
    assert srt_timestamp(59.9996) == "00:01:00,000"
    assert vtt_timestamp(0.0014) == "00:00:00.001"
    assert srt_timestamp(-0.5) == "00:00:00,000"
    assert vtt_timestamp(100 * 3600.0) == "100:00:00.000"


def test_cue_text_stays_on_one_line_and_vtt_is_escaped() -> None:
    transcript = Transcript(
        text="a <b> & c",
        language="vi",
        duration=1.0,
        segments=[Segment(0.0, 1.0, "a <b>\n\n& c")],
    )
    assert to_srt(transcript).splitlines()[2] == "a <b> & c"
    assert to_vtt(transcript).splitlines()[3] == "a &lt;b&gt; &amp; c"


def test_cues_fall_back_to_words_then_text() -> None:
    from_words = Transcript(text="Xin chào.", language="vi", duration=1.0, words=WORDS[:2])
    assert to_srt(from_words) == "1\n00:00:00,000 --> 00:00:00,800\nXin chào.\n"
    text_only = Transcript(text="Xin chào", language="vi", duration=1.5)
    assert to_srt(text_only) == "1\n00:00:00,000 --> 00:00:01,500\nXin chào\n"


def test_json_and_text() -> None:
    transcript = small_transcript()
    data = json.loads(render(transcript, "json"))
    assert data == transcript.to_dict()
    assert data["words"][1] == {"word": "chào.", "start": 0.32, "end": 0.8}
    assert data["segments"][0] == {"start": 0.0, "end": 0.8, "text": "Xin chào."}
    assert "chào" in to_json(transcript)  # not \u-escaped
    assert render(transcript, "text") == "Xin chào. Tôi là Lan\n"


def test_render_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match=r"unknown output format 'docx'.*text, json, srt, vtt"):
        render(small_transcript(), "docx")


def test_words_to_segments_splits_on_sentence_end_pause_and_length() -> None:
    assert words_to_segments(WORDS) == [
        Segment(0.0, 0.8, "Xin chào."),
        Segment(1.0, 1.4, "Tôi là"),
        Segment(3725.5, 3726.04, "Lan"),
    ]
    steady = [Word(f"w{i}", i * 0.5, i * 0.5 + 0.4) for i in range(20)]
    by_duration = words_to_segments(steady, max_segment_s=2.0)
    assert [len(s.text.split()) for s in by_duration] == [4] * 5
    assert all(s.end - s.start <= 2.0 for s in by_duration)
    by_chars = words_to_segments(steady, max_segment_s=100.0, max_chars=7)
    assert [s.text for s in by_chars[:2]] == ["w0 w1", "w2 w3"]
    assert words_to_segments([]) == []
