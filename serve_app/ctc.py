"""Greedy CTC decoding with frame timing, and grouping of the emitted tokens into words.

Greedy CTC is: per-frame argmax, collapse runs of the same id, THEN drop blanks. The order
matters: a blank between two equal ids is what lets CTC spell a doubled token, so
`a ∅ a` decodes to `a a`. Dropping blanks first (as the published PhoWhisper-CTC decoding
does) merges the two into one `a`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
from numba import types
from numba.extending import overload

from serve_app.features import ENCODER_FRAMES_PER_SECOND
from serve_app.formats import Word
from serve_app.tokenizer import Vocabulary

__all__ = ["FRAME_DURATION_S", "TokenSpan", "Word", "greedy_decode", "spans_to_words"]

FRAME_DURATION_S = 1 / ENCODER_FRAMES_PER_SECOND  # one encoder frame is 20 ms
# A pause this long between two emitted tokens ends a word even when the model emitted no
# space there: the head, trained on single sentences, runs the last word of one sentence into
# the first of the next across a pause ("thưa mà" -> "thưamà"). A Vietnamese syllable (one
# written word) is never split by a pause this long. None turns the rule off.
PAUSE_WORD_BREAK_S: float | None = 0.3
_TIME_DECIMALS = 3  # word times are reported to the millisecond

_HALF_SIGN_BIT = 0x8000
_HALF_MAGNITUDE_BITS = 0x7FFF


@dataclass(frozen=True)
class TokenSpan:
    """One emission: the frames [start_frame, end_frame) where `token` was the argmax."""

    token: int
    start_frame: int
    end_frame: int


def _order_key(value):  # pragma: no cover - replaced by the numba overload below
    raise NotImplementedError("only callable from numba-compiled code")


@overload(_order_key)
def _order_key_overload(value):
    """A number that sorts like the score. numba has no float16, so half-precision scores
    arrive as their uint16 bit patterns and are mapped to integers with the same order
    (reading them in place avoids a float32 copy of a [T, 50258] array)."""
    if isinstance(value, types.Float):
        return lambda value: value
    if value == types.uint16:

        def half_bits_key(value):
            # Sign and magnitude to a signed integer: larger magnitude bits mean a larger
            # number, and -0.0 and +0.0 both map to 0 (equal, as for np.argmax).
            magnitude = np.int32(value & _HALF_MAGNITUDE_BITS)
            return -magnitude if value & _HALF_SIGN_BIT else magnitude

        return half_bits_key
    return None


@numba.njit(cache=True)
def _greedy_kernel(scores, blank_id):
    """Argmax per frame and collapse of repeats in one pass; blanks are dropped only after
    collapsing (a blank ends the run of the token before it)."""
    n_frames, n_classes = scores.shape
    tokens = np.empty(n_frames, np.int32)
    starts = np.empty(n_frames, np.int32)
    ends = np.empty(n_frames, np.int32)
    n_emitted = 0
    previous = -1
    for t in range(n_frames):
        best = 0
        best_key = _order_key(scores[t, 0])
        for v in range(1, n_classes):
            key = _order_key(scores[t, v])
            if key > best_key:  # strict: ties go to the lowest id, like np.argmax
                best_key = key
                best = v
        if best == previous:
            continue
        if previous != -1 and previous != blank_id:
            ends[n_emitted - 1] = t
        if best != blank_id:
            tokens[n_emitted] = best
            starts[n_emitted] = t
            n_emitted += 1
        previous = best
    if previous != -1 and previous != blank_id:
        ends[n_emitted - 1] = n_frames
    return tokens[:n_emitted].copy(), starts[:n_emitted].copy(), ends[:n_emitted].copy()


def _as_kernel_input(log_probs: np.ndarray) -> np.ndarray:
    if log_probs.ndim != 2:
        raise ValueError(f"log_probs must be [frames, classes], got shape {log_probs.shape}")
    if log_probs.dtype == np.float16:
        return np.ascontiguousarray(log_probs).view(np.uint16)
    return np.ascontiguousarray(log_probs, dtype=np.float32)


def greedy_decode(
    log_probs: np.ndarray, blank_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy CTC decoding of one utterance.

    `log_probs` is [T, V] float32 or float16 (other dtypes are converted to float32).
    Any monotone scores work (logits too): only the argmax is used. Rows with NaN have an
    unspecified argmax.

    Returns (tokens, start_frames, end_frames), int32 arrays of equal length: for each
    emitted token the frames [start, end) of its run of argmaxes (blanks after it are not
    counted).
    """
    scores = _as_kernel_input(log_probs)
    n_classes = scores.shape[1]
    if n_classes == 0:
        raise ValueError("log_probs has no classes")
    if not 0 <= blank_id < n_classes:
        raise ValueError(f"blank_id {blank_id} is outside the {n_classes} classes")
    return _greedy_kernel(scores, blank_id)


def token_spans(tokens: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[TokenSpan]:
    """The arrays from `greedy_decode` as `TokenSpan` objects."""
    return [
        TokenSpan(int(token), int(start), int(end))
        for token, start, end in zip(tokens, starts, ends, strict=True)
    ]


def ctc_confidence(log_probs: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per emitted token: exp of the mean over its frames of the best log-probability.

    Only meaningful when `log_probs` are log-softmax outputs. float32, one value per token.
    """
    best = np.max(log_probs, axis=1).astype(np.float64)
    # Prefix sums make each span's mean O(1) regardless of its length.
    cumulative = np.concatenate(([0.0], np.cumsum(best)))
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    lengths = np.maximum(ends - starts, 1)
    mean_log_prob = (cumulative[ends] - cumulative[starts]) / lengths
    return np.exp(mean_log_prob).astype(np.float32)


def frames_to_seconds(frame: int, time_offset_s: float = 0.0) -> float:
    return round(frame * FRAME_DURATION_S + time_offset_s, _TIME_DECIMALS)


def spans_to_words(
    tokens: Sequence[int] | np.ndarray,
    starts: Sequence[int] | np.ndarray,
    ends: Sequence[int] | np.ndarray,
    vocab: Vocabulary,
    time_offset_s: float = 0.0,
) -> list[Word]:
    """Group emitted tokens into words with the vocabulary's word boundaries.

    A word starts at its first token's start frame and ends at its last token's end frame;
    `time_offset_s` shifts everything (the chunk's position in a longer recording).
    Groups that decode to nothing (whitespace, special tokens) are skipped.
    """
    token_list = [int(token) for token in tokens]
    words: list[Word] = []
    groups = vocab.word_groups(token_list)
    if PAUSE_WORD_BREAK_S is not None:
        groups = _split_at_pauses(groups, starts, ends, PAUSE_WORD_BREAK_S / FRAME_DURATION_S)
    for group in groups:
        text = vocab.decode([token_list[i] for i in group])
        if not text:
            continue
        start = frames_to_seconds(int(starts[group[0]]), time_offset_s)
        end = frames_to_seconds(int(ends[group[-1]]), time_offset_s)
        words.append(Word(text, start, end))
    return words


def _split_at_pauses(
    groups: list[list[int]],
    starts: Sequence[int] | np.ndarray,
    ends: Sequence[int] | np.ndarray,
    min_gap_frames: float,
) -> list[list[int]]:
    """Split word groups where the blank run between two tokens lasts `min_gap_frames`."""
    out: list[list[int]] = []
    for group in groups:
        current = [group[0]]
        for previous, index in itertools.pairwise(group):
            if int(starts[index]) - int(ends[previous]) >= min_gap_frames:
                out.append(current)
                current = []
            current.append(index)
        out.append(current)
    return out
