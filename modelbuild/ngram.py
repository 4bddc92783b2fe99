"""Syllable n-gram estimation for the decoder's LM: pseudo-counts from every source
(`Counts`), interpolated Witten-Bell up to trigrams (`estimate`), written as ARPA for KenLM
(`write_arpa`). The sources and the bundle side are in modelbuild/lm.py.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from serve_app.decoding import (
    BOS,
    EOS,
    UNK,
)
from serve_app.tokenizer import CharVocabulary

WORDFREQ_TOKENS = 1e6  # wordfreq frequencies become pseudo-counts out of a million tokens
LIST_SYLLABLE_COUNT = 0.5  # unigram pseudo-count per syllable occurrence in a word list
LIST_PAIR_COUNT = 0.5  # bigram pseudo-count per within-word pair: with Witten-Bell this
# gives the word lists' continuations ~1/3 of the mass after a syllable (k / (k + 1))
FLOOR_COUNT = 0.3  # every valid syllable: composed, hunspell, or seen anywhere
MEAN_SENTENCE_SYLLABLES = 12  # sets p(</s>) when no running text gives sentence ends
UNK_COUNT = 0.1
HUNSPELL_DIC = Path("/usr/share/hunspell/vi_VN.dic")
ARPA_DECIMALS = 6
MAX_ORDER = 3  # trigrams from running text; word lists give bigrams only


@dataclass(frozen=True)
class Source:
    name: str
    licence: str
    detail: str


@dataclass
class Counts:
    """Pseudo-counts from every source, before estimation. `ngrams[n]` holds n-gram counts
    for n >= 2 (bigrams from word lists and running text, trigrams from running text)."""

    unigrams: Counter[str] = field(default_factory=Counter)
    ngrams: dict[int, Counter[tuple[str, ...]]] = field(
        default_factory=lambda: {n: Counter() for n in range(2, MAX_ORDER + 1)}
    )
    sources: list[Source] = field(default_factory=list)
    sentence_ends: float = 0.0

    @property
    def bigrams(self) -> Counter[tuple[str, ...]]:
        return self.ngrams[2]

    def add_sentences(self, sentences: Iterable[Sequence[str]], source: Source) -> None:
        """Running text: unigrams and higher n-grams with <s> and </s>."""
        for words in sentences:
            if not words:
                continue
            padded = (BOS, *words, EOS)
            self.unigrams.update(words)
            self.sentence_ends += 1
            for n, counter in self.ngrams.items():
                counter.update(padded[i : i + n] for i in range(len(padded) - n + 1))
        self.sources.append(source)

    def add_word_list(self, entries: Iterable[Sequence[str]], source: Source) -> None:
        """Dictionary entries: syllables and the pairs inside each multi-syllable entry."""
        for syllables in entries:
            for syllable in syllables:
                self.unigrams[syllable] += LIST_SYLLABLE_COUNT
            for pair in itertools.pairwise(syllables):
                self.bigrams[pair] += LIST_PAIR_COUNT
        self.sources.append(source)

    def add_frequencies(self, frequencies: dict[str, float], source: Source) -> None:
        for syllable, frequency in frequencies.items():
            self.unigrams[syllable] += frequency * WORDFREQ_TOKENS
        self.sources.append(source)

    def add_floor(self, syllables: Iterable[str], source: Source) -> None:
        for syllable in syllables:
            self.unigrams[syllable] += FLOOR_COUNT
        self.sources.append(source)


@dataclass(frozen=True)
class NgramModel:
    """log10 probabilities and backoff weights, as ARPA stores them. Keys are word tuples
    of length 1..order; BOS's unigram is -99 (never predicted)."""

    order: int
    logprob: dict[tuple[str, ...], float]
    backoff: dict[tuple[str, ...], float]  # histories that have explicit continuations

    @functools.cached_property
    def unigram(self) -> dict[str, float]:
        return {k[0]: v for k, v in self.logprob.items() if len(k) == 1}

    @functools.cached_property
    def words(self) -> list[str]:
        return [k[0] for k in self.logprob if len(k) == 1 and k[0] not in (BOS, EOS, UNK)]

    def score(self, history: Sequence[str], word: str) -> float:
        """log10 p(word | history) with ARPA backoff (the last order-1 words count)."""
        context = tuple(history)[len(history) - self.order + 1 :] if self.order > 1 else ()
        penalty = 0.0
        while True:
            key = (*context, word)
            if key in self.logprob:
                return penalty + self.logprob[key]
            if not context:
                raise KeyError(word)
            penalty += self.backoff.get(context, 0.0)
            context = context[1:]


def estimate(counts: Counts, order: int = MAX_ORDER) -> NgramModel:
    """Interpolated Witten-Bell n-gram model over the pseudo-counts (see module doc).

    For a history h with count c(h) and T(h) distinct followers,
        p(w | h) = (c(h, w) + T(h) p(w | h')) / (c(h) + T(h)),   h' = h without its oldest word,
    and for a history never seen p(w | h) = p(w | h'). Written as ARPA this is exact: listed
    n-grams carry the interpolated value and a history's backoff weight is T / (c + T).
    """
    if not 1 <= order <= MAX_ORDER:
        raise ValueError(f"order must be in 1..{MAX_ORDER}, got {order}")
    unigrams = Counter({w: c for w, c in counts.unigrams.items() if c > 0})
    if not unigrams:
        raise ValueError("no words to build a language model from")
    total_words = sum(unigrams.values())
    # Sentence ends: counted in running text, else one per MEAN_SENTENCE_SYLLABLES words.
    unigrams[EOS] = counts.sentence_ends or total_words / MEAN_SENTENCE_SYLLABLES
    unigrams[UNK] = UNK_COUNT
    total = sum(unigrams.values())
    prob: dict[tuple[str, ...], float] = {(w,): c / total for w, c in unigrams.items()}
    backoff: dict[tuple[str, ...], float] = {}
    for n in range(2, order + 1):
        followers: dict[tuple[str, ...], dict[str, float]] = {}
        for gram, c in counts.ngrams[n].items():
            *h, w = gram
            known = (w,) in prob and w != BOS and all(x in unigrams or x == BOS for x in h)
            if known and (n == 2 or tuple(h) in prob):  # the history is a listed n-gram
                followers.setdefault(tuple(h), {})[w] = c
        for h, nexts in followers.items():
            c_h, t_h = sum(nexts.values()), len(nexts)
            for w, c in nexts.items():
                lower = _interpolated(prob, backoff, (*h[1:], w))
                prob[(*h, w)] = (c + t_h * lower) / (c_h + t_h)
            backoff[h] = t_h / (c_h + t_h)
    logprob = {(BOS,): -99.0}
    logprob.update({k: math.log10(p) for k, p in prob.items() if k != (BOS,)})
    return NgramModel(order, logprob, {h: math.log10(b) for h, b in backoff.items()})


def _interpolated(prob, backoff, gram: tuple[str, ...]) -> float:
    """p(gram[-1] | gram[:-1]) from the lower orders estimated so far (linear, not log)."""
    if gram in prob:
        return prob[gram]
    return backoff.get(gram[:-1], 1.0) * _interpolated(prob, backoff, gram[1:])


def write_arpa(model: NgramModel, path: Path) -> None:
    def fmt(x: float) -> str:
        return f"{x:.{ARPA_DECIMALS}f}"

    by_order: dict[int, list[tuple[str, ...]]] = {n: [] for n in range(1, model.order + 1)}
    for gram in model.logprob:
        by_order[len(gram)].append(gram)
    lines = ["\\data\\", *(f"ngram {n}={len(g)}" for n, g in by_order.items())]
    for n, grams in by_order.items():
        lines += ["", f"\\{n}-grams:"]
        for gram in grams:
            bo = model.backoff.get(gram) if n < model.order else None
            line = f"{fmt(model.logprob[gram])}\t{' '.join(gram)}"
            lines.append(line + (f"\t{fmt(bo)}" if bo is not None else ""))
    lines += ["", "\\end\\", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_lexicon(words: Iterable[str], vocab: CharVocabulary, path: Path) -> list[str]:
    """One word per line, spelled with the vocabulary's characters (others are dropped)."""
    kept = sorted({w for w in words if w and vocab.normalize(w) == w and " " not in w})
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return kept
