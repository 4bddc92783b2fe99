"""Model bundles: a directory with everything serving needs and nothing else.

config.json       architecture, audio front end, vocabulary kind, provenance
model.onnx        encoder + CTC head, log-probs out, dynamic batch and time axes
model.int8.onnx   optional INT8 variant
vocab.json        character list (vocab kind "chars"), or
tokenizer.json    a Hugging Face tokenizer (vocab kind "bpe", Whisper's byte-level BPE)
lexicon.txt       optional: the words beam search may spell (`vi-asr build-lm`)
lm.arpa           optional: the n-gram language model over those words
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serve_app.decoding import DecoderSettings
from serve_app.errors import BundleError
from serve_app.features import ENCODER_FRAMES_PER_SECOND
from serve_app.tokenizer import BpeVocabulary, CharVocabulary, Vocabulary

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
PRECISIONS = ("fp32", "int8")
SUPPORTED_SAMPLE_RATE = 16000
SUPPORTED_FRAME_RATE = ENCODER_FRAMES_PER_SECOND  # 50 encoder frames per second (20 ms each)


@dataclass(frozen=True)
class BundleConfig:
    name: str
    n_mels: int
    blank_id: int
    vocab_kind: str  # "chars" | "bpe"
    vocab_file: str
    models: dict[str, str]
    pad_to_30s: bool = False
    sample_rate: int = SUPPORTED_SAMPLE_RATE
    frame_rate: int = SUPPORTED_FRAME_RATE
    language: str = "vi"
    default_precision: str = "int8"
    architecture: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    # {"settings": DecoderSettings as a dict, "lm": {"lexicon": file, "lm": file, sources...}};
    # empty: greedy decoding (serve_app/decoding.py)
    decoder: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.format_version != FORMAT_VERSION:
            raise BundleError(f"bundle format {self.format_version} is not {FORMAT_VERSION}")
        if self.n_mels not in (80, 128):
            raise BundleError(f"n_mels must be 80 or 128, got {self.n_mels}")
        if self.sample_rate != SUPPORTED_SAMPLE_RATE or self.frame_rate != SUPPORTED_FRAME_RATE:
            raise BundleError("only 16 kHz audio and 50 encoder frames/s are supported")
        if self.vocab_kind not in ("chars", "bpe"):
            raise BundleError(f"vocab.kind must be 'chars' or 'bpe', got {self.vocab_kind!r}")
        unknown = set(self.models) - set(PRECISIONS)
        if not self.models or unknown:
            raise BundleError(f"models must map some of {PRECISIONS} to files, got {self.models}")
        if self.default_precision not in self.models:
            raise BundleError(f"default_precision {self.default_precision!r} has no model file")
        try:
            settings = self.decoder_settings
        except (TypeError, ValueError) as exc:
            raise BundleError(f"invalid decoder settings in {CONFIG_FILE}: {exc}") from exc
        if settings.kind == "beam" and not self.lm_files:
            raise BundleError("decoder kind 'beam' needs decoder.lm (run `vi-asr build-lm`)")

    @property
    def decoder_settings(self) -> DecoderSettings:
        """The bundle's default decoding; greedy when it has no settings."""
        return DecoderSettings.from_dict(self.decoder.get("settings") or {})

    @property
    def lm_files(self) -> tuple[str, str] | None:
        """(lexicon, ARPA LM) file names inside the bundle, or None without an LM."""
        lm = self.decoder.get("lm")
        return (lm["lexicon"], lm["lm"]) if lm else None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BundleConfig:
        try:
            return cls(
                name=d["name"],
                n_mels=int(d["n_mels"]),
                blank_id=int(d["blank_id"]),
                vocab_kind=d["vocab"]["kind"],
                vocab_file=d["vocab"]["file"],
                models=dict(d["models"]),
                pad_to_30s=bool(d.get("pad_to_30s", False)),
                sample_rate=int(d.get("sample_rate", SUPPORTED_SAMPLE_RATE)),
                frame_rate=int(d.get("frame_rate", SUPPORTED_FRAME_RATE)),
                language=d.get("language", "vi"),
                default_precision=d.get("default_precision", next(iter(d["models"]))),
                architecture=d.get("architecture", {}),
                provenance=d.get("provenance", {}),
                decoder=d.get("decoder", {}),
                format_version=int(d.get("format_version", FORMAT_VERSION)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"invalid {CONFIG_FILE}: {exc!r}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "name": self.name,
            "language": self.language,
            "architecture": self.architecture,
            "sample_rate": self.sample_rate,
            "n_mels": self.n_mels,
            "frame_rate": self.frame_rate,
            "pad_to_30s": self.pad_to_30s,
            "blank_id": self.blank_id,
            "vocab": {"kind": self.vocab_kind, "file": self.vocab_file},
            "models": self.models,
            "default_precision": self.default_precision,
            "provenance": self.provenance,
            **({"decoder": self.decoder} if self.decoder else {}),
        }


@dataclass(frozen=True)
class Bundle:
    path: Path
    config: BundleConfig

    def model_path(self, precision: str | None = None) -> Path:
        precision = precision or self.config.default_precision
        if precision not in self.config.models:
            raise BundleError(
                f"bundle {self.path} has no {precision!r} model; "
                f"it has {sorted(self.config.models)}"
            )
        return self.path / self.config.models[precision]

    def vocabulary(self) -> Vocabulary:
        vocab_path = self.path / self.config.vocab_file
        if self.config.vocab_kind == "chars":
            return CharVocabulary.from_json(vocab_path, blank_id=self.config.blank_id)
        return BpeVocabulary(vocab_path, blank_id=self.config.blank_id)


def load_bundle(path: Path | str) -> Bundle:
    """Load and validate a bundle directory; BundleError names whatever is missing."""
    path = Path(path)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise BundleError(
            f"no model bundle at {path} ({CONFIG_FILE} missing); "
            "build one with `vi-asr build-model`"
        )
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BundleError(f"{config_path} is not valid JSON: {exc}") from exc
    config = BundleConfig.from_dict(raw)
    files = (config.vocab_file, *config.models.values(), *(config.lm_files or ()))
    missing = [name for name in files if not (path / name).is_file()]
    if missing:
        raise BundleError(f"bundle {path} is missing {', '.join(missing)}")
    return Bundle(path=path, config=config)


def write_config(path: Path, config: BundleConfig) -> None:
    (path / CONFIG_FILE).write_text(
        json.dumps(config.to_dict(), indent=2, ensure_ascii=False) + "\n"
    )
