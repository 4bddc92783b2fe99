"""Tests for the Vietnamese sentence generator (modelbuild.text)."""

from __future__ import annotations

import unicodedata
from collections import Counter

import numpy as np
import pytest

from modelbuild import text as T


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return T.generate_sentences(400, seed=7)


def test_unique_and_well_formed(sentences: list[str]) -> None:
    assert len(sentences) == 400
    assert len(set(sentences)) == 400
    for s in sentences:
        assert s == unicodedata.normalize("NFC", s.lower())
        assert s == s.strip() and "  " not in s
        words = s.split(" ")
        assert 4 <= len(words) <= 14
        for w in words:
            assert T.is_valid_syllable(w), w
            assert T.normalize_syllable(w) == w, w  # one spelling per pronunciation


def test_deterministic_and_seed_dependent(sentences: list[str]) -> None:
    assert T.generate_sentences(400, seed=7) == sentences
    assert T.generate_sentences(50, seed=7) == sentences[:50]  # prefix-stable
    assert T.generate_sentences(50, seed=8) != sentences[:50]


def test_word_count_bounds() -> None:
    for s in T.generate_sentences(100, seed=3, min_words=2, max_words=3):
        assert 2 <= len(s.split()) <= 3
    with pytest.raises(ValueError):
        T.generate_sentences(5, seed=1, min_words=5, max_words=4)


def test_all_six_tones_present(sentences: list[str]) -> None:
    tones = Counter(T.syllable_tone(w) for s in sentences for w in s.split())
    assert set(tones) == set(T.TONES)
    assert min(tones.values()) >= 20


def test_split_train_test_disjoint() -> None:
    split = T.split_train_test(500, 100, seed=11)
    assert len(split.train) == 500 and len(split.test) == 100
    assert not set(split.train) & set(split.test)
    assert len(set(split.test)) == 100
    assert split.test_seed != split.seed
    summary = split.summary()
    assert summary["test_word_types_unseen_in_train"] == len(split.test_words_unseen)
    train_words = {w for s in split.train for w in s.split()}
    assert not set(split.test_words_unseen) & train_words
    # forced overlap: a test sentence that is also in train is dropped
    forced = T.split_train_test(0, 20, seed=11, train=T.generate_sentences(5, split.test_seed))
    assert forced.test_dropped_in_train == 5
    assert not set(forced.test) & set(forced.train)
    assert len(forced.test) == 20


def test_split_dev_disjoint_and_test_unchanged() -> None:
    plain = T.split_train_test(500, 100, seed=11)
    split = T.split_train_test(500, 100, seed=11, n_dev=80)
    assert split.test == plain.test and split.train == plain.train  # dev does not move test
    assert len(split.dev) == 80 == len(set(split.dev))
    assert not set(split.dev) & (set(split.train) | set(split.test))
    assert split.dev_seed not in (split.seed, split.test_seed)
    assert split.summary()["n_dev"] == 80
    # forced overlap with train and test: those candidates are dropped
    dev_cands = T.generate_sentences(6, split.dev_seed)
    forced = T.split_train_test(
        0, 3, seed=11, train=dev_cands[:2], test_seed=split.dev_seed + 1, n_dev=10,
        dev_seed=split.dev_seed,
    )  # fmt: skip
    assert forced.dev_dropped == 2 and len(forced.dev) == 10
    assert not set(forced.dev) & set(dev_cands[:2])
    with pytest.raises(ValueError):
        T.split_train_test(5, 5, seed=11, n_dev=5, dev_seed=11)


def test_composed_syllables_respect_stop_final_rule() -> None:
    rng = np.random.default_rng(0)
    syllables = [T.compose_syllable(rng) for _ in range(3000)]
    tones_by_final: dict[str, set[str]] = {}
    for syl in syllables:
        assert T.is_valid_syllable(syl), syl
        final = T.syllable_final(syl)
        tones_by_final.setdefault(final, set()).add(T.syllable_tone(syl))
        if final in T.STOP_FINALS:
            assert T.syllable_tone(syl) in T.STOP_TONES, syl
    for f in T.STOP_FINALS:
        assert tones_by_final[f] == set(T.STOP_TONES)
    # open and sonorant-final syllables get all six tones
    for f in ("", "m", "n", "ng", "nh"):
        assert tones_by_final[f] == set(T.TONES), f
    assert set(T.syllable_tone(s) for s in syllables) == set(T.TONES)


def test_compose_rejects_sonorant_tones_on_stop_finals() -> None:
    assert T.compose("t", "at", "huyền") is None
    assert T.compose("t", "at", "ngang") is None
    assert T.compose("t", "at", "sắc") == "tát"
    assert T.compose("ng", "ươi", "huyền") == "người"
    assert T.compose("gi", "iêng", "sắc") == "giếng"
    assert T.compose("qu", "ôc", "sắc") == "quốc"
    assert T.compose("k", "a", "ngang") is None  # k only before i/e/ê/y
    assert T.compose("c", "i", "ngang") is None


@pytest.mark.parametrize(
    ("token", "ok"),
    [
        ("người", True), ("việt", True), ("quốc", True), ("gì", True), ("khuỷu", True),
        ("đ", False), ("kông", False), ("video", False), ("site", False), ("boy", False),
        ("hot", False), ("top", False), ("123", False), ("Việt", False), ("lát", True),
        ("làt", False),
    ],
)  # fmt: skip
def test_is_valid_syllable(token: str, ok: bool) -> None:
    assert T.is_valid_syllable(token) is ok


def test_normalize_tone_placement() -> None:
    assert T.normalize_syllable("hoà") == "hòa"
    assert T.normalize_syllable("thuỷ") == "thủy"
    assert T.normalize_syllable("toàn") == "toàn"
    assert T.normalize_syllable("giữ") == "giữ"


def test_wordfreq_vocab() -> None:
    words, probs = T.wordfreq_vocab()
    assert 2000 < len(words) < 5000
    assert len(set(words)) == len(words)
    assert probs.shape == (len(words),) and abs(probs.sum() - 1) < 1e-9
    assert "người" in words and "là" in words
    assert all(T.is_valid_syllable(w) for w in words)
