"""Beam search with a lexicon and LM (flashlight-text + KenLM) on small synthetic emissions,
with a tiny LM built from a few sentences by the project's own ARPA writer."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from modelbuild import lm
from serve_app.decoding import (
    BOS,
    EOS,
    UNK,
    BeamSearchDecoder,
    DecoderSettings,
    _align,
    frames_to_search,
    read_lexicon,
)
from serve_app.tokenizer import CharVocabulary
from serve_app.transcriber import Decoder

VOCAB = CharVocabulary.vietnamese()
SENTENCES = ["cá ăn cỏ", "bà ăn cá", "cá bơi", "bà đi chợ", "ăn cơm"]
PEAK = 0.9  # probability of the intended symbol in a confident frame


def tiny_lm(tmp_path: Path, sentences: list[str] = SENTENCES) -> tuple[Path, Path]:
    counts = lm.Counts()
    counts.add_sentences([s.split() for s in sentences], lm.Source("test", "test", "tiny"))
    model = lm.estimate(counts)
    lexicon, arpa = tmp_path / "lexicon.txt", tmp_path / "lm.arpa"
    lm.write_lexicon(model.words, VOCAB, lexicon)
    lm.write_arpa(model, arpa)
    return lexicon, arpa


def emissions_for(frames: list[str | list[tuple[str, float]]]) -> np.ndarray:
    """Log-probs, one row per frame: a symbol ("" is blank) gets PEAK, or a list of
    (symbol, probability) pairs shares the frame; the rest is spread over all classes."""
    rows = []
    for frame in frames:
        pairs = [(frame, PEAK)] if isinstance(frame, str) else frame
        row = np.full(VOCAB.size, (1 - sum(p for _, p in pairs)) / VOCAB.size)
        for symbol, p in pairs:
            row[_symbol_id(symbol)] += p
        rows.append(np.log(row))
    return np.asarray(rows, np.float32)


def _symbol_id(symbol: str) -> int:
    if symbol == "":
        return VOCAB.blank_id
    return VOCAB.space_id if symbol == " " else VOCAB.encode(symbol)[0]


def spelled(text: str, gap: int = 2) -> list[str]:
    """Frames that spell `text`: each letter twice, blanks between letters, a space frame
    between words, `gap` blanks at both ends."""
    frames: list[str] = [""] * gap
    for i, word in enumerate(text.split()):
        if i:
            frames += [" ", ""]
        for ch in word:
            frames += [ch, ch, ""]
    return frames + [""] * gap


def test_settings_validate_with_a_message():
    with pytest.raises(ValueError, match="decoder kind"):
        DecoderSettings(kind="viterbi")
    with pytest.raises(ValueError, match="beam_width"):
        DecoderSettings(beam_width=0)
    with pytest.raises(ValueError, match="unknown decoder settings"):
        DecoderSettings.from_dict({"beam": 3})
    assert DecoderSettings().replace(kind="beam", lm_weight=1.0).lm_weight == 1.0


def test_arpa_is_normalised_and_kenlm_reads_what_was_written(tmp_path):
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    counts = lm.Counts()
    counts.add_sentences([s.split() for s in SENTENCES], lm.Source("t", "t", "t"))
    model = lm.estimate(counts)
    vocab = [*model.words, EOS]

    def prob(*history_and_word: str) -> float:
        *history, word = history_and_word
        return 10 ** model.score(history, word)

    histories = [(BOS,), *((w,) for w in model.words), (BOS, "cá"), ("bà", "ăn"), ("ăn", "bà")]
    for history in histories:
        total = sum(prob(*history, w) for w in [*vocab, UNK])
        assert total == pytest.approx(1.0, abs=1e-6), history
    assert ("cá", "ăn", "cỏ") in model.logprob and ("ăn", "bà") not in model.logprob

    arpa = tmp_path / "lm.arpa"
    lm.write_arpa(model, arpa)
    words = Dictionary([*model.words, UNK])
    kenlm = KenLM(str(arpa), words)
    state = kenlm.start(False)
    state, score = kenlm.score(state, words.get_index("cá"))
    assert score == pytest.approx(math.log10(prob(BOS, "cá")), abs=1e-5)
    state, score = kenlm.score(state, words.get_index("ăn"))
    assert score == pytest.approx(math.log10(prob(BOS, "cá", "ăn")), abs=1e-5)
    state, score = kenlm.score(state, words.get_index("cỏ"))  # a listed trigram
    assert score == pytest.approx(math.log10(prob("cá", "ăn", "cỏ")), abs=1e-5)
    _, score = kenlm.score(state, words.get_index("bà"))  # backs off twice
    assert score == pytest.approx(math.log10(prob("ăn", "cỏ", "bà")), abs=1e-5)


def test_beam_decodes_words_with_the_frames_of_their_tokens(tmp_path):
    decoder = BeamSearchDecoder(VOCAB, *tiny_lm(tmp_path), DecoderSettings(kind="beam"))
    frames = spelled("bà ăn cá")
    spans = decoder.decode(emissions_for(frames))
    assert [s.word for s in spans] == ["bà", "ăn", "cá"]
    # "bà" is b b ∅ à à: frames 2-3 and 5-6, so [2, 7).
    assert (spans[0].start_frame, spans[0].end_frame) == (2, 7)
    assert all(a.end_frame <= b.start_frame for a, b in itertools.pairwise(spans))


def test_lexicon_turns_a_misheard_tone_into_a_word_it_knows(tmp_path):
    """The acoustics favour "cà" (not in the lexicon) over "cá": greedy says cà, beam cá."""
    decoder = BeamSearchDecoder(VOCAB, *tiny_lm(tmp_path), DecoderSettings(kind="beam"))
    frames = spelled("bà ăn", gap=0)
    frames += [" ", "c", "c", "", [("à", 0.55), ("á", 0.4)], [("à", 0.55), ("á", 0.4)], "", ""]
    log_probs = emissions_for(frames)
    greedy = Decoder(VOCAB).decode_window(log_probs, 0.0, 10.0)
    assert [w.word for w in greedy] == ["bà", "ăn", "cà"]
    assert [s.word for s in decoder.decode(log_probs)] == ["bà", "ăn", "cá"]


def test_lm_weight_picks_the_word_the_text_makes_likely(tmp_path):
    """Sound slightly favours "cỏ"; the text says "bà ăn cá": the LM's bigram decides."""
    lexicon, arpa = tiny_lm(tmp_path, [*SENTENCES, *["bà ăn cá"] * 4])
    frames = spelled("bà ăn", gap=0)
    ambiguous = [("ỏ", 0.47), ("á", 0.43)]
    frames += [" ", "c", "c", "", ambiguous, ambiguous, "", ""]
    no_lm = BeamSearchDecoder(VOCAB, lexicon, arpa, DecoderSettings(kind="beam", lm_weight=0))
    with_lm = BeamSearchDecoder(VOCAB, lexicon, arpa, DecoderSettings(kind="beam", lm_weight=2))
    assert [s.word for s in no_lm.decode(emissions_for(frames))] == ["bà", "ăn", "cỏ"]
    assert [s.word for s in with_lm.decode(emissions_for(frames))] == ["bà", "ăn", "cá"]


def test_silence_and_no_frames_give_no_words(tmp_path):
    decoder = BeamSearchDecoder(VOCAB, *tiny_lm(tmp_path), DecoderSettings(kind="beam"))
    assert decoder.decode(emissions_for([""] * 50)) == []
    assert decoder.decode(np.zeros((0, VOCAB.size), np.float32)) == []
    with pytest.raises(ValueError, match="log_probs must be"):
        decoder.decode(np.zeros((4, 3), np.float32))


def test_a_word_cut_off_by_the_end_of_the_window_is_not_invented(tmp_path):
    decoder = BeamSearchDecoder(VOCAB, *tiny_lm(tmp_path), DecoderSettings(kind="beam"))
    frames = [*spelled("bà ăn", gap=0), " ", "c", "c", "ơ"]  # "cơ..." - the lexicon has "cơm" only
    words = [s.word for s in decoder.decode(emissions_for(frames))]
    assert words[:2] == ["bà", "ăn"]
    assert all(w in read_lexicon(tmp_path / "lexicon.txt") for w in words)


def test_alignment_of_the_greedy_transcript_is_the_greedy_path():
    """Forced alignment of greedy's own tokens reproduces greedy's spans on random scores
    (the argmax path is the best path that spells them)."""
    from serve_app.ctc import greedy_decode

    rng = np.random.default_rng(7)
    for _ in range(20):
        logits = rng.normal(size=(60, 8)) * 3
        logits[:, 0] += 2.0  # blank-heavy, as CTC output is
        log_probs = (logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)).astype(np.float32)
        tokens, starts, ends = greedy_decode(log_probs, 0)
        keep = tokens != 1  # id 1 plays the space: a gap, not a label
        if not keep.any():
            continue
        got_starts, got_ends = _align(log_probs, tokens[keep].astype(np.int64), 0, 1)
        assert got_starts.tolist() == starts[keep].tolist()
        assert got_ends.tolist() == ends[keep].tolist()


def test_core_decoder_switches_live_and_refuses_beam_without_an_lm(tmp_path):
    greedy_only = Decoder(VOCAB)
    with pytest.raises(ValueError, match="build-lm"):
        greedy_only.reconfigure(DecoderSettings(kind="beam"))
    assert greedy_only.settings.kind == "greedy"

    decoder = Decoder(VOCAB, lm_files=tiny_lm(tmp_path))
    log_probs = emissions_for(spelled("bà đi chợ"))
    decoder.reconfigure(DecoderSettings(kind="beam"))
    beam_words = decoder.decode_window(log_probs, 10.0, 5.0)
    decoder.reconfigure(DecoderSettings(kind="greedy"))
    greedy_words = decoder.decode_window(log_probs, 10.0, 5.0)
    # Clean emissions: both strategies agree, word times included (offset applied).
    assert beam_words == greedy_words
    assert beam_words[0].start == pytest.approx(10.0 + 2 * 0.02)


def test_merging_sure_repeats_keeps_the_first_frame_of_each_run():
    frames = ["", "", "", "b", "b", [("à", 0.6), ("a", 0.3)], [("à", 0.6), ("a", 0.3)], "", ""]
    keep = frames_to_search(emissions_for(frames), 0.9)
    # sure runs (blanks, "b b", the last blanks) keep their first frame; the unsure "à" both
    assert keep.tolist() == [True, False, False, True, False, True, True, True, False]
    assert frames_to_search(emissions_for(frames), 1.0).all()  # nothing is that sure


def test_merged_frames_give_the_same_words_and_times(tmp_path):
    lexicon, arpa = tiny_lm(tmp_path)
    every = BeamSearchDecoder(VOCAB, lexicon, arpa, DecoderSettings(kind="beam"))
    merged = BeamSearchDecoder(
        VOCAB, lexicon, arpa, DecoderSettings(kind="beam", merge_repeats_above=0.9)
    )
    frames = spelled("bà ăn", gap=6)
    frames[-4:-4] = [" ", "c", "c", "", [("à", 0.55), ("á", 0.4)], [("à", 0.55), ("á", 0.4)]]
    log_probs = emissions_for(frames)
    assert frames_to_search(log_probs, 0.9).sum() < len(frames) * 0.7
    assert merged.decode(log_probs) == every.decode(log_probs)
    assert [s.word for s in merged.decode(log_probs)] == ["bà", "ăn", "cá"]
    with pytest.raises(ValueError, match="merge_repeats_above"):
        DecoderSettings(merge_repeats_above=1.5)
