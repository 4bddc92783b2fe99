"""Output vocabularies of the CTC head.

Two kinds live behind the `Vocabulary` protocol:

* `CharVocabulary`: one symbol per id (the Vietnamese CTC head we train ourselves).
  The space symbol separates words.
* `BpeVocabulary`: Whisper's byte-level BPE through the `tokenizers` library (the published
  PhoWhisper-CTC checkpoints). A token whose string starts with the byte-level space "Ġ"
  starts a new word.

Decoding always works on whole groups of ids, never token by token: a byte-level BPE token
may hold only half of a multi-byte UTF-8 character (Vietnamese "đ" is two bytes, "ự"
three), and decoding such a token alone gives U+FFFD instead of the letter.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

BLANK_SYMBOL = "<blank>"
SPACE_SYMBOL = " "
APOSTROPHE_SYMBOL = "'"

# Vietnamese vowels without a tone mark, in alphabetical order of the Vietnamese alphabet.
VIETNAMESE_VOWELS = ("a", "ă", "â", "e", "ê", "i", "o", "ô", "ơ", "u", "ư", "y")
# Combining tone marks in the conventional order huyền, hỏi, ngã, sắc, nặng
# (grave, hook above, tilde, acute, dot below). The sixth tone (ngang) has no mark.
VIETNAMESE_TONE_MARKS = ("\u0300", "\u0309", "\u0303", "\u0301", "\u0323")

_WHITESPACE_RUN = re.compile(r"\s+")


@runtime_checkable
class Vocabulary(Protocol):
    """What the decoder and the trainer need to know about the CTC output ids."""

    @property
    def size(self) -> int:
        """Number of CTC output classes, the blank included."""
        ...

    @property
    def blank_id(self) -> int: ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of a sequence of (already collapsed, blank-free or not) ids, stripped."""
        ...

    def word_groups(self, ids: Sequence[int]) -> list[list[int]]:
        """Indices into `ids`, one list per word; ids that are not text are left out."""
        ...

    def encode(self, text: str) -> list[int]:
        """Target ids for training; never contains the blank."""
        ...


def _collapse_spaces(text: str) -> str:
    return _WHITESPACE_RUN.sub(" ", text).strip()


def vietnamese_symbols() -> list[str]:
    """The default character set, in its fixed order (saved in bundles, so never reorder):

    0 blank, 1 space, 2 apostrophe, then a-z, then "đ", then the six toneless vowels that
    are not in a-z (ă â ê ô ơ ư), then for each of the 12 vowels (a ă â e ê i o ô ơ u ư y)
    its five toned forms in the order grave, hook above, tilde, acute, dot below.
    12 vowels x 6 tones = 72 vowel forms in all; 96 symbols.
    """
    ascii_letters = [chr(code) for code in range(ord("a"), ord("z") + 1)]
    toneless_extra = [v for v in VIETNAMESE_VOWELS if v not in ascii_letters]
    toned = [
        unicodedata.normalize("NFC", vowel + mark)
        for vowel in VIETNAMESE_VOWELS
        for mark in VIETNAMESE_TONE_MARKS
    ]
    return [
        BLANK_SYMBOL,
        SPACE_SYMBOL,
        APOSTROPHE_SYMBOL,
        *ascii_letters,
        "đ",
        *toneless_extra,
        *toned,
    ]


class CharVocabulary:
    """One symbol per id; the space symbol separates words."""

    def __init__(self, symbols: Sequence[str], blank_id: int = 0) -> None:
        symbols = list(symbols)
        if not 0 <= blank_id < len(symbols):
            raise ValueError(f"blank_id {blank_id} is outside the {len(symbols)} symbols")
        if len(set(symbols)) != len(symbols):
            raise ValueError("vocabulary symbols must be unique")
        if SPACE_SYMBOL not in symbols:
            raise ValueError("a character vocabulary needs the space symbol ' '")
        self._symbols = symbols
        self._blank_id = blank_id
        self._space_id = symbols.index(SPACE_SYMBOL)
        self._ids = {symbol: i for i, symbol in enumerate(symbols) if i != blank_id}

    @classmethod
    def vietnamese(cls) -> CharVocabulary:
        return cls(vietnamese_symbols(), blank_id=0)

    @classmethod
    def from_json(cls, path: str | Path, blank_id: int | None = None) -> CharVocabulary:
        """Read `vocab.json`: a JSON list of symbols. Without `blank_id`, the blank is the
        `BLANK_SYMBOL` entry."""
        symbols = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            raise ValueError(f"{path}: expected a JSON list of strings")
        if blank_id is None:
            if BLANK_SYMBOL not in symbols:
                raise ValueError(f"{path}: no {BLANK_SYMBOL!r} symbol and no blank_id given")
            blank_id = symbols.index(BLANK_SYMBOL)
        return cls(symbols, blank_id=blank_id)

    def to_json(self, path: str | Path) -> None:
        # ensure_ascii=False keeps the file readable; it is read back as UTF-8.
        Path(path).write_text(json.dumps(self._symbols, ensure_ascii=False), encoding="utf-8")

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    @property
    def size(self) -> int:
        return len(self._symbols)

    @property
    def blank_id(self) -> int:
        return self._blank_id

    @property
    def space_id(self) -> int:
        return self._space_id

    def _is_text(self, token: int) -> bool:
        return token != self._blank_id and 0 <= token < len(self._symbols)

    def decode(self, ids: Sequence[int]) -> str:
        return _collapse_spaces("".join(self._symbols[i] for i in ids if self._is_text(i)))

    def word_groups(self, ids: Sequence[int]) -> list[list[int]]:
        groups: list[list[int]] = []
        current: list[int] = []
        for index, token in enumerate(ids):
            if token == self._space_id:
                if current:
                    groups.append(current)
                current = []
            elif self._is_text(token):
                current.append(index)
        if current:
            groups.append(current)
        return groups

    def normalize(self, text: str) -> str:
        """NFC, lower case, characters outside the vocabulary dropped, spaces collapsed."""
        # NFC again after lower(): lower-casing can leave a decomposed sequence behind.
        text = unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).lower())
        text = _WHITESPACE_RUN.sub(SPACE_SYMBOL, text)
        return _collapse_spaces("".join(ch for ch in text if ch in self._ids))

    def encode(self, text: str) -> list[int]:
        return [self._ids[ch] for ch in self.normalize(text)]


# GPT-2 byte-level BPE shows whitespace bytes as these printable characters
# (byte b is shown as chr(256 + b) for the control bytes and space).
_BYTE_LEVEL_WHITESPACE = frozenset(chr(256 + byte) for byte in b" \t\n\v\f\r")


class BpeVocabulary:
    """Whisper byte-level BPE from a `tokenizer.json`.

    PhoWhisper-CTC has 50258 outputs: the 50257 text tokens of the multilingual Whisper
    vocabulary plus the pad token as blank (Whisper's pad is <|endoftext|> = 50257).
    Special tokens (<|endoftext|>, <|startoftranscript|>, ...) are never text.
    """

    def __init__(
        self, tokenizer_json_path: str | Path, blank_id: int, size: int | None = None
    ) -> None:
        from tokenizers import Tokenizer  # imported here so char-only users need no Rust wheel

        self._tokenizer = Tokenizer.from_file(str(tokenizer_json_path))
        if size is None:
            # Text tokens plus <|endoftext|> (the model vocabulary without the other specials).
            size = max(self._tokenizer.get_vocab_size(with_added_tokens=False), blank_id + 1)
        self._size = size
        if not 0 <= blank_id < self._size:
            raise ValueError(f"blank_id {blank_id} is outside the vocabulary of {self._size}")
        self._blank_id = blank_id
        self._special_ids = frozenset(
            token_id
            for token_id, added in self._tokenizer.get_added_tokens_decoder().items()
            if added.special
        )

    @property
    def size(self) -> int:
        return self._size

    @property
    def blank_id(self) -> int:
        return self._blank_id

    def _is_text(self, token: int) -> bool:
        return (
            token != self._blank_id and 0 <= token < self._size and token not in self._special_ids
        )

    def decode(self, ids: Sequence[int]) -> str:
        text_ids = [int(i) for i in ids if self._is_text(int(i))]
        return self._tokenizer.decode(text_ids, skip_special_tokens=True).strip()

    def word_groups(self, ids: Sequence[int]) -> list[list[int]]:
        groups: list[list[int]] = []
        current: list[int] = []
        current_has_text = False
        for index, raw in enumerate(ids):
            token = int(raw)
            if not self._is_text(token):
                continue
            piece = self._tokenizer.id_to_token(token) or ""
            # A lone "Ġ" token ("Ġ" + "á»¹" is how " ỹ" is encoded) opens the next word
            # instead of forming an empty word of its own.
            if piece[:1] in _BYTE_LEVEL_WHITESPACE and current_has_text:
                groups.append(current)
                current, current_has_text = [], False
            current.append(index)
            current_has_text = current_has_text or any(
                ch not in _BYTE_LEVEL_WHITESPACE for ch in piece
            )
        if current_has_text:
            groups.append(current)
        return groups

    def encode(self, text: str) -> list[int]:
        # NFC: decomposed Vietnamese splits into different (and more) tokens than the
        # model saw in training.
        text = unicodedata.normalize("NFC", text)
        return self._tokenizer.encode(text, add_special_tokens=False).ids
