"""Scoring Vietnamese transcripts: text normalisation, CER and WER, test manifests.

Normalisation applied to both reference and hypothesis before scoring (`normalize_text`):

1. Unicode NFC, so precomposed and decomposed diacritics compare equal;
2. lower case;
3. punctuation (Unicode categories P*), symbols (S*) and invisible format characters (Cf,
   e.g. zero-width space) are replaced by a space, so "đẹp,người" still counts as two
   words;
4. whitespace runs collapsed to one space, ends stripped.

Diacritics and digits are kept: a wrong tone is a wrong word in Vietnamese, and numbers
are not spelled out. Tone-mark placement variants ("hoà" vs "hòa") are NOT unified.

CER and WER are corpus-level: total edit distance over total reference length (characters
including the spaces between words, or words), as jiwer computes them.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numba
import numpy as np

_REMOVED_CATEGORY_PREFIXES = ("P", "S")
_REMOVED_CATEGORIES = frozenset({"Cf"})
_WHITESPACE_RUN = re.compile(r"\s+")


def _is_removed(char: str) -> bool:
    category = unicodedata.category(char)
    return category.startswith(_REMOVED_CATEGORY_PREFIXES) or category in _REMOVED_CATEGORIES


def normalize_text(text: str) -> str:
    """The scoring normalisation described in the module docstring."""
    # NFC again after lower(): lower-casing can leave a decomposed sequence behind.
    text = unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).lower())
    text = "".join(" " if _is_removed(char) else char for char in text)
    return _WHITESPACE_RUN.sub(" ", text).strip()


@numba.njit(cache=True)
def _levenshtein(reference: np.ndarray, hypothesis: np.ndarray) -> int:
    """Edit distance (substitutions, deletions, insertions all cost 1), two rows of memory."""
    n_hyp = hypothesis.shape[0]
    previous = np.arange(n_hyp + 1)
    current = np.empty(n_hyp + 1, np.int64)
    for i in range(reference.shape[0]):
        current[0] = i + 1
        for j in range(n_hyp):
            substitution = previous[j] + (reference[i] != hypothesis[j])
            deletion = previous[j + 1] + 1
            insertion = current[j] + 1
            current[j + 1] = min(substitution, deletion, insertion)
        previous, current = current, previous
    return previous[n_hyp]


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two sequences of strings (characters or words)."""
    # Map items to integers so the compiled kernel compares ints, not Python strings.
    ids: dict[str, int] = {}
    ref = np.array([ids.setdefault(item, len(ids)) for item in reference], dtype=np.int64)
    hyp = np.array([ids.setdefault(item, len(ids)) for item in hypothesis], dtype=np.int64)
    return int(_levenshtein(ref, hyp))


@dataclass(frozen=True)
class UtteranceScore:
    utterance_id: str  # e.g. the audio path; "" when the caller gave none
    reference: str  # normalised
    hypothesis: str  # normalised
    char_errors: int
    ref_chars: int
    word_errors: int
    ref_words: int


@dataclass(frozen=True)
class EvalResult:
    cer: float
    wer: float
    n_utterances: int
    ref_chars: int
    ref_words: int
    char_errors: int
    word_errors: int
    utterances: tuple[UtteranceScore, ...] = field(default=(), repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready totals, plus the per-utterance scores when they were kept."""
        totals = {name: value for name, value in asdict(self).items() if name != "utterances"}
        if self.utterances:
            totals["utterances"] = [asdict(u) for u in self.utterances]
        return totals


def score_utterance(
    reference: str, hypothesis: str, normalize: bool = True, utterance_id: str = ""
) -> UtteranceScore:
    if normalize:
        reference, hypothesis = normalize_text(reference), normalize_text(hypothesis)
    ref_words, hyp_words = reference.split(), hypothesis.split()
    return UtteranceScore(
        utterance_id=utterance_id,
        reference=reference,
        hypothesis=hypothesis,
        char_errors=edit_distance(reference, hypothesis),
        ref_chars=len(reference),
        word_errors=edit_distance(ref_words, hyp_words),
        ref_words=len(ref_words),
    )


def evaluate(
    refs: Sequence[str],
    hyps: Sequence[str],
    normalize: bool = True,
    keep_utterances: bool = False,
    ids: Sequence[str] | None = None,
) -> EvalResult:
    """Corpus CER and WER. Raises ValueError on mismatched lengths or an all-empty reference
    (an error rate over zero reference characters is undefined)."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    ids = ids if ids is not None else [""] * len(refs)
    if len(ids) != len(refs):
        raise ValueError(f"{len(refs)} references but {len(ids)} ids")
    scores = tuple(
        score_utterance(r, h, normalize, i) for r, h, i in zip(refs, hyps, ids, strict=True)
    )
    ref_chars = sum(s.ref_chars for s in scores)
    ref_words = sum(s.ref_words for s in scores)
    if ref_chars == 0 or ref_words == 0:
        raise ValueError("the references are empty (after normalisation); nothing to score")
    char_errors = sum(s.char_errors for s in scores)
    word_errors = sum(s.word_errors for s in scores)
    return EvalResult(
        cer=char_errors / ref_chars,
        wer=word_errors / ref_words,
        n_utterances=len(scores),
        ref_chars=ref_chars,
        ref_words=ref_words,
        char_errors=char_errors,
        word_errors=word_errors,
        utterances=scores if keep_utterances else (),
    )


def cer(refs: Sequence[str], hyps: Sequence[str], normalize: bool = True) -> float:
    return evaluate(refs, hyps, normalize).cer


def wer(refs: Sequence[str], hyps: Sequence[str], normalize: bool = True) -> float:
    return evaluate(refs, hyps, normalize).wer


def read_manifest(path: str | Path) -> list[tuple[Path, str]]:
    """Rows of a JSONL manifest, `{"audio": path, "text": reference}` per line.

    Relative audio paths are relative to the manifest's folder. Blank lines are skipped;
    any other bad line raises ValueError naming the file and line number.
    """
    path = Path(path)
    rows: list[tuple[Path, str]] = []
    with path.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if line.strip():
                rows.append(_parse_manifest_row(line, path, line_number))
    return rows


def _parse_manifest_row(line: str, path: Path, line_number: int) -> tuple[Path, str]:
    where = f"{path}:{line_number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not valid JSON ({error.msg})") from error
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object with 'audio' and 'text'")
    audio, text = row.get("audio"), row.get("text")
    if not isinstance(audio, str) or not audio:
        raise ValueError(f"{where}: 'audio' must be a non-empty string")
    if not isinstance(text, str):
        raise ValueError(f"{where}: 'text' must be a string")
    audio_path = Path(audio)
    if not audio_path.is_absolute():
        audio_path = path.parent / audio_path
    return audio_path, text


class _HasText(Protocol):
    text: str


class Transcribes(Protocol):
    """Anything with `transcribe(audio file bytes)`, like `serve_app.transcriber.Transcriber`."""

    def transcribe(self, data: bytes) -> _HasText: ...


def evaluate_manifest(
    manifest: str | Path, transcriber: Transcribes, normalize: bool = True
) -> EvalResult:
    """Transcribe every row of a JSONL manifest and score it, keeping per-utterance scores.

    An error while reading or transcribing a file propagates with a note naming the file.
    """
    rows = read_manifest(manifest)
    hyps: list[str] = []
    for audio, _ in rows:
        try:
            hyps.append(transcriber.transcribe(audio.read_bytes()).text)
        except Exception as error:
            error.add_note(f"while transcribing {audio}")
            raise
    return evaluate(
        [text for _, text in rows],
        hyps,
        normalize=normalize,
        keep_utterances=True,
        ids=[str(audio) for audio, _ in rows],
    )
