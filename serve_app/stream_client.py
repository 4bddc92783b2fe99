"""The reference client of WS /v1/stream: `vi-asr stream FILE --url ...`.

Decodes the file like the service does (16 kHz mono), then sends it as pcm_s16le frames of
CHUNK_S at `rate` x real time (0: as fast as the socket takes it) from a sender thread while
the main thread prints what comes back: partials, finals and the final "done".
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np

from serve_app.audio import SAMPLE_RATE, load_audio_file
from serve_app.streaming import STREAM_PATH, SUBPROTOCOL

CHUNK_S = 0.1  # audio per binary frame
PCM16_MAX = 32767


class StreamFailed(Exception):
    """The service ended the stream with an error message (or closed without "done")."""


def stream_url(url: str) -> str:
    """ws(s)://host:port/v1/stream?... from an http(s) or ws(s) base URL (path kept if it
    already names the stream route)."""
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if not path.endswith(STREAM_PATH):
        path += STREAM_PATH
    query = urlencode({"sample_rate": SAMPLE_RATE, "encoding": "pcm_s16le", "language": "vi"})
    return urlunsplit((scheme, parts.netloc, path, query, ""))


def pcm_frames(audio: np.ndarray, chunk_s: float = CHUNK_S) -> list[bytes]:
    step = max(1, round(chunk_s * SAMPLE_RATE))
    pcm = (np.clip(audio, -1.0, 1.0) * PCM16_MAX).astype("<i2")
    return [pcm[i : i + step].tobytes() for i in range(0, len(pcm), step)]


def stream_audio(
    audio: np.ndarray,
    url: str,
    rate: float = 1.0,
    api_key: str | None = None,
    on_message: Callable[[dict[str, Any]], None] = lambda m: None,
    open_timeout_s: float = 30.0,
    on_start: Callable[[float], None] = lambda t: None,
) -> dict[str, Any]:
    """Stream 16 kHz mono float32 audio; returns the "done" message. `on_start` gets the
    time.monotonic() at which the first frame goes out (frame i leaves i * CHUNK_S / rate
    later)."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    with connect(
        stream_url(url),
        additional_headers=headers,
        subprotocols=[SUBPROTOCOL],
        open_timeout=open_timeout_s,
        max_size=None,
    ) as socket:
        sender = threading.Thread(target=_send, args=(socket, audio, rate, on_start), daemon=True)
        sender.start()
        try:
            while True:
                message = json.loads(socket.recv())
                on_message(message)
                if message["type"] == "done":
                    return message
                if message["type"] == "error":
                    raise StreamFailed(f"{message['code']}: {message['message']}")
        except ConnectionClosed as exc:
            raise StreamFailed(f"the service closed the stream ({exc})") from None
        finally:
            sender.join(timeout=1.0)


def _send(socket: Any, audio: np.ndarray, rate: float, on_start: Callable[[float], None]) -> None:
    from websockets.exceptions import ConnectionClosed

    started = time.monotonic()
    on_start(started)
    try:
        for i, frame in enumerate(pcm_frames(audio)):
            if rate > 0:  # frame i may go once i chunks of audio have "happened"
                delay = started + i * CHUNK_S / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            socket.send(frame)
        socket.send(json.dumps({"type": "end"}))
    except ConnectionClosed:
        pass  # the receiver reports why


def print_message(message: dict[str, Any]) -> None:
    kind = message["type"]
    if kind == "partial":
        print(f"partial {message['start']:8.2f}          {message['text']}", flush=True)
    elif kind == "final":
        print(
            f"final   {message['start']:8.2f}-{message['end']:<8.2f} {message['text']}", flush=True
        )
    elif kind == "done":
        print(f"done    {message['duration']:8.2f} s        {message['text']}", flush=True)


def stream_file(path: Path, url: str, rate: float, api_key: str | None, as_json: bool) -> int:
    audio = load_audio_file(path)

    def show(message: dict[str, Any]) -> None:
        if as_json:
            print(json.dumps(message, ensure_ascii=False), flush=True)
        else:
            print_message(message)

    stream_audio(audio, url, rate, api_key, show)
    return 0
