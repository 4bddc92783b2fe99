"""Upload limits the hostile-input suite added to the API, without Ray: a body trickled in
(slow loris) is cut with a 408, and an error never quotes a huge field back."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.testclient import TestClient

from serve_app import upload
from serve_app.api import ApiSettings, PipelineResult, ServiceInfo, create_app
from serve_app.formats import Transcript

TRANSCRIPT = Transcript("xin chào", "vi", 1.0, [], [])


class EchoPipeline:
    info = ServiceInfo(model="vi-test", precision="int8")

    async def transcribe(self, audio: bytes) -> PipelineResult:
        return PipelineResult(TRANSCRIPT)

    async def health(self) -> dict[str, str]:
        return {"pipeline": "ok"}


def post(parts: list[tuple[float, bytes]], content_type: bytes, ends: bool) -> tuple[int, dict]:
    """Drive the ASGI app directly: each body part arrives after its delay (s); when
    `ends` is false the client then stalls, as a slow-loris client does."""
    app = create_app(EchoPipeline(), ApiSettings())
    pending = list(parts)
    sent: list[dict] = []

    async def receive() -> dict:
        if not pending:
            await asyncio.sleep(3600)
        delay, chunk = pending.pop(0)
        await asyncio.sleep(delay)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending) or not ends}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/transcribe",
        "raw_path": b"/transcribe",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5000),
        "headers": [(b"content-type", content_type)],
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


@pytest.mark.parametrize("content_type", [b"audio/wav", b"multipart/form-data; boundary=b"])
def test_a_trickled_upload_gets_408(monkeypatch, content_type):
    monkeypatch.setattr(upload, "UPLOAD_GRACE_S", 0.5)
    monkeypatch.setattr(upload, "MIN_UPLOAD_BYTES_PER_S", 100)
    trickle = [(0.0, b"--b\r\n")] + [(0.1, b"x")] * 100  # 10 bytes/s
    status, body = post(trickle, content_type, ends=False)
    assert status == 408
    assert body["error"]["code"] == "upload_too_slow"


def test_a_stalled_upload_gets_408(monkeypatch):
    monkeypatch.setattr(upload, "UPLOAD_GRACE_S", 0.3)
    status, body = post([(0.0, b"RIFF")], b"audio/wav", ends=False)
    assert status == 408 and "4 bytes" in body["error"]["message"]


def test_an_upload_at_the_minimum_rate_is_not_cut(monkeypatch):
    monkeypatch.setattr(upload, "UPLOAD_GRACE_S", 0.2)
    monkeypatch.setattr(upload, "MIN_UPLOAD_BYTES_PER_S", 1000)
    steady = [(0.05, b"x" * 200)] * 10  # 4000 bytes/s for 0.5 s: past the grace period
    status, body = post(steady, b"audio/wav", ends=True)
    assert status == 200, body
    assert body["text"] == "xin chào"


def test_errors_quote_a_huge_field_value_short():
    client = TestClient(create_app(EchoPipeline(), ApiSettings()), raise_server_exceptions=False)
    for field in ("language", "model", "response_format"):
        response = client.post(
            "/transcribe", files={"file": ("a.wav", b"RIFF")}, data={field: "y" * 500_000}
        )
        assert response.status_code == 400
        message = response.json()["error"]["message"]
        assert len(message) < 300 and "500000 characters" in message
