"""The HTTP API: a plain Starlette ASGI app with the transcription pipeline injected.

Ray-free on purpose: `serve_app.deployments.Ingress` builds it around handles to the other
stages, and tests build it around a fake pipeline.
Every error becomes a JSON response in one place (`_error_response`), shaped like OpenAI's
(`{"error": {"code", "message", "type"}}`) so SDK clients surface the message, with the
message also under `detail`, where clients of the original PhoWhisper-CTC service (FastAPI)
look for it. That service's model id, `model_type` field and /health fields are accepted
and answered too (docs/migrating.md).
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app import SERVICE_NAME, __version__
from serve_app.audio import DEFAULT_MAX_BYTES
from serve_app.errors import InputError
from serve_app.formats import (
    LANGUAGE_NAMES,
    Transcript,
    openai_json,
    openai_verbose_json,
    render,
)
from serve_app.live import StreamEndpoint, live
from serve_app.metrics import RequestMetrics, TelemetryMiddleware, note_errors
from serve_app.streaming import STREAM_PATH, StreamLimits
from serve_app.tracing import current_trace_id
from serve_app.upload import (
    MODEL_ALIASES,
    SERVED_MODEL_TYPE,
    ApiError,
    Options,
    parse_options,
    read_upload,
)

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_CHARS = 128  # a client's own id is echoed only when it is this short
TEXT_MEDIA_TYPES = {"text": "text/plain", "srt": "text/plain", "vtt": "text/vtt"}


# ---------------------------------------------------------------------------------------
# What the app needs from the stages behind it


@dataclass(frozen=True)
class ServiceInfo:
    """What GET /, /models and /languages report; taken from the bundle's config."""

    model: str
    precision: str
    language: str = "vi"
    sample_rate: int = 16000
    max_upload_bytes: int = DEFAULT_MAX_BYTES
    max_duration_s: float = 3600.0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PipelineResult:
    transcript: Transcript
    # Per encoded window, the size of the encoder batch it ran in (for load tests).
    encoder_batch_sizes: tuple[int, ...] = ()
    stage_seconds: dict[str, float] = field(default_factory=dict)


class Pipeline(Protocol):
    info: ServiceInfo

    async def transcribe(self, audio: bytes) -> PipelineResult: ...

    async def transcribe_samples(self, samples: np.ndarray, sample_rate: int) -> Transcript:
        """Float32 mono samples at `sample_rate` (a live stream's utterance) -> transcript."""
        ...

    async def health(self) -> dict[str, str]:
        """Stage name -> "ok" or what went wrong."""
        ...


class ServiceUnavailable(Exception):
    """A stage is overloaded or down: the client should retry later (503)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class ApiSettings:
    api_key: str | None = None  # when set, POST routes need `Authorization: Bearer <key>`
    max_upload_bytes: int = DEFAULT_MAX_BYTES
    health_timeout_s: float = 3.0
    # Ray Serve's proxy already sets X-Request-ID on every response (its own 503s too);
    # the app adds it only when it runs without that proxy.
    add_request_id_header: bool = True
    stream_limits: StreamLimits = field(default_factory=StreamLimits)


# ---------------------------------------------------------------------------------------
# Request ids and errors, handled once at the edge


class RequestIdMiddleware:
    """Gives every request an id (the client's X-Request-ID when sane) in scope["state"]."""

    def __init__(self, app: ASGIApp, add_header: bool) -> None:
        self.app = app
        self.add_header = add_header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if self.add_header and message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def _request_id_from(scope: Scope) -> str:
    for key, value in scope.get("headers", []):
        if key == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1").strip()
            if 0 < len(text) <= MAX_REQUEST_ID_CHARS and text.isprintable():
                return text
    return uuid.uuid4().hex


def request_id(request: Request) -> str:
    return request.scope.get("state", {}).get("request_id") or uuid.uuid4().hex


def _error_response(status: int, code: str, message: str, headers=None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"code": code, "message": message, "type": kind}, "detail": message}
    return JSONResponse(body, status_code=status, headers=headers)


async def _on_input_error(_: Request, exc: InputError) -> Response:
    return _error_response(exc.http_status, exc.code, str(exc))


async def _on_api_error(_: Request, exc: ApiError) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return _error_response(exc.status, exc.code, str(exc), headers)


async def _on_unavailable(_: Request, exc: ServiceUnavailable) -> Response:
    retry = exc.retry_after_s
    headers = {"Retry-After": str(max(1, round(retry)))} if retry else None
    return _error_response(503, "service_unavailable", str(exc), headers)


async def _on_http_exception(_: Request, exc: HTTPException) -> Response:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    return _error_response(exc.status_code, code, str(exc.detail), exc.headers)


async def _on_unexpected(_: Request, exc: Exception) -> Response:
    # Only genuine server faults land here: every bad upload raises an InputError.
    return _error_response(500, "internal_error", f"internal error: {type(exc).__name__}")


# ---------------------------------------------------------------------------------------
# The app


def create_app(
    pipeline: Pipeline, settings: ApiSettings | None = None, metrics: RequestMetrics | None = None
) -> ASGIApp:
    settings = settings or ApiSettings()
    metrics = metrics or RequestMetrics()  # the base records nothing; Ingress passes Ray's
    info = pipeline.info
    max_bytes = min(settings.max_upload_bytes, info.max_upload_bytes)

    def authorize(request: Request) -> None:
        if not settings.api_key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), settings.api_key.encode()
        ):
            raise ApiError(401, "invalid_api_key", "missing or wrong `Authorization: Bearer` key")

    async def run(request: Request) -> tuple[Options, PipelineResult, float]:
        """Auth, parse, validate every field, and only then transcribe."""
        started = time.perf_counter()
        authorize(request)
        upload = await read_upload(request, max_bytes)
        options = parse_options(upload, info.model, info.language)
        result = await pipeline.transcribe(upload.audio)
        elapsed = time.perf_counter() - started
        route = request.scope.get("state", {}).get("route", request.url.path)
        metrics.transcribed(route, result.transcript.duration, elapsed, result.stage_seconds)
        return options, result, elapsed

    async def transcribe(request: Request) -> Response:
        options, result, elapsed = await run(request)
        headers = _debug_headers(result)
        t = result.transcript
        if options.fmt in TEXT_MEDIA_TYPES:
            return _text_response(t, options.fmt, headers)
        body = {
            "id": request_id(request),
            **t.to_dict(),
            "model": info.model,
            "model_type": SERVED_MODEL_TYPE,
            "processing_time": round(elapsed, 3),
            "real_time_factor": round(elapsed / t.duration, 4) if t.duration > 0 else None,
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "trace_id": current_trace_id(),
        }
        if options.fmt == "verbose_json":
            body["task"] = "transcribe"
        return JSONResponse(body, headers=headers)

    async def openai_transcriptions(request: Request) -> Response:
        options, result, _ = await run(request)
        headers = _debug_headers(result)
        t = result.transcript
        if options.fmt in TEXT_MEDIA_TYPES:
            return _text_response(t, options.fmt, headers)
        if options.fmt == "json":
            return JSONResponse(openai_json(t), headers=headers)
        body = openai_verbose_json(t, with_words="word" in options.granularities)
        return JSONResponse(body, headers=headers)

    async def root(_: Request) -> Response:
        return JSONResponse(
            {
                "service": SERVICE_NAME,
                "version": __version__,
                "model": info.model,
                "precision": info.precision,
                "language": info.language,
                "auth": "bearer" if settings.api_key else "none",
                "limits": {"max_upload_bytes": max_bytes, "max_duration_s": info.max_duration_s},
                "endpoints": [
                    "POST /transcribe",
                    "POST /v1/audio/transcriptions",
                    "GET /health",
                    "GET /models",
                    "GET /languages",
                    f"WS {STREAM_PATH}",
                    "GET /live",
                ],
            }
        )

    async def health(_: Request) -> Response:
        try:
            stages = await asyncio.wait_for(pipeline.health(), settings.health_timeout_s)
        except TimeoutError:
            stages = {"pipeline": f"no answer within {settings.health_timeout_s} s"}
        ok = bool(stages) and all(v == "ok" for v in stages.values())
        body = {
            "status": "ok" if ok else "unavailable",
            "stages": stages,
            # the fields clients of the original PhoWhisper-CTC service read
            "model_loaded": ok,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "device": "cpu",
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    async def models(_: Request) -> Response:
        entry = {
            "id": info.model,
            "object": "model",
            "owned_by": SERVICE_NAME,
            "name": info.model,
            "description": f"Vietnamese CTC speech recognition ({info.precision} ONNX)",
            "aliases": sorted(MODEL_ALIASES),
            "precision": info.precision,
            "language": info.language,
            **info.details,
        }
        # `data` for OpenAI's SDK, `models` for the original service's UI
        return JSONResponse({"object": "list", "data": [entry], "models": [entry]})

    async def languages(_: Request) -> Response:
        code = info.language
        return JSONResponse({"languages": [{"code": code, "name": LANGUAGE_NAMES.get(code)}]})

    streams = StreamEndpoint(pipeline, metrics, settings.api_key, settings.stream_limits)
    routes = [
        Route("/", root, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/models", models, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/languages", languages, methods=["GET"]),
        Route("/transcribe", transcribe, methods=["POST"]),
        Route("/v1/audio/transcriptions", openai_transcriptions, methods=["POST"]),
        Route("/live", live, methods=["GET"]),
        WebSocketRoute(STREAM_PATH, streams.handle),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers=note_errors(
            {
                InputError: _on_input_error,
                ApiError: _on_api_error,
                ServiceUnavailable: _on_unavailable,
                HTTPException: _on_http_exception,
                Exception: _on_unexpected,
            }
        ),
    )
    app = TelemetryMiddleware(app, metrics, routes=[route.path for route in routes])
    return RequestIdMiddleware(app, add_header=settings.add_request_id_header)


def _text_response(transcript: Transcript, fmt: str, headers: dict[str, str]) -> Response:
    media_type = TEXT_MEDIA_TYPES[fmt]
    return PlainTextResponse(render(transcript, fmt), media_type=media_type, headers=headers)


def _debug_headers(result: PipelineResult) -> dict[str, str]:
    """Server-Timing per stage and the encoder batch sizes: cheap, and what load tests read."""
    headers = {}
    if result.stage_seconds:
        headers["Server-Timing"] = ", ".join(
            f"{stage};dur={seconds * 1000:.1f}" for stage, seconds in result.stage_seconds.items()
        )
    if result.encoder_batch_sizes:
        headers["X-Encoder-Batch-Sizes"] = ",".join(map(str, result.encoder_batch_sizes))
    return headers
