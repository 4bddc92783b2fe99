"""Deterministic Vietnamese sentence generator for the synthetic CTC training corpus.

Sentences are sequences of syllables drawn from two sources:

(a) The Vietnamese word list of ``wordfreq`` (top ``WORDFREQ_TOP_N`` entries).  Only tokens
    that are well-formed Vietnamese syllables are kept (see :func:`is_valid_syllable`), so
    digits, abbreviations and most Latin-script loanwords are dropped, and tone marks are
    moved to the traditional position (hoà -> hòa, see :func:`normalize_syllable`) so one
    pronunciation has one spelling.  Words are sampled
    with weight ``frequency ** WORDFREQ_FLATTEN`` so common words dominate while rarer
    ones still appear.

    Attribution: wordfreq (https://github.com/rspeer/wordfreq) by Robyn Speer; the code is
    licensed Apache-2.0 and its word-frequency data CC-BY-SA 4.0.  The data is only read at
    generation time; sentences built from it are derived data under CC-BY-SA 4.0.

(b) Composed syllables: a random valid onset + rhyme + tone (:func:`compose_syllable`), so
    all six tones (ngang, huyền, hỏi, ngã, sắc, nặng) and the whole rhyme inventory appear,
    not only the frequent words.  Vietnamese phonotactics: a syllable that ends in a stop
    (-p, -t, -c, -ch) carries only the sắc or nặng tone; open syllables and syllables with a
    sonorant final (-m, -n, -ng, -nh, or a semivowel) can carry any of the six tones.

Output sentences are lowercase NFC, syllables separated by one space, without punctuation.
Everything is deterministic given a seed (numpy PCG64).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

WORDFREQ_TOP_N = 5000
WORDFREQ_FLATTEN = 0.5
COMPOSED_FRACTION = 0.25
TEST_SEED_OFFSET = 7_919_007  # test sentences use seed + this (any fixed offset works)
DEV_SEED_OFFSET = 15_485_863  # dev (tuning) sentences use seed + this

# Tone marks as Unicode combining characters (after NFD).
TONES: dict[str, str] = {
    "ngang": "",
    "huyền": "\u0300",
    "hỏi": "\u0309",
    "ngã": "\u0303",
    "sắc": "\u0301",
    "nặng": "\u0323",
}
_MARK_TO_TONE = {mark: name for name, mark in TONES.items() if mark}
STOP_TONES = ("sắc", "nặng")
STOP_FINALS = ("p", "t", "c", "ch")

INITIALS: tuple[str, ...] = (
    "", "b", "c", "ch", "d", "đ", "g", "gh", "gi", "h", "k", "kh", "l", "m", "n", "ng",
    "ngh", "nh", "p", "ph", "qu", "r", "s", "t", "th", "tr", "v", "x",
)  # fmt: skip

# Rhymes (medial + nucleus + final), written as after a consonant initial other than qu/gi.
RHYMES: tuple[str, ...] = (
    # open syllables / semivowel finals
    "a", "e", "ê", "i", "o", "ô", "ơ", "u", "ư", "y",
    "ai", "ao", "au", "ay", "âu", "ây", "eo", "êu", "ia", "iu", "oi", "ôi", "ơi",
    "ua", "ui", "ưa", "ưi", "ưu", "oa", "oe", "uê", "uơ", "uy",
    "iêu", "oai", "oay", "oeo", "uây", "uôi", "ươi", "ươu", "uya", "uyu",
    # closed syllables
    "am", "an", "ang", "anh", "ap", "at", "ac", "ach",
    "ăm", "ăn", "ăng", "ăp", "ăt", "ăc",
    "âm", "ân", "âng", "âp", "ât", "âc",
    "em", "en", "eng", "ep", "et", "ec",
    "êm", "ên", "ênh", "êp", "êt", "êch",
    "im", "in", "inh", "ip", "it", "ich",
    "om", "on", "ong", "op", "ot", "oc",
    "ôm", "ôn", "ông", "ôp", "ôt", "ôc",
    "ơm", "ơn", "ơp", "ơt",
    "um", "un", "ung", "up", "ut", "uc",
    "ưn", "ưng", "ưt", "ưc",
    "iêm", "iên", "iêng", "iêp", "iêt", "iêc",
    "uôm", "uôn", "uông", "uôt", "uôc",
    "ươm", "ươn", "ương", "ươp", "ươt", "ươc",
    "oan", "oang", "oanh", "oat", "oac", "oach", "oăn", "oăng", "oăt", "oăc", "oen", "oet",
    "uân", "uâng", "uât", "uyên", "uyêt", "uynh", "uych", "uyt",
)  # fmt: skip

_VOWELS = set("aăâeêioôơuưy")
_MARKED_VOWELS = set("ăâêôơư")
_FINALS_RE = re.compile(r"(ch|ng|nh|c|m|n|p|t)$")
_FRONT = ("i", "e", "ê", "y")


def _split_rhyme(rhyme: str) -> tuple[str, str]:
    """Split a tone-less rhyme into (vowel part, consonant final)."""
    m = _FINALS_RE.search(rhyme)
    if m and m.start() > 0:
        return rhyme[: m.start()], m.group(1)
    return rhyme, ""


def _rhyme_for_initial(initial: str, rhyme: str) -> str | None:
    """Spell ``rhyme`` after ``initial`` (tone-less), or None if the pair is not valid."""
    first = rhyme[0]
    if initial == "qu":
        # the u of qu is the medial /w/: quan (oan), quân (uân), quyên (uyên), quốc, quê
        if first in "ou" and len(rhyme) > 1 and rhyme[1] in "aăâeêyơ":
            return rhyme[1:]
        if first in "aăâeêơy" or rhyme in ("i", "ôc"):
            return rhyme
        return None
    if initial == "gi":
        if first in "iy":
            # gi + in -> gin (gìn), gi + iêng -> giêng (giếng)
            rest = rhyme[1:]
            return rest if rest and (rest[0] in _VOWELS or rest in ("n", "m", "t", "p")) else None
        return rhyme
    if initial == "k":
        return rhyme if first in _FRONT else None
    if initial in ("gh", "ngh"):
        return rhyme if first in "ieê" else None
    if initial in ("c", "g", "ng"):
        return None if first in _FRONT else rhyme
    if initial == "":
        if rhyme.startswith("iê"):
            return "y" + rhyme[1:]  # yên, yêu, yết
        return rhyme
    return rhyme


def place_tone(rhyme: str, tone: str) -> str:
    """Put the tone mark of ``tone`` on the right vowel of a tone-less rhyme (NFC)."""
    mark = TONES[tone]
    if not mark:
        return unicodedata.normalize("NFC", rhyme)
    vowels, final = _split_rhyme(rhyme)
    idx = [i for i, ch in enumerate(vowels) if ch in _VOWELS]
    marked = [i for i in idx if vowels[i] in _MARKED_VOWELS]
    if marked:
        pos = marked[-1]  # ươ -> on ơ; otherwise the single marked vowel
    elif final:
        pos = idx[-1]  # oán, oánh, uỳnh
    elif len(idx) >= 3:
        pos = idx[1]  # oái, khuỷu
    else:
        pos = idx[0]  # ái, mía, hòa, thủy (traditional placement, as in wordfreq's data)
    out = vowels[:pos] + unicodedata.normalize("NFD", vowels[pos]) + mark + vowels[pos + 1 :]
    return unicodedata.normalize("NFC", out + final)


def compose(initial: str, rhyme: str, tone: str) -> str | None:
    """Compose initial + rhyme + tone into an NFC syllable, or None when ill-formed."""
    spelled = _rhyme_for_initial(initial, rhyme)
    if spelled is None:
        return None
    _, final = _split_rhyme(rhyme)
    if final in STOP_FINALS and tone not in STOP_TONES:
        return None
    if initial == "gi" and spelled[0] not in _VOWELS:
        return "g" + place_tone("i" + spelled, tone)  # gìn: the tone sits on the i of gi
    return initial + place_tone(spelled, tone)


@functools.cache
def composable_pairs() -> tuple[tuple[str, str], ...]:
    """All (initial, rhyme) pairs that spell a valid syllable."""
    return tuple(
        (ini, rh) for ini in INITIALS for rh in RHYMES if _rhyme_for_initial(ini, rh) is not None
    )


def allowed_tones(rhyme: str) -> tuple[str, ...]:
    _, final = _split_rhyme(rhyme)
    return STOP_TONES if final in STOP_FINALS else tuple(TONES)


def compose_syllable(rng: np.random.Generator) -> str:
    """A random composed syllable: uniform (initial, rhyme) pair, uniform allowed tone."""
    pairs = composable_pairs()
    ini, rh = pairs[int(rng.integers(len(pairs)))]
    tones = allowed_tones(rh)
    tone = tones[int(rng.integers(len(tones)))]
    syl = compose(ini, rh, tone)
    assert syl is not None
    return syl


def split_tone(syllable: str) -> tuple[str, str]:
    """(tone-less NFC base, tone name) of one syllable.  Raises ValueError on 2+ tone marks."""
    decomposed = unicodedata.normalize("NFD", syllable)
    tones = [_MARK_TO_TONE[ch] for ch in decomposed if ch in _MARK_TO_TONE]
    if len(tones) > 1:
        raise ValueError(f"more than one tone mark in {syllable!r}")
    base = "".join(ch for ch in decomposed if ch not in _MARK_TO_TONE)
    return unicodedata.normalize("NFC", base), tones[0] if tones else "ngang"


@functools.cache
def _valid_bases() -> frozenset[str]:
    bases: set[str] = set()
    for ini in INITIALS:
        for rh in RHYMES:
            spelled = _rhyme_for_initial(ini, rh)
            if spelled is not None:
                bases.add(ini + spelled)
    bases.add("gi")  # gì: gi + the i nucleus
    return frozenset(bases)


@functools.lru_cache(maxsize=1 << 18)  # running text repeats its syllables: parse each once
def is_valid_syllable(token: str) -> bool:
    """True when ``token`` is a well-formed (lowercase NFC) Vietnamese syllable.

    Checks: only Vietnamese letters; at most one tone mark; onset + rhyme from the
    inventory above with the c/k, g/gh, ng/ngh, qu and gi spelling rules; stop finals
    only with sắc/nặng.
    """
    if not token or token != unicodedata.normalize("NFC", token.lower()):
        return False
    try:
        base, tone = split_tone(token)
    except ValueError:
        return False
    if base not in _valid_bases():
        return False
    m = _FINALS_RE.search(base)
    return not (m and m.group(1) in STOP_FINALS and tone not in STOP_TONES)


@functools.lru_cache(maxsize=1 << 18)
def normalize_syllable(syllable: str) -> str:
    """Rewrite a syllable with the traditional tone-mark placement used by
    :func:`place_tone` (hoà -> hòa, thuỷ -> thủy), so every spoken form has one spelling."""
    base, tone = split_tone(unicodedata.normalize("NFC", syllable.lower()))
    if base.startswith("gi") and (len(base) == 2 or base[2] not in _VOWELS):
        initial, rest = "g", base[1:]  # gì, gìn: the i of gi is the nucleus
    elif base.startswith(("gi", "qu")):
        initial, rest = base[:2], base[2:]
    else:
        k = 0
        while k < len(base) and base[k] not in _VOWELS:
            k += 1
        initial, rest = base[:k], base[k:]
    if not rest or rest[0] not in _VOWELS:
        return unicodedata.normalize("NFC", syllable)
    return initial + place_tone(rest, tone)


def syllable_tone(syllable: str) -> str:
    return split_tone(syllable)[1]


def syllable_final(syllable: str) -> str:
    """Consonant final (p, t, c, ch, m, n, ng, nh) of a syllable, or ''."""
    base, _ = split_tone(syllable)
    m = _FINALS_RE.search(base)
    return m.group(1) if m and m.start() > 0 else ""


@functools.cache
def wordfreq_vocab(
    top_n: int = WORDFREQ_TOP_N, flatten: float = WORDFREQ_FLATTEN
) -> tuple[tuple[str, ...], np.ndarray]:
    """(words, sampling probabilities) from wordfreq's Vietnamese list, valid syllables only."""
    import wordfreq

    merged: dict[str, float] = {}  # spelling variants (hoà/hòa) merged into one entry
    for raw in wordfreq.top_n_list("vi", top_n):
        w = unicodedata.normalize("NFC", raw.lower())
        if not is_valid_syllable(w):
            continue
        key = normalize_syllable(w)
        merged[key] = merged.get(key, 0.0) + wordfreq.word_frequency(raw, "vi")
    words = list(merged)
    freqs = np.maximum(np.array([merged[w] for w in words], dtype=np.float64), 1e-9) ** flatten
    probs = freqs / freqs.sum()
    probs.setflags(write=False)
    return tuple(words), probs


def generate_sentences(
    n: int,
    seed: int,
    min_words: int = 4,
    max_words: int = 14,
    composed_fraction: float = COMPOSED_FRACTION,
) -> list[str]:
    """``n`` unique sentences, deterministic for ``seed``.

    The generator is sequential, so ``generate_sentences(m, s)[:k]`` equals
    ``generate_sentences(k, s)`` for ``m >= k`` (prefix-stable).
    """
    if n < 0 or min_words < 1 or max_words < min_words:
        raise ValueError("need n >= 0 and 1 <= min_words <= max_words")
    words, probs = wordfreq_vocab()
    cdf = np.cumsum(probs)
    rng = np.random.Generator(np.random.PCG64(seed))
    out: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise RuntimeError("cannot generate enough unique sentences")
        length = int(rng.integers(min_words, max_words + 1))
        composed = rng.random(length) < composed_fraction
        picks = np.searchsorted(cdf, rng.random(length) * cdf[-1], side="right")
        toks = [
            compose_syllable(rng) if c else words[min(int(p), len(words) - 1)]
            for c, p in zip(composed, picks, strict=True)
        ]
        sentence = " ".join(toks)
        if sentence not in seen:
            seen.add(sentence)
            out.append(sentence)
    return out


@dataclass
class Split:
    train: list[str]
    test: list[str]
    seed: int
    test_seed: int
    test_dropped_in_train: int = 0
    test_words_unseen: list[str] = field(default_factory=list)
    dev: list[str] = field(default_factory=list)
    dev_seed: int | None = None
    dev_dropped: int = 0  # dev candidates dropped because they are in train or test

    @property
    def test_word_tokens_unseen_fraction(self) -> float:
        unseen = set(self.test_words_unseen)
        toks = [w for s in self.test for w in s.split()]
        return sum(w in unseen for w in toks) / max(1, len(toks))

    def summary(self) -> dict:
        return {
            "n_train": len(self.train),
            "n_test": len(self.test),
            "seed": self.seed,
            "test_seed": self.test_seed,
            "test_dropped_in_train": self.test_dropped_in_train,
            "test_word_types_unseen_in_train": len(self.test_words_unseen),
            "test_word_tokens_unseen_fraction": round(self.test_word_tokens_unseen_fraction, 5),
            "n_dev": len(self.dev),
            "dev_seed": self.dev_seed,
            "dev_dropped_in_train_or_test": self.dev_dropped,
        }


def draw_disjoint(
    n: int, seed: int, exclude: set[str], min_words: int = 4, max_words: int = 14
) -> tuple[list[str], int]:
    """The first ``n`` sentences of ``generate_sentences(.., seed)`` that are not in
    ``exclude``, and how many candidates were dropped on the way."""
    m = max(2 * n, n + 16)
    while True:
        cands = generate_sentences(m, seed, min_words, max_words)
        kept = [s for s in cands if s not in exclude]
        if len(kept) >= n:
            break
        m *= 2
    # count only the overlap within the prefix that was actually consumed
    cut = cands.index(kept[n - 1]) + 1 if n else 0
    dropped = sum(s in exclude for s in cands[:cut])
    return kept[:n], dropped


def split_train_test(
    n_train: int,
    n_test: int,
    seed: int,
    test_seed: int | None = None,
    min_words: int = 4,
    max_words: int = 14,
    train: Sequence[str] | None = None,
    n_dev: int = 0,
    dev_seed: int | None = None,
) -> Split:
    """Sentence-level split.  Test sentences come from a different seed, and any that also
    occur in the training list are dropped (so no test sentence is ever in training).
    ``test_words_unseen`` lists test words that never appear in training (informative only).

    ``n_dev`` dev (tuning) sentences come from a third seed (``dev_seed``, default
    ``seed + DEV_SEED_OFFSET``) and are disjoint from both train and test.  The test list
    does not depend on ``n_dev``.
    """
    if test_seed is None:
        test_seed = seed + TEST_SEED_OFFSET
    if dev_seed is None:
        dev_seed = seed + DEV_SEED_OFFSET
    if test_seed == seed:
        raise ValueError("test_seed must differ from seed")
    if n_dev and dev_seed in (seed, test_seed):
        raise ValueError("dev_seed must differ from seed and test_seed")
    train_list = (
        list(train)
        if train is not None
        else generate_sentences(n_train, seed, min_words, max_words)
    )
    train_set = set(train_list)
    test, dropped = draw_disjoint(n_test, test_seed, train_set, min_words, max_words)
    dev, dev_dropped = draw_disjoint(n_dev, dev_seed, train_set | set(test), min_words, max_words)
    train_words = {w for s in train_list for w in s.split()}
    unseen = sorted({w for s in test for w in s.split()} - train_words)
    return Split(train_list, test, seed, test_seed, dropped, unseen, dev, dev_seed, dev_dropped)
