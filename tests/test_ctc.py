from __future__ import annotations

import numpy as np
import pytest

from serve_app.ctc import (
    FRAME_DURATION_S,
    TokenSpan,
    Word,
    ctc_confidence,
    greedy_decode,
    spans_to_words,
    token_spans,
)
from serve_app.tokenizer import CharVocabulary

BLANK = 0
N_CLASSES = 5


def one_hot_log_probs(path: list[int], n_classes: int = N_CLASSES) -> np.ndarray:
    """Log-probs whose per-frame argmax is `path` (0.9 on the path, the rest shared)."""
    probs = np.full((len(path), n_classes), 0.1 / (n_classes - 1), dtype=np.float32)
    probs[np.arange(len(path)), path] = 0.9
    return np.log(probs)


def decode_ids(path: list[int]) -> list[int]:
    tokens, _, _ = greedy_decode(one_hot_log_probs(path), BLANK)
    return tokens.tolist()


def reference_decode(log_probs: np.ndarray, blank_id: int) -> list[tuple[int, int, int]]:
    """Plain-Python greedy CTC: argmax, collapse repeats, then drop blanks."""
    best = np.argmax(log_probs, axis=1).tolist()
    runs: list[list[int]] = []  # [token, start, end)
    for frame, token in enumerate(best):
        if runs and runs[-1][0] == token:
            runs[-1][2] = frame + 1
        else:
            runs.append([token, frame, frame + 1])
    return [(token, start, end) for token, start, end in runs if token != blank_id]


def published_phowhisper_decode(log_probs: np.ndarray, blank_id: int) -> list[int]:
    """The order used by the published PhoWhisper-CTC code: drop blanks, then collapse."""
    best = [t for t in np.argmax(log_probs, axis=1).tolist() if t != blank_id]
    return [t for i, t in enumerate(best) if i == 0 or best[i - 1] != t]


def test_blank_between_equal_tokens_keeps_both() -> None:
    path = [1, BLANK, 1]
    assert decode_ids(path) == [1, 1]
    # Dropping blanks before collapsing loses the doubled token.
    assert published_phowhisper_decode(one_hot_log_probs(path), BLANK) == [1]


def test_repeats_collapse() -> None:
    assert decode_ids([2, 2, 2, 3, 3, BLANK, BLANK, 3, 4, 4]) == [2, 3, 3, 4]


def test_blank_only_and_empty_input_emit_nothing() -> None:
    assert decode_ids([BLANK] * 7) == []
    tokens, starts, ends = greedy_decode(np.zeros((0, N_CLASSES), np.float32), BLANK)
    assert tokens.size == starts.size == ends.size == 0


def test_frame_spans_cover_the_run_only() -> None:
    path = [BLANK, 1, 1, BLANK, BLANK, 2, 3, 3, 3, BLANK, 4]
    tokens, starts, ends = greedy_decode(one_hot_log_probs(path), BLANK)
    assert token_spans(tokens, starts, ends) == [
        TokenSpan(1, 1, 3),
        TokenSpan(2, 5, 6),
        TokenSpan(3, 6, 9),
        TokenSpan(4, 10, 11),
    ]
    assert tokens.dtype == starts.dtype == ends.dtype == np.int32


def test_nonzero_blank_id() -> None:
    blank = N_CLASSES - 1
    tokens, _, _ = greedy_decode(one_hot_log_probs([0, blank, 0, 0, 2]), blank)
    assert tokens.tolist() == [0, 0, 2]


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_matches_plain_python_reference_on_random_log_probs(dtype: type) -> None:
    rng = np.random.default_rng(1234)
    for trial in range(20):
        n_frames, n_classes = int(rng.integers(1, 200)), int(rng.integers(2, 40))
        # A strong blank bias gives realistic mixtures of blanks, runs and repeats.
        logits = rng.standard_normal((n_frames, n_classes)) * 3
        logits[:, trial % n_classes] += 2.0
        log_probs = (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))).astype(dtype)
        blank = trial % n_classes
        tokens, starts, ends = greedy_decode(log_probs, blank)
        got = list(zip(tokens.tolist(), starts.tolist(), ends.tolist(), strict=True))
        assert got == reference_decode(log_probs, blank)


def test_float16_handles_negative_and_positive_values() -> None:
    scores = np.array([[-3.0, -0.5, -1.0], [2.0, -7.0, 65000.0], [-0.0, 0.0, -1e-4]])
    tokens, _, _ = greedy_decode(scores.astype(np.float16), blank_id=0)
    assert tokens.tolist() == [1, 2]


def test_non_contiguous_input_is_accepted() -> None:
    log_probs = np.asfortranarray(one_hot_log_probs([1, BLANK, 2]))
    assert greedy_decode(log_probs, BLANK)[0].tolist() == [1, 2]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="blank_id"):
        greedy_decode(one_hot_log_probs([1]), N_CLASSES)
    with pytest.raises(ValueError, match="frames, classes"):
        greedy_decode(np.zeros(4, np.float32), BLANK)


def test_confidence_is_mean_probability_of_the_span() -> None:
    path = [1, 1, BLANK, 2]
    log_probs = one_hot_log_probs(path)
    _, starts, ends = greedy_decode(log_probs, BLANK)
    np.testing.assert_allclose(ctc_confidence(log_probs, starts, ends), [0.9, 0.9], rtol=1e-5)


def test_spans_to_words_groups_on_spaces_with_times() -> None:
    vocab = CharVocabulary.vietnamese()
    b, space = vocab.blank_id, vocab.space_id
    t, o, i = vocab.encode("toi")
    # frames:  0  1  2  3  4      5  6  7  8  9      10     11 12
    path = [t, t, b, i, space, b, o, b, o, space, space, i, b]
    tokens, starts, ends = greedy_decode(one_hot_log_probs(path, vocab.size), b)
    words = spans_to_words(tokens, starts, ends, vocab, time_offset_s=10.0)
    assert FRAME_DURATION_S == 0.02
    assert words == [Word("ti", 10.0, 10.08), Word("oo", 10.12, 10.18), Word("i", 10.22, 10.24)]


def test_a_long_pause_ends_a_word_the_model_ran_on() -> None:
    """Across a pause of PAUSE_WORD_BREAK_S the head sometimes emits no space ("thưamà")."""
    import serve_app.ctc as ctc

    vocab = CharVocabulary.vietnamese()
    b = vocab.blank_id
    m, a = vocab.encode("ma")
    pause = round(ctc.PAUSE_WORD_BREAK_S / FRAME_DURATION_S)
    short_gap = [m, b, a]  # a one-frame blank inside a word is not a pause
    long_gap = [m, *[b] * pause, a]
    for path, expected in ((short_gap, ["ma"]), (long_gap, ["m", "a"])):
        tokens, starts, ends = greedy_decode(one_hot_log_probs(path, vocab.size), b)
        words = spans_to_words(tokens, starts, ends, vocab)
        assert [w.word for w in words] == expected
    tokens, starts, ends = greedy_decode(one_hot_log_probs(long_gap, vocab.size), b)
    words = spans_to_words(tokens, starts, ends, vocab)
    assert words[1].start == pytest.approx((1 + pause) * FRAME_DURATION_S)
