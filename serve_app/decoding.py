"""CTC decoding strategies: greedy, and beam search with a lexicon and an n-gram LM.

Beam search is flashlight-text's `LexiconDecoder` (C++, KenLM built in): hypotheses may only
spell words of the lexicon (here: Vietnamese syllables, see modelbuild/lm.py), each
completed word is scored by the language model, and the score of a hypothesis is

    sum of CTC log-probs (ln) + lm_weight * log10 LM(words) + word_score * len(words)

(KenLM scores are log10: a weight of 2.3 would count the LM like the acoustic ln-probs).

Word timestamps come from the CTC alignment of the best hypothesis: the most likely frame
path that spells exactly its words (Viterbi, `_align`), with the space symbol counted as a
blank between words. Where the beam's words equal greedy's, that path is greedy's argmax path,
so the times are the same; a word spans its first to its last emitted token's frames.
(flashlight's own hypothesis path is not used: it records the repeated frames of a token as
blanks, which would end words a frame early.)

`merge_repeats_above` thins the frames the beam reads: CTC output is mostly runs of one
symbol (blank most of all) that the model is sure of; all but the first frame of such a run
are dropped before the search, so the beam reads about half the frames. On dev
(`modelbuild.tune_decoder --every 4`, 900 rows, width 16) 0.9 kept about half the frames, cut
decoding from 1.0 to 0.68 CPU-ms per audio-second and lowered CER (14.3 -> 13.9%): fewer
frames give fewer chances to insert an unlikely symbol.
The alignment for word times still reads every frame.
A bundle without an LM decodes greedily; `DecoderSettings` are read from the bundle's
config.json (`decoder.settings`) and can be changed live in the Decoder's `user_config`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numba
import numpy as np

from serve_app.tokenizer import CharVocabulary

LEXICON_FILE = "lexicon.txt"
LM_FILE = "lm.arpa"
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
KINDS = ("greedy", "beam")
MAX_BEAM_WIDTH = 1024


@dataclass(frozen=True)
class DecoderSettings:
    """How the Decoder turns log-probs into words. Validated on construction."""

    kind: str = "greedy"
    beam_width: int = 16  # hypotheses kept per frame
    token_beam: int = 8  # best tokens tried per frame and hypothesis
    beam_threshold: float = 20.0  # drop hypotheses this far (nats) below the best
    lm_weight: float = 0.5  # weight of the LM's log10 score
    word_score: float = 0.0  # added per word: > 0 favours more, shorter words
    # Merge a frame into the one before it when both have the same most likely symbol (blank
    # included) with at least this probability: the beam then reads about half the frames
    # (CTC reads such a run as one symbol; what it drops is the < 1 - p left to others).
    # 0 keeps every frame.
    merge_repeats_above: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"decoder kind must be one of {KINDS}, got {self.kind!r}")
        if not 1 <= self.beam_width <= MAX_BEAM_WIDTH:
            raise ValueError(f"beam_width must be in 1..{MAX_BEAM_WIDTH}, got {self.beam_width}")
        if not 1 <= self.token_beam <= MAX_BEAM_WIDTH:
            raise ValueError(f"token_beam must be in 1..{MAX_BEAM_WIDTH}, got {self.token_beam}")
        if not self.beam_threshold > 0:
            raise ValueError(f"beam_threshold must be > 0, got {self.beam_threshold}")
        if not 0 <= self.lm_weight <= 10:
            raise ValueError(f"lm_weight must be in [0, 10], got {self.lm_weight}")
        if not -20 <= self.word_score <= 20:
            raise ValueError(f"word_score must be in [-20, 20], got {self.word_score}")
        if not 0 <= self.merge_repeats_above <= 1:
            raise ValueError(
                f"merge_repeats_above must be in [0, 1], got {self.merge_repeats_above}"
            )

    @classmethod
    def default_beam(cls) -> DecoderSettings:
        return cls(kind="beam")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecoderSettings:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown decoder settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> DecoderSettings:
        return type(self).from_dict({**asdict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WordSpan:
    """A decoded word and the frames [start_frame, end_frame) of its tokens."""

    word: str
    start_frame: int
    end_frame: int


def read_lexicon(path: Path) -> list[str]:
    words = [w.strip() for w in path.read_text(encoding="utf-8").splitlines()]
    words = [w for w in words if w]
    if not words:
        raise ValueError(f"{path}: the lexicon is empty")
    return words


class BeamSearchDecoder:
    """flashlight-text's lexicon-constrained CTC beam search with a KenLM model."""

    def __init__(
        self,
        vocab: CharVocabulary,
        lexicon_path: Path,
        lm_path: Path,
        settings: DecoderSettings,
    ) -> None:
        from flashlight.lib.text.decoder import SmearingMode, Trie
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        self.vocab = vocab
        self.words = read_lexicon(lexicon_path)
        self._word_dict = Dictionary([*self.words, UNK])
        self._unk = self._word_dict.get_index(UNK)
        self.lm = KenLM(str(lm_path), self._word_dict)
        self.spellings = []
        trie = Trie(vocab.size, vocab.space_id)
        start = self.lm.start(False)
        for index, word in enumerate(self.words):
            spelling = vocab.encode(word)
            if not spelling or vocab.space_id in spelling:
                raise ValueError(f"{lexicon_path}: {word!r} is not spelled by the vocabulary")
            _, score = self.lm.score(start, index)
            trie.insert(spelling, index, score)
            self.spellings.append(spelling)
        # Smearing puts the best LM score of a prefix's words on the prefix, so partial words
        # compete with their best completion instead of with nothing.
        trie.smear(SmearingMode.MAX)
        self.trie = trie
        self.settings = settings
        self._decoder = self._make_decoder(settings)

    def _make_decoder(self, settings: DecoderSettings):
        from flashlight.lib.text.decoder import (
            CriterionType,
            LexiconDecoder,
            LexiconDecoderOptions,
        )

        options = LexiconDecoderOptions(
            beam_size=settings.beam_width,
            beam_size_token=min(settings.token_beam, self.vocab.size),
            beam_threshold=settings.beam_threshold,
            lm_weight=settings.lm_weight,
            word_score=settings.word_score,
            unk_score=float("-inf"),  # never a word outside the lexicon
            sil_score=0.0,
            log_add=False,
            criterion_type=CriterionType.CTC,
        )
        return LexiconDecoder(
            options,
            self.trie,
            self.lm,
            self.vocab.space_id,
            self.vocab.blank_id,
            self._unk,
            [],
            False,
        )

    def reconfigure(self, settings: DecoderSettings) -> None:
        self._decoder = self._make_decoder(settings)
        self.settings = settings

    def decode(self, log_probs: np.ndarray) -> list[WordSpan]:
        emissions = np.ascontiguousarray(log_probs, dtype=np.float32)
        if emissions.ndim != 2 or emissions.shape[1] != self.vocab.size:
            raise ValueError(
                f"log_probs must be [frames, {self.vocab.size}], got shape {emissions.shape}"
            )
        if emissions.shape[0] == 0:
            return []
        searched = emissions
        if self.settings.merge_repeats_above > 0:
            # a boolean index copies: the result is C-contiguous, as decode() needs
            searched = emissions[frames_to_search(emissions, self.settings.merge_repeats_above)]
        results = self._decoder.decode(searched.ctypes.data, *searched.shape)
        if not results:
            return []
        word_ids = [w for w in results[0].words if w >= 0]
        # Times from the alignment on every frame: merging only narrows the search.
        return self._word_spans(emissions, word_ids)

    def _word_spans(self, emissions: np.ndarray, word_ids: list[int]) -> list[WordSpan]:
        if not word_ids:
            return []
        labels = np.array([t for w in word_ids for t in self.spellings[w]], np.int64)
        starts, ends = _align(emissions, labels, self.vocab.blank_id, self.vocab.space_id)
        out = []
        position = 0
        for word_id in word_ids:
            last = position + len(self.spellings[word_id]) - 1
            out.append(WordSpan(self.words[word_id], int(starts[position]), int(ends[last])))
            position = last + 1
        return out


def frames_to_search(emissions: np.ndarray, min_prob: float) -> np.ndarray:
    """Mask of the frames the beam reads: all but those whose most likely symbol is the
    previous frame's, with log-prob >= ln(min_prob) in both (the first frame always)."""
    best = emissions.argmax(axis=1)
    sure = emissions[np.arange(len(best)), best] >= np.log(min_prob)
    keep = np.ones(len(best), bool)
    keep[1:] = ~(sure[1:] & sure[:-1] & (best[1:] == best[:-1]))
    return keep


_NO_PATH = -1e30


@numba.njit(cache=True)
def _align(emissions, labels, blank, space):
    """Viterbi CTC alignment of `labels` to `emissions` [T, V]: for each label the frames
    [start, end) where it is emitted. Blank or space may sit between labels (the better of
    the two per frame); a repeated label needs one between its copies, as in CTC."""
    n_frames = emissions.shape[0]
    n_states = 2 * labels.shape[0] + 1  # blank, label 0, blank, label 1, ..., blank
    score = np.full(n_states, _NO_PATH)
    back = np.zeros((n_frames, n_states), np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    gap = np.empty(n_frames)
    for t in range(n_frames):
        gap[t] = max(emissions[t, blank], emissions[t, space])
    score[0] = gap[0]
    if n_states > 1:
        score[1] = emissions[0, labels[0]]
    for t in range(1, n_frames):
        previous = score.copy()
        for s in range(n_states):
            best, move = previous[s], 0
            if s >= 1 and previous[s - 1] > best:
                best, move = previous[s - 1], 1
            skip_ok = s % 2 == 1 and s >= 3 and labels[s // 2] != labels[s // 2 - 1]
            if skip_ok and previous[s - 2] > best:
                best, move = previous[s - 2], 2
            if best <= _NO_PATH:
                score[s] = _NO_PATH
                continue
            emit = gap[t] if s % 2 == 0 else emissions[t, labels[s // 2]]
            score[s] = best + emit
            back[t, s] = move
    # End in the last blank or on the last label, whichever scored better.
    s = n_states - 1
    if score[n_states - 2] > score[n_states - 1]:
        s = n_states - 2
    starts = np.full(labels.shape[0], n_frames, np.int64)
    ends = np.zeros(labels.shape[0], np.int64)
    for t in range(n_frames - 1, -1, -1):
        if s % 2 == 1:
            k = s // 2
            starts[k] = t
            ends[k] = max(ends[k], t + 1)
        s -= back[t, s]
    return starts, ends
