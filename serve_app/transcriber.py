"""Audio bytes in, transcript out: the three stages the Ray graph runs, chained in-process.

    Preprocessor  decode -> 16 kHz mono -> <=30 s windows -> log-mel (float16 to ship)
    OnnxEncoder   batched windows -> CTC log-probs
    Decoder       greedy CTC or lexicon + LM beam search -> words with times -> transcript

Each stage is a plain class so the Ray deployments wrap them thinly and tests call them
directly; `Transcriber` chains them for the CLI and as the in-process reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serve_app.audio import SAMPLE_RATE, AudioLimits, decode_audio
from serve_app.bundle import Bundle, BundleConfig, load_bundle
from serve_app.ctc import Word, frames_to_seconds, greedy_decode, spans_to_words
from serve_app.decoding import BeamSearchDecoder, DecoderSettings
from serve_app.encoder import EncoderOptions, OnnxEncoder
from serve_app.features import N_FRAMES, log_mel_spectrogram
from serve_app.formats import Transcript, words_to_segments
from serve_app.tokenizer import CharVocabulary, Vocabulary
from serve_app.windows import MAX_WINDOW_S, split_windows

SILENCE_PEAK = 1e-4  # ~ -80 dBFS: a window this quiet holds no speech; skip the encoder
FEATURE_DTYPE = np.float16  # log-mel in [-1.5, 2.5]: half precision is plenty and halves hops


@dataclass(frozen=True)
class WindowFeatures:
    """One window of a recording, ready for the encoder (features None: silent, skip it)."""

    offset_s: float
    duration_s: float
    features: np.ndarray | None


@dataclass(frozen=True)
class Prepared:
    duration_s: float
    windows: list[WindowFeatures]


class Preprocessor:
    def __init__(self, config: BundleConfig, limits: AudioLimits | None = None) -> None:
        self.n_mels = config.n_mels
        self.pad_to_frames = N_FRAMES if config.pad_to_30s else None  # 30 s-padded bundles
        self.limits = limits or AudioLimits()

    def __call__(self, data: bytes) -> Prepared:
        return self.from_audio(decode_audio(data, self.limits))

    def from_audio(self, audio: np.ndarray) -> Prepared:
        windows = []
        for w in split_windows(audio, max_window_s=MAX_WINDOW_S):
            chunk = audio[w.start : w.end]
            features = None
            if chunk.size and float(np.max(np.abs(chunk))) >= SILENCE_PEAK:
                mel = log_mel_spectrogram(
                    chunk, n_mels=self.n_mels, pad_to_frames=self.pad_to_frames
                )
                features = mel.astype(FEATURE_DTYPE)
            windows.append(
                WindowFeatures(w.start / SAMPLE_RATE, (w.end - w.start) / SAMPLE_RATE, features)
            )
        return Prepared(duration_s=round(audio.size / SAMPLE_RATE, 3), windows=windows)


class Decoder:
    """Log-probs of each window -> words with times -> one transcript.

    `settings.kind` picks greedy CTC or beam search; beam search needs the bundle's lexicon
    and LM (`lm_files`) and a character vocabulary. The beam decoder (KenLM + trie, ~0.1 s
    to load) is built the first time it is needed and kept while only weights change.
    """

    def __init__(
        self,
        vocab: Vocabulary,
        language: str = "vi",
        settings: DecoderSettings | None = None,
        lm_files: tuple[Path, Path] | None = None,
    ) -> None:
        self.vocab = vocab
        self.language = language
        self.lm_files = lm_files
        self._beam: BeamSearchDecoder | None = None
        self.settings = DecoderSettings()
        self.reconfigure(settings or DecoderSettings())

    @classmethod
    def from_bundle(cls, bundle: Bundle, settings: DecoderSettings | None = None) -> Decoder:
        names = bundle.config.lm_files
        lm_files = (bundle.path / names[0], bundle.path / names[1]) if names else None
        return cls(
            bundle.vocabulary(),
            bundle.config.language,
            settings or bundle.config.decoder_settings,
            lm_files,
        )

    def reconfigure(self, settings: DecoderSettings) -> None:
        """Switch decoding; ValueError (and no change) when the bundle cannot do it."""
        if settings.kind == "beam":
            if self.lm_files is None:
                raise ValueError(
                    "beam decoding needs a lexicon and LM in the bundle: run `vi-asr build-lm`"
                )
            if not isinstance(self.vocab, CharVocabulary):
                raise ValueError("beam decoding needs a character vocabulary (not BPE)")
            if self._beam is None:
                self._beam = BeamSearchDecoder(self.vocab, *self.lm_files, settings)
            else:
                self._beam.reconfigure(settings)
        self.settings = settings

    def decode_window(
        self, log_probs: np.ndarray, offset_s: float, duration_s: float
    ) -> list[Word]:
        if self.settings.kind == "beam" and self._beam is not None:
            words = [
                Word(
                    span.word,
                    frames_to_seconds(span.start_frame, offset_s),
                    frames_to_seconds(span.end_frame, offset_s),
                )
                for span in self._beam.decode(log_probs)
            ]
        else:
            tokens, starts, ends = greedy_decode(log_probs, self.vocab.blank_id)
            words = spans_to_words(tokens, starts, ends, self.vocab, time_offset_s=offset_s)
        # 30 s padded models can place a token in the padding; keep times inside the window.
        limit = round(offset_s + duration_s, 3)
        return [Word(w.word, min(w.start, limit), min(w.end, limit)) for w in words]

    def assemble(self, duration_s: float, words: Sequence[Word]) -> Transcript:
        words = list(words)
        return Transcript(
            text=" ".join(w.word for w in words),
            language=self.language,
            duration=duration_s,
            words=words,
            segments=words_to_segments(words),
        )

    def __call__(self, prepared: Prepared, log_probs: Sequence[np.ndarray | None]) -> Transcript:
        words: list[Word] = []
        for window, lp in zip(prepared.windows, log_probs, strict=True):
            if lp is not None:
                words += self.decode_window(lp, window.offset_s, window.duration_s)
        return self.assemble(prepared.duration_s, words)


class Transcriber:
    """In-process pipeline: the CLI's engine and the reference the HTTP service must match."""

    def __init__(
        self,
        bundle: Bundle | Path | str,
        precision: str | None = None,
        encoder_options: EncoderOptions | None = None,
        limits: AudioLimits | None = None,
        decoder_settings: DecoderSettings | None = None,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.precision = precision or self.bundle.config.default_precision
        self.preprocessor = Preprocessor(self.bundle.config, limits)
        self.encoder = OnnxEncoder(self.bundle.model_path(self.precision), encoder_options)
        self.decoder = Decoder.from_bundle(self.bundle, decoder_settings)

    def transcribe(self, data: bytes) -> Transcript:
        return self.transcribe_prepared([self.preprocessor(data)])[0]

    def transcribe_audio(self, audio: np.ndarray) -> Transcript:
        return self.transcribe_prepared([self.preprocessor.from_audio(audio)])[0]

    def transcribe_many(self, datas: Sequence[bytes]) -> list[Transcript]:
        return self.transcribe_prepared([self.preprocessor(d) for d in datas])

    def transcribe_prepared(self, prepared: Sequence[Prepared]) -> list[Transcript]:
        """Encode every window of every recording together, then decode each recording."""
        per_rec = self.encode_prepared(prepared)
        return [self.decoder(p, lp) for p, lp in zip(prepared, per_rec, strict=True)]

    def encode_prepared(self, prepared: Sequence[Prepared]) -> list[list[np.ndarray | None]]:
        """Log-probs per window of each recording (None for silent windows), encoded together."""
        jobs = [
            (i, j, w.features)
            for i, p in enumerate(prepared)
            for j, w in enumerate(p.windows)
            if w.features is not None
        ]
        outputs = self.encoder.run([f for _, _, f in jobs]) if jobs else []
        per_rec: list[list[np.ndarray | None]] = [[None] * len(p.windows) for p in prepared]
        for (i, j, _), out in zip(jobs, outputs, strict=True):
            per_rec[i][j] = out
        return per_rec
