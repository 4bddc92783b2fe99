from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import jiwer
import pytest

from serve_app.evaluation import (
    cer,
    edit_distance,
    evaluate,
    evaluate_manifest,
    normalize_text,
    read_manifest,
    wer,
)

PAIRS = [
    ("tôi đã hỏi bà ấy về chuyện học", "tôi đã hỏi ba ấy về chuyện hộc"),
    ("những người bạn cũ vẫn nhớ mãi", "những người bạn củ vẫn nhớ mãi kỷ niệm"),
    ("thủy điện sơn la", "thuỷ điện la"),
    ("xin chào", ""),
    ("hà nội mùa thu năm 2024", "hà nội mùa thu năm 2024"),
]


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Tiếng Việt rất ĐẸP, người ơi!", "tiếng việt rất đẹp người ơi"),
        (unicodedata.normalize("NFD", "Hà Nội"), "hà nội"),
        ("đẹp,người", "đẹp người"),
        ("  năm   2024 — “tốt” (lắm)…  ", "năm 2024 tốt lắm"),
        ("giá 100$ + 5% = ?", "giá 100 5"),
        ("zero\u200bwidth\tand\nnewline", "zero width and newline"),
    ],
)
def test_normalize_text(raw: str, normalised: str) -> None:
    assert normalize_text(raw) == normalised


def test_normalisation_keeps_precomposed_diacritics() -> None:
    text = normalize_text(unicodedata.normalize("NFD", "Ự Ỹ Đ"))
    assert text == "ự ỹ đ"
    assert unicodedata.is_normalized("NFC", text)


def test_edit_distance() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance("abc", "") == 3
    assert edit_distance(["một", "hai"], ["một", "ba", "hai"]) == 1


def test_cer_and_wer_match_jiwer() -> None:
    refs = [r for r, _ in PAIRS]
    hyps = [h for _, h in PAIRS]
    assert wer(refs, hyps) == pytest.approx(jiwer.wer(refs, hyps))
    assert cer(refs, hyps) == pytest.approx(jiwer.cer(refs, hyps))
    for ref, hyp in PAIRS:
        assert wer([ref], [hyp]) == pytest.approx(jiwer.wer(ref, hyp))
        assert cer([ref], [hyp]) == pytest.approx(jiwer.cer(ref, hyp))


def test_evaluate_counts_and_details() -> None:
    result = evaluate(["Xin chào!", "Một hai"], ["xin chao", "một hai ba"], keep_utterances=True)
    assert result.n_utterances == 2
    assert result.ref_words == 4 and result.ref_chars == len("xin chào") + len("một hai")
    assert result.word_errors == 2 and result.char_errors == 1 + 3
    assert result.wer == pytest.approx(2 / 4)
    assert result.utterances[0].reference == "xin chào"
    assert evaluate(["a"], ["a"]).utterances == ()


def test_evaluate_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        evaluate(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        evaluate(["!!"], ["a"])


def test_read_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "sub" / "test.jsonl"
    manifest.parent.mkdir()
    manifest.write_text(
        '{"audio": "clips/a.wav", "text": "xin chào"}\n'
        "\n"
        '{"audio": "/data/b.flac", "text": "tạm biệt", "speaker": 3}\n',
        encoding="utf-8",
    )
    assert read_manifest(manifest) == [
        (tmp_path / "sub" / "clips" / "a.wav", "xin chào"),
        (Path("/data/b.flac"), "tạm biệt"),
    ]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a.wav", "text"]', "JSON object"),
        ('{"text": "x"}', "'audio'"),
        ('{"audio": "a.wav", "text": 3}', "'text'"),
    ],
)
def test_read_manifest_names_the_bad_line(tmp_path: Path, bad_line: str, message: str) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio": "a.wav", "text": "ok"}\n' + bad_line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"m\.jsonl:2: .*{message}"):
        read_manifest(manifest)


@dataclass(frozen=True)
class _FakeTranscript:
    text: str


class _FakeTranscriber:
    """Returns the audio file's bytes as the transcript."""

    def transcribe(self, data: bytes) -> _FakeTranscript:
        return _FakeTranscript(data.decode("utf-8"))


def test_evaluate_manifest_and_summary(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_text("Xin chào", encoding="utf-8")
    (tmp_path / "b.wav").write_text("một hai", encoding="utf-8")
    manifest = tmp_path / "test.jsonl"
    rows = [{"audio": "a.wav", "text": "xin chào!"}, {"audio": "b.wav", "text": "một hai ba"}]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = evaluate_manifest(manifest, _FakeTranscriber())
    assert result.wer == pytest.approx(1 / 5)
    summary = json.loads(json.dumps(result.summary()))
    assert summary["n_utterances"] == 2 and summary["ref_words"] == 5
    assert summary["utterances"][1]["utterance_id"] == str(tmp_path / "b.wav")
    assert summary["utterances"][1]["word_errors"] == 1


def test_evaluate_manifest_names_the_failing_file(tmp_path: Path) -> None:
    manifest = tmp_path / "test.jsonl"
    manifest.write_text('{"audio": "missing.wav", "text": "x"}\n', encoding="utf-8")
    with pytest.raises(FileNotFoundError) as caught:
        evaluate_manifest(manifest, _FakeTranscriber())
    assert any("missing.wav" in note for note in caught.value.__notes__)
