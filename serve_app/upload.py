"""The request side of the HTTP API: each upload read once as raw bytes (multipart or a raw
audio body, with size and slow-upload limits), and every form field checked before any work.
Errors are `ApiError`s; `serve_app.api` turns them into JSON responses at the edge.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message

MULTIPART_OVERHEAD_BYTES = 64 * 1024  # boundaries and small fields around the file part
# A body trickled in (slow loris) would hold an ingress slot until the proxy's request timeout
# (minutes). Any upload gets UPLOAD_GRACE_S, then must average MIN_UPLOAD_BYTES_PER_S or 408.
UPLOAD_GRACE_S = 20.0
MIN_UPLOAD_BYTES_PER_S = 1024
MAX_FORM_FIELDS = 32
MAX_ECHOED_CHARS = 64  # of a client's field value quoted back in an error message
OPENAI_MODEL_ALIASES = frozenset({"whisper-1", "default"})  # what SDK examples send
# The model id the original PhoWhisper-CTC service listed and its clients send by default.
SEED_MODEL_ALIASES = frozenset({"phowhisper-tiny-ctc"})
MODEL_ALIASES = OPENAI_MODEL_ALIASES | SEED_MODEL_ALIASES
# Its optional `model_type` (pytorch|onnx) picked a runtime; here both run the ONNX model.
MODEL_TYPES = ("pytorch", "onnx")
SERVED_MODEL_TYPE = "onnx"
LANGUAGE_ALIASES = {"vi": "vi", "vie": "vi", "vi-vn": "vi", "vietnamese": "vi"}
TRANSCRIBE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
RAW_AUDIO_TYPES = ("audio/", "application/octet-stream")


class ApiError(Exception):
    """A request the API itself rejects (bad field, auth, media type)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Upload:
    audio: bytes
    fields: dict[str, list[str]]

    def get(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None


def _with_upload_deadline(request: Request) -> Request:
    """The same request, whose body must keep arriving (see UPLOAD_GRACE_S)."""
    started = time.monotonic()
    received = 0

    async def receive() -> Message:
        nonlocal received
        deadline = started + UPLOAD_GRACE_S + received / MIN_UPLOAD_BYTES_PER_S
        try:
            message = await asyncio.wait_for(request.receive(), deadline - time.monotonic())
        except TimeoutError:
            raise ApiError(
                408,
                "upload_too_slow",
                f"the upload sent {received} bytes in {time.monotonic() - started:.0f} s; "
                f"after {UPLOAD_GRACE_S:.0f} s it must average {MIN_UPLOAD_BYTES_PER_S} bytes/s",
            ) from None
        received += len(message.get("body", b""))
        return message

    return Request(request.scope, receive)


async def read_upload(request: Request, max_bytes: int) -> Upload:
    """A multipart form with a `file` part, or a raw `audio/*` body (fields in the query)."""
    request = _with_upload_deadline(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():
        slack = MULTIPART_OVERHEAD_BYTES if content_type == "multipart/form-data" else 0
        if int(declared) > max_bytes + slack:
            raise ApiError(
                413, "audio_too_large", f"upload is {declared} bytes, the limit is {max_bytes}"
            )
    if content_type == "multipart/form-data":
        return await _read_multipart(request, max_bytes)
    if content_type.startswith(RAW_AUDIO_TYPES):
        audio = await _read_body(request, max_bytes)
        fields = {k: request.query_params.getlist(k) for k in request.query_params}
        return Upload(audio, fields)
    raise ApiError(
        415,
        "unsupported_media_type",
        f"send multipart/form-data with a `file` part, or a raw audio/* body; "
        f"got Content-Type {content_type or 'none'!r}",
    )


async def _read_multipart(request: Request, max_bytes: int) -> Upload:
    async with request.form(max_files=1, max_fields=MAX_FORM_FIELDS) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "missing_file", "the form has no `file` part with the audio")
        audio = await upload.read(max_bytes + 1)
        if len(audio) > max_bytes:
            raise ApiError(413, "audio_too_large", f"upload is over the {max_bytes} byte limit")
        fields: dict[str, list[str]] = {}
        for key, value in form.multi_items():
            if isinstance(value, str):
                fields.setdefault(key, []).append(value)
    return Upload(audio, fields)


async def _read_body(request: Request, max_bytes: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, "audio_too_large", f"upload is over the {max_bytes} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------------------------------
# Field validation


def _echo(value: str) -> str:
    """A client's value quoted in an error, cut short: a 1 MB field is not sent back."""
    if len(value) <= MAX_ECHOED_CHARS:
        return repr(value)
    return f"{value[:MAX_ECHOED_CHARS]!r}... ({len(value)} characters)"


def _check_language(value: str | None, served: str) -> None:
    if not value:
        return
    code = LANGUAGE_ALIASES.get(value.strip().lower())
    if code != served:
        raise ApiError(
            400,
            "unsupported_language",
            f"language {_echo(value)} is not served; this model transcribes {served!r}",
        )


def _check_model(value: str | None, served: str) -> None:
    if value and value not in {served, *MODEL_ALIASES}:
        raise ApiError(
            400, "model_not_found", f"model {_echo(value)} is not served; use {served!r}"
        )


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ApiError(
            400, f"invalid_{name}", f"{name} {_echo(value)} is not one of {', '.join(allowed)}"
        )
    return value


@dataclass(frozen=True)
class Options:
    fmt: str
    granularities: frozenset[str]


def parse_options(upload: Upload, model: str, language: str) -> Options:
    """Every field checked against what is served (`model`, `language`), before any work."""
    _check_language(upload.get("language"), language)
    _check_model(upload.get("model"), model)
    if model_type := upload.get("model_type"):
        _check_choice("model_type", model_type, MODEL_TYPES)
    fmt = upload.get("response_format") or "json"
    granularities = upload.fields.get("timestamp_granularities[]", []) + upload.fields.get(
        "timestamp_granularities", []
    )
    return Options(
        fmt=_check_choice("response_format", fmt, TRANSCRIBE_FORMATS),
        granularities=frozenset(
            _check_choice("timestamp_granularity", g, GRANULARITIES) for g in granularities
        ),
    )
