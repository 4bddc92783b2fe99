"""Live transcription over a WebSocket: the protocol, an energy endpointer, one stream's state.

    WS /v1/stream?sample_rate=16000&encoding=pcm_s16le&language=vi

The client sends binary frames of mono samples (`pcm_s16le` or `f32le`, any size, any rate
from 8 to 48 kHz) and a text frame `{"type": "end"}` when its audio ends. The service answers
with JSON text frames:

    {"type": "partial", "text", "start", "end"}           the open utterance, revised
    {"type": "final", "text", "start", "end", "words"}    an utterance closed, never revised
    {"type": "done", "text", "duration"}                  after "end": all finals; close 1000
    {"type": "error", "code", "message"}                  then a close with CloseCode

An utterance closes at a pause (ENDPOINT_SILENCE_S of non-speech after speech) or, at the
latest, after MAX_UTTERANCE_S at the quietest 20 ms of its last seconds. While it is open it
is transcribed again every PARTIAL_INTERVAL_S of new audio. Each transcription includes up to
LEFT_CONTEXT_S of the audio before the utterance (context for the encoder and the LM); the
words heard there belong to the previous utterance and are dropped. Every transcription goes through
the same stages as an upload (`transcribe(samples, rate)`: the graph's Preprocessor, the
batched Encoder, the Decoder with the bundle's beam search), so a final's text is what POST
/transcribe says for that stretch of audio. Ray-free: the ingress passes the pipeline call
and the socket's send; tests pass fakes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from serve_app.endpointer import MIN_SPEECH_FRAMES, Endpointer
from serve_app.formats import Transcript, Word

STREAM_PATH = "/v1/stream"
SUBPROTOCOL = "asr.v1"  # what the /live page offers, and the server selects
BEARER_SUBPROTOCOL = "bearer."  # + base64url(key): how a browser sends the API key
ENCODINGS = {"pcm_s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 48000
CUT_SEARCH_S = 2.0  # a too-long utterance is cut at the quietest frame of its last 2 s
# Audio before an utterance is encoded with it, and the words heard there dropped: the
# encoder and the LM get context across the cut.
LEFT_CONTEXT_S = 1.0
PCM16_SCALE = 32768.0


class CloseCode(IntEnum):
    NORMAL = 1000
    UNSUPPORTED_DATA = 1003  # bad parameters, text garbage, misaligned or non-finite frames
    POLICY = 1008  # authentication, idle timeout
    TOO_BIG = 1009  # a frame or the whole stream over its limit
    INTERNAL = 1011
    TRY_AGAIN = 1013  # too many streams, or the stages are overloaded


class StreamError(Exception):
    """Ends a stream: sent as {"type": "error", "code", "message"}, then closed."""

    def __init__(self, close_code: CloseCode, code: str, message: str) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.code = code

    def message(self) -> dict[str, str]:
        return {"type": "error", "code": self.code, "message": str(self)}


@dataclass(frozen=True)
class StreamLimits:
    """Per ingress replica; `serve_config.yaml` can set them in the ingress' args."""

    max_streams: int = 16
    idle_timeout_s: float = 20.0  # no frame for this long closes the stream
    max_duration_s: float = 3600.0  # of audio per stream
    max_frame_bytes: int = 1 << 20  # 1 MiB: ~11 s of 48 kHz float32
    partial_interval_s: float = 0.4  # re-transcribe the open utterance this often
    endpoint_silence_s: float = 0.5  # a pause this long closes an utterance
    max_utterance_s: float = 20.0  # and no utterance grows longer than this

    def __post_init__(self) -> None:
        if not 1 <= self.max_streams <= 10_000:
            raise ValueError(f"max_streams must be in 1..10000, got {self.max_streams}")
        for name in ("idle_timeout_s", "max_duration_s", "partial_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 1024 <= self.max_frame_bytes <= 64 << 20:
            raise ValueError(
                f"max_frame_bytes must be in 1 KiB..64 MiB, not {self.max_frame_bytes}"
            )
        if not 0.1 <= self.endpoint_silence_s <= 5:
            raise ValueError(
                f"endpoint_silence_s must be in [0.1, 5], not {self.endpoint_silence_s}"
            )
        if not 2 * CUT_SEARCH_S <= self.max_utterance_s <= 30:
            raise ValueError(
                f"max_utterance_s must be in [{2 * CUT_SEARCH_S}, 30] (one encoder window), "
                f"got {self.max_utterance_s}"
            )


@dataclass(frozen=True)
class StreamParams:
    sample_rate: int = 16000
    encoding: str = "pcm_s16le"

    @property
    def dtype(self) -> np.dtype:
        return ENCODINGS[self.encoding]

    @classmethod
    def from_query(cls, query: Mapping[str, str], served_language: str) -> StreamParams:
        rate_text = query.get("sample_rate", "16000")
        if not rate_text.isdigit() or not MIN_SAMPLE_RATE <= int(rate_text) <= MAX_SAMPLE_RATE:
            raise StreamError(
                CloseCode.UNSUPPORTED_DATA,
                "invalid_sample_rate",
                f"sample_rate must be an integer from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz",
            )
        encoding = query.get("encoding", "pcm_s16le")
        if encoding not in ENCODINGS:
            raise StreamError(
                CloseCode.UNSUPPORTED_DATA,
                "invalid_encoding",
                f"encoding must be one of {', '.join(ENCODINGS)}",
            )
        language = query.get("language", served_language).strip().lower()
        if language not in (served_language, "vie", "vietnamese"):
            raise StreamError(
                CloseCode.UNSUPPORTED_DATA,
                "unsupported_language",
                f"this model transcribes {served_language!r}",
            )
        return cls(int(rate_text), encoding)


def key_from_subprotocols(offered: Sequence[str]) -> str | None:
    """The API key a browser sent as subprotocol "bearer.<base64url(key)>" (browsers cannot
    set headers on a WebSocket), or None."""
    for protocol in offered:
        if protocol.startswith(BEARER_SUBPROTOCOL):
            token = protocol[len(BEARER_SUBPROTOCOL) :]
            try:
                padded = token + "=" * (-len(token) % 4)
                return base64.b64decode(padded, altchars=b"-_", validate=True).decode() or None
            except (binascii.Error, UnicodeDecodeError):
                return None
    return None


def chosen_subprotocol(offered: Sequence[str]) -> str | None:
    """A browser that offered subprotocols fails the handshake unless one is selected:
    SUBPROTOCOL when offered, else the bearer one (it only echoes the client's own key)."""
    if SUBPROTOCOL in offered:
        return SUBPROTOCOL
    return next((p for p in offered if p.startswith(BEARER_SUBPROTOCOL)), None)


def decode_frame(data: bytes, params: StreamParams, limits: StreamLimits) -> np.ndarray:
    """A binary frame -> float32 samples in [-1, 1]."""
    if len(data) > limits.max_frame_bytes:
        raise StreamError(
            CloseCode.TOO_BIG,
            "frame_too_large",
            f"a frame of {len(data)} bytes; the limit is {limits.max_frame_bytes}",
        )
    size = params.dtype.itemsize
    if len(data) % size:
        raise StreamError(
            CloseCode.UNSUPPORTED_DATA,
            "misaligned_frame",
            f"{params.encoding} frames hold whole {size}-byte samples; got {len(data)} bytes",
        )
    samples = np.frombuffer(data, dtype=params.dtype)
    if params.encoding == "pcm_s16le":
        return samples.astype(np.float32) / PCM16_SCALE
    if not np.isfinite(samples).all():
        raise StreamError(CloseCode.UNSUPPORTED_DATA, "non_finite_samples", "NaN or inf samples")
    return np.clip(samples, -1.0, 1.0).astype(np.float32)


def control_message(text: str) -> str:
    """The type of a text frame; only {"type": "end"} is defined."""
    try:
        message = json.loads(text)
    except json.JSONDecodeError:
        message = None
    if not isinstance(message, dict) or message.get("type") != "end":
        raise StreamError(
            CloseCode.UNSUPPORTED_DATA,
            "invalid_message",
            'text frames must be the JSON {"type": "end"}; audio goes in binary frames',
        )
    return "end"


# transcribe(float32 samples at the client's rate, that rate) -> Transcript (times from 0)
Transcribe = Callable[[np.ndarray, int], Awaitable[Transcript]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class StreamObserver:
    """What a stream reports for metrics; this base records nothing."""

    def partial(self, latency_s: float) -> None: ...

    def final(self) -> None: ...


@dataclass
class _Utterance:
    start: int  # sample index in the stream
    audio: np.ndarray
    context: np.ndarray  # the audio just before it (LEFT_CONTEXT_S at most)
    speech: bool
    partial_sent: bool


class StreamSession:
    """One client's stream: audio in, partials and finals out (see the module doc).

    `add_audio` is cheap and never waits on inference; a worker task transcribes closed
    utterances (finals, in order) and the open one (partials, at most one in flight)."""

    def __init__(
        self,
        params: StreamParams,
        limits: StreamLimits,
        transcribe: Transcribe,
        send: Send,
        observer: StreamObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.params, self.limits = params, limits
        self.transcribe, self.send = transcribe, send
        self.observer = observer or StreamObserver()
        self.clock = clock
        self.rate = params.sample_rate
        self.endpointer = Endpointer(self.rate, limits.endpoint_silence_s)
        self.max_samples = math.floor(limits.max_duration_s * self.rate)
        self.received = 0  # samples of the whole stream
        self._start = 0  # sample index where the open utterance starts
        self._chunks: list[np.ndarray] = []
        self._context = np.zeros(0, np.float32)  # the audio before the open utterance
        self._closed: list[_Utterance] = []
        self._partial_sent = False
        self._partial_text = ""
        self._last_partial_at = 0  # stream sample count at the last partial started
        self._last_audio_at = clock()
        self._finals: list[str] = []
        self._work = asyncio.Event()
        self._ending = False
        self._worker: asyncio.Task | None = None
        self._failure: BaseException | None = None

    # ------------------------------------------------------------------ audio in

    def add_audio(self, data: bytes) -> None:
        samples = decode_frame(data, self.params, self.limits)
        if self.received + len(samples) > self.max_samples:
            raise StreamError(
                CloseCode.TOO_BIG,
                "stream_too_long",
                f"a stream may carry {self.limits.max_duration_s:.0f} s of audio",
            )
        self._raise_if_failed()
        self.received += len(samples)
        self._last_audio_at = self.clock()
        self._chunks.append(samples)
        cut = self.endpointer.push(samples)
        if cut is not None:
            self._close_utterance(cut * self.endpointer.frame)
        elif self._open_samples() >= self.limits.max_utterance_s * self.rate:
            frame = self.endpointer.quietest_frame(CUT_SEARCH_S)
            self._close_utterance(max(1, frame) * self.endpointer.frame)
        self._work.set()
        if self._worker is None:
            self._worker = asyncio.create_task(self._run())

    def _open_samples(self) -> int:
        return self.received - self._start

    def _open_audio(self) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, np.float32)

    def _close_utterance(self, offset: int) -> None:
        """Close the open utterance `offset` samples after its start."""
        audio = self._open_audio()
        offset = min(offset, len(audio))
        heard = self.endpointer.speech_frames >= MIN_SPEECH_FRAMES
        closed, context = audio[:offset], self._context
        self._closed.append(_Utterance(self._start, closed, context, heard, self._partial_sent))
        keep = round(LEFT_CONTEXT_S * self.rate)
        self._context = np.concatenate([context, closed])[-keep:] if keep else context[:0]
        self._chunks = [audio[offset:]]
        self._start += offset
        self.endpointer.restart_at(offset // self.endpointer.frame)
        self._partial_sent, self._partial_text = False, ""
        self._last_partial_at = self._start

    # ------------------------------------------------------------------ inference

    async def _run(self) -> None:
        try:
            while True:
                await self._work.wait()
                self._work.clear()
                while self._closed:
                    await self._final(self._closed.pop(0))
                if self._ending:
                    return
                if self._partial_due():
                    await self._partial()
        except BaseException as exc:  # reported by the next add_audio / finish
            self._failure = exc
            raise

    def _partial_due(self) -> bool:
        new = self.received - self._last_partial_at
        heard = self.endpointer.speech_frames >= MIN_SPEECH_FRAMES
        return heard and new >= self.limits.partial_interval_s * self.rate

    async def _heard(self, audio: np.ndarray, context: np.ndarray) -> list[Word]:
        """The words of `audio`, encoded after its left context; times from its start. A
        word belongs to the utterance when its middle lies after the context."""
        transcript = await self.transcribe(np.concatenate([context, audio]), self.rate)
        lead = len(context) / self.rate
        return [
            Word(w.word, max(0.0, w.start - lead), w.end - lead)
            for w in transcript.words
            if (w.start + w.end) / 2 >= lead
        ]

    async def _partial(self) -> None:
        self._last_partial_at = self.received
        heard_at, start, audio = self._last_audio_at, self._start, self._open_audio().copy()
        words = await self._heard(audio, self._context.copy())
        text = " ".join(w.word for w in words)
        if start != self._start or not text or text == self._partial_text:
            return  # the utterance closed meanwhile (its final follows), or nothing new
        self._partial_text, self._partial_sent = text, True
        end = self._s(start + len(audio))  # how far into the stream this partial has heard
        await self.send({"type": "partial", "text": text, "start": self._s(start), "end": end})
        self.observer.partial(self.clock() - heard_at)

    async def _final(self, utterance: _Utterance) -> None:
        if not utterance.speech and not utterance.partial_sent:
            return
        words = await self._heard(utterance.audio, utterance.context)
        text = " ".join(w.word for w in words)
        if not text and not utterance.partial_sent:
            return
        offset = self._s(utterance.start)
        await self.send({
            "type": "final", "text": text, "start": offset,
            "end": self._s(utterance.start + len(utterance.audio)),
            "words": [
                {"word": w.word, "start": round(offset + w.start, 3),
                 "end": round(offset + w.end, 3)}
                for w in words
            ],
        })  # fmt: skip
        if text:
            self._finals.append(text)
        self.observer.final()

    def _s(self, samples: int) -> float:
        return round(samples / self.rate, 3)

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    # ------------------------------------------------------------------ the end

    def idle_for(self) -> float:
        return self.clock() - self._last_audio_at

    async def finish(self) -> dict[str, Any]:
        """The client's audio ended: close the open utterance, wait for every final, and
        return (and send) the "done" message."""
        self._raise_if_failed()
        if self._open_samples() > 0:
            self._close_utterance(self._open_samples())
        self._ending = True
        self._work.set()
        if self._worker is None:
            self._worker = asyncio.create_task(self._run())
        await self._worker
        done = {"type": "done", "text": " ".join(self._finals), "duration": self._s(self.received)}
        await self.send(done)
        return done

    async def flush(self) -> None:
        """Finals for what has been heard (before an error closes the stream), best effort."""
        if self._failure is None and self._open_samples() > 0:
            self._close_utterance(self._open_samples())
        self._ending = True
        self._work.set()
        if self._worker is not None and self._failure is None:
            await asyncio.shield(self._worker)

    async def cancel(self) -> None:
        """The client went away: stop at once, free everything."""
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._worker
        self._chunks, self._closed = [], []
