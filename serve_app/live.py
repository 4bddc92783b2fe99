"""The ingress' live side: the WebSocket route (`WS /v1/stream`, protocol in
serve_app/streaming.py) and the page that streams a browser's microphone to it (`GET /live`).

One `StreamSession` per socket; every transcription is a `Pipeline.transcribe_samples` call,
so streams share the Encoder's batches with uploads. Bounds per ingress replica: at most
`StreamLimits.max_streams` open streams (then 1013), an idle timeout, a maximum stream
duration and frame size. A client that disconnects cancels its session at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from importlib import resources
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from serve_app.errors import InputError
from serve_app.formats import Transcript
from serve_app.streaming import (
    STREAM_PATH,
    CloseCode,
    StreamError,
    StreamLimits,
    StreamObserver,
    StreamParams,
    StreamSession,
    chosen_subprotocol,
    control_message,
    key_from_subprotocols,
)
from serve_app.tracing import server_span

LIVE_PAGE = "live.html"


class _Overloaded(Exception):
    pass


def live_page() -> str:
    return resources.files("serve_app").joinpath("static", LIVE_PAGE).read_text("utf-8")


async def live(_: Request) -> Response:
    return HTMLResponse(live_page(), headers={"Cache-Control": "no-cache"})


class StreamEndpoint:
    """The WebSocket handler; `pipeline`, `metrics` and `api_key` as the HTTP routes have."""

    def __init__(
        self, pipeline: Any, metrics: Any, api_key: str | None, limits: StreamLimits
    ) -> None:
        self.pipeline, self.metrics, self.api_key, self.limits = pipeline, metrics, api_key, limits
        self.active = 0

    def _authorized(self, websocket: WebSocket) -> bool:
        if not self.api_key:
            return True
        scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
        candidates = [
            token.strip() if scheme.lower() == "bearer" else None,
            websocket.query_params.get("api_key"),
            key_from_subprotocols(_offered(websocket)),
        ]
        expected = self.api_key.encode()
        return any(c and hmac.compare_digest(c.encode(), expected) for c in candidates)

    async def handle(self, websocket: WebSocket) -> None:
        # One trace per stream: its transcriptions' stage spans are children of this one.
        with server_span(STREAM_PATH, "WS", websocket.scope.get("headers", ())):
            await self._handle(websocket)

    async def _handle(self, websocket: WebSocket) -> None:
        await websocket.accept(chosen_subprotocol(_offered(websocket)))
        if self.active >= self.limits.max_streams:
            await self._close(websocket, StreamError(
                CloseCode.TRY_AGAIN, "too_many_streams",
                f"this replica serves {self.limits.max_streams} streams at once; retry shortly",
            ))  # fmt: skip
            return
        self.active += 1
        self.metrics.stream_opened()
        session: StreamSession | None = None
        try:
            if not self._authorized(websocket):
                raise StreamError(CloseCode.POLICY, "invalid_api_key", "missing or wrong API key")
            info = self.pipeline.info
            params = StreamParams.from_query(websocket.query_params, info.language)
            session = StreamSession(
                params, self.limits, self._transcribe, websocket.send_json, _Observer(self.metrics)
            )
            await self._serve(websocket, session)
            await websocket.close(CloseCode.NORMAL)
        except WebSocketDisconnect:
            if session is not None:
                await session.cancel()  # the client is gone: stop, free everything
        except StreamError as exc:
            if session is not None and exc.close_code == CloseCode.TOO_BIG:
                await _best_effort(session.flush())
            if session is not None:
                await session.cancel()
            await self._close(websocket, exc)
        except Exception as exc:  # a fault of ours: say so, close 1011, keep serving others
            if session is not None:
                await session.cancel()
            await self._close(websocket, _as_stream_error(exc))
        finally:
            self.active -= 1
            self.metrics.stream_closed()

    async def _serve(self, websocket: WebSocket, session: StreamSession) -> None:
        while True:
            try:
                message = await asyncio.wait_for(websocket.receive(), self.limits.idle_timeout_s)
            except TimeoutError:
                raise StreamError(
                    CloseCode.POLICY,
                    "idle_timeout",
                    f"no audio for {self.limits.idle_timeout_s:.0f} s",
                ) from None
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            if message.get("bytes") is not None:
                session.add_audio(message["bytes"])
            elif message.get("text") is not None:
                control_message(message["text"])  # "end" (anything else raises)
                await session.finish()
                return

    async def _transcribe(self, samples: np.ndarray, sample_rate: int) -> Transcript:
        try:
            return await self.pipeline.transcribe_samples(samples, sample_rate)
        except InputError as exc:
            raise StreamError(CloseCode.UNSUPPORTED_DATA, exc.code, str(exc)) from None

    async def _close(self, websocket: WebSocket, error: StreamError) -> None:
        self.metrics.stream_error(error.code)
        if websocket.application_state != WebSocketState.CONNECTED:
            return
        try:
            await websocket.send_json(error.message())
            await websocket.close(error.close_code, reason=error.code)
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client left first


class _Observer(StreamObserver):
    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics

    def partial(self, latency_s: float) -> None:
        self.metrics.stream_partial(latency_s)

    def final(self) -> None:
        self.metrics.stream_final()


def _offered(websocket: WebSocket) -> list[str]:
    """The subprotocols the client offered. Ray Serve's proxy forwards the headers but not
    the ASGI scope's `subprotocols`, so read the header when the scope has none."""
    offered = websocket.scope.get("subprotocols") or []
    if offered:
        return list(offered)
    header = websocket.headers.get("sec-websocket-protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


def _as_stream_error(exc: Exception) -> StreamError:
    if type(exc).__name__ == "ServiceUnavailable":
        return StreamError(CloseCode.TRY_AGAIN, "overloaded", str(exc))
    message = f"internal error: {type(exc).__name__}"
    return StreamError(CloseCode.INTERNAL, "internal_error", message)


async def _best_effort(awaitable: Any) -> None:
    with contextlib.suppress(Exception):
        await awaitable
