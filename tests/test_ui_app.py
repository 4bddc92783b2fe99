"""The Streamlit UI (ui/) through streamlit.testing's AppTest, every control and every error.

The backend is faked at the HTTP layer only: the service's real Starlette app
(`serve_app.api.create_app`, with its real parsing, auth and JSON errors) runs under uvicorn
on 127.0.0.1 around a canned pipeline, so the UI's real httpx client talks real HTTP. A
switch in front of it can also answer like Ray Serve's proxy (plain-text 503) or a gateway
(HTML 502), which the ingress itself never sends. The pure helpers are tested directly, the
UI's subtitles against the service's renderer (serve_app.formats), which the UI itself may
not import.
"""

from __future__ import annotations

import ast
import importlib.metadata
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as hs
from starlette.responses import PlainTextResponse
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from serve_app import formats
from serve_app.api import ApiSettings, PipelineResult, ServiceInfo, ServiceUnavailable, create_app
from serve_app.errors import AudioTooLongError, UnsupportedAudioError
from serve_app.formats import Segment, Transcript, Word, render, words_to_segments
from tests.conftest import free_port
from ui import client as ui_client
from ui import results, subtitles, waveform

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "ui" / "app.py")
APP_TIMEOUT_S = 60  # first run imports altair/pandas; the machine may be busy
KEY = "ui-test-key"
RATE = 16000
WORDS = [
    Word("xin", 0.2, 0.5),
    Word("chào", 0.6, 1.0),
    Word("các", 1.5, 1.7),
    Word("bạn", 1.8, 2.2),
]
TRANSCRIPT = Transcript("xin chào các bạn", "vi", 2.5, WORDS, words_to_segments(WORDS))
INFO = ServiceInfo(model="vi-test-int8", precision="int8", max_upload_bytes=10 * 2**20)
HEALTHY = {"ingress": "ok", "preprocessor": "ok", "encoder": "ok", "decoder": "ok"}


def wav(seconds: float = 2.5, amplitude: float = 0.5) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    buffer = io.BytesIO()
    sf.write(buffer, amplitude * np.sin(2 * np.pi * 220 * t), RATE, format="WAV")
    return buffer.getvalue()


CLIP = wav()


# ---------------------------------------------------------------------------------------
# The fake backend: the real ingress app on 127.0.0.1, a canned pipeline behind it


@dataclass
class Backend:
    url: str = ""
    transcript: Transcript = TRANSCRIPT
    error: Exception | None = None  # what the pipeline raises instead of transcribing
    stages: dict[str, str] = field(default_factory=lambda: dict(HEALTHY))
    require_key: bool = False
    raw: tuple[int, str, str] | None = None  # (status, body, content type) on every route
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    uploads: list[bytes] = field(default_factory=list)

    def reset(self) -> None:
        fresh = Backend(url=self.url)
        for name in ("transcript", "error", "stages", "require_key", "raw"):
            setattr(self, name, getattr(fresh, name))
        self.requests.clear()
        self.uploads.clear()

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p, _ in self.requests if (m, p) == (method, path))

    # the Pipeline protocol of serve_app.api
    info = INFO

    async def transcribe(self, audio: bytes) -> PipelineResult:
        self.uploads.append(audio)
        if self.error is not None:
            raise self.error
        return PipelineResult(self.transcript, (1,), {"encode": 0.01})

    async def health(self) -> dict[str, str]:
        return dict(self.stages)


def asgi_switch(backend: Backend):
    open_app = create_app(backend)
    keyed_app = create_app(backend, ApiSettings(api_key=KEY))

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        backend.requests.append((scope["method"], scope["path"], headers))
        if backend.raw is not None:
            status, body, media_type = backend.raw
            await PlainTextResponse(body, status, media_type=media_type)(scope, receive, send)
            return
        await (keyed_app if backend.require_key else open_app)(scope, receive, send)

    return app


@pytest.fixture(scope="module")
def server():
    backend = Backend()
    port = free_port()
    config = uvicorn.Config(
        asgi_switch(backend),
        host="127.0.0.1",
        port=port,
        log_level="error",
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uv.started, "the fake backend did not start"
    backend.url = f"http://127.0.0.1:{port}"
    try:
        yield backend
    finally:
        uv.should_exit = True
        thread.join(10)


@pytest.fixture
def backend(server, monkeypatch) -> Backend:
    server.reset()
    monkeypatch.setenv("ASR_URL", server.url)
    for name in ("ASR_API_KEY", "ASR_RAY_DASHBOARD_URL", "ASR_GRAFANA_URL", "ASR_TIMEOUT_S"):
        monkeypatch.delenv(name, raising=False)
    return server


def run_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=APP_TIMEOUT_S).run()
    assert not at.exception, at.exception
    return at


def upload_and_transcribe(at: AppTest, name: str = "clip.wav", data: bytes = CLIP) -> AppTest:
    at.file_uploader(key="upload").set_value((name, data, "audio/wav")).run()
    at.button(key="transcribe_upload").click().run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def sidebar_status(at: AppTest) -> str:
    return " ".join(str(e.value) for e in at.sidebar if hasattr(e, "value"))


# ---------------------------------------------------------------------------------------
# Service status in the sidebar


def test_status_shows_health_stages_model_and_limits(backend):
    at = run_app()
    assert at.text_input(key="url").value == backend.url
    assert texts(at.sidebar.success) == ["Healthy: all 4 stages answer"]
    stages = at.sidebar.dataframe[0].value
    assert dict(zip(stages["stage"], stages["status"], strict=True)) == HEALTHY
    markdown = " ".join(texts(at.sidebar.markdown))
    assert "vi-test-int8" in markdown and "int8" in markdown
    assert "max upload 10 MiB" in " ".join(texts(at.sidebar.caption))
    assert at.sidebar.get("link_button") == []  # no monitoring URL configured
    [live] = at.main.get("link_button")  # the service's live page (WS /v1/stream)
    assert live.proto.url == f"{backend.url}/live"
    assert [backend.count("GET", p) for p in ("/health", "/models", "/")] == [1, 1, 1]


def test_status_names_the_failing_stage(backend):
    backend.stages["encoder"] = "ActorDiedError: replica gone"
    at = run_app()
    assert texts(at.sidebar.error) == ["Unavailable: encoder: ActorDiedError: replica gone"]
    assert not at.sidebar.success


def test_unreachable_service_is_one_readable_message(backend, monkeypatch):
    monkeypatch.setenv("ASR_URL", f"127.0.0.1:{free_port()}")  # nothing listens, no scheme
    at = run_app()
    [message] = texts(at.sidebar.error)
    assert message.startswith("Cannot reach the service at http://127.0.0.1:")
    assert not at.exception


def test_refresh_status_asks_again(backend):
    at = run_app()
    at.button(key="refresh_status").click().run()
    assert backend.count("GET", "/health") == 2
    at.run()  # an ordinary rerun uses what it has
    assert backend.count("GET", "/health") == 2


def test_proxy_plain_text_503_on_health_is_readable(backend):
    backend.raw = (503, "Service Unavailable: application asr is not running", "text/plain")
    at = run_app()
    [message] = texts(at.sidebar.error)
    assert "busy or one of its stages is down (HTTP 503)" in message
    assert "application asr is not running" in message


def test_monitoring_links_appear_when_configured(backend, monkeypatch):
    monkeypatch.setenv("ASR_RAY_DASHBOARD_URL", "http://127.0.0.1:8265")
    at = run_app()
    links = at.sidebar.get("link_button")
    assert [(b.proto.label, b.proto.url) for b in links] == [
        ("Ray dashboard", "http://127.0.0.1:8265")
    ]
    at.text_input(key="grafana_url").set_value("127.0.0.1:3000").run()
    links = at.sidebar.get("link_button")
    assert [b.proto.url for b in links] == ["http://127.0.0.1:8265", "http://127.0.0.1:3000"]


def test_changing_url_in_the_sidebar_switches_service(backend, monkeypatch):
    monkeypatch.setenv("ASR_URL", f"http://127.0.0.1:{free_port()}")
    at = run_app()
    assert at.sidebar.error  # the environment's URL has no service
    at.text_input(key="url").set_value(backend.url + "/").run()
    assert texts(at.sidebar.success) == ["Healthy: all 4 stages answer"]
    assert not at.sidebar.error


# ---------------------------------------------------------------------------------------
# Upload, record, transcribe, results


def test_transcribe_button_waits_for_audio(backend):
    at = run_app()
    assert at.button(key="transcribe_upload").disabled
    assert at.button(key="transcribe_record").disabled
    at.file_uploader(key="upload").set_value(("clip.wav", CLIP, "audio/wav")).run()
    assert not at.button(key="transcribe_upload").disabled
    assert at.get("audio")  # the player for the upload
    assert backend.count("POST", "/transcribe") == 0  # nothing is sent before the click


def test_upload_shows_transcript_times_metrics_waveform_and_words(backend):
    at = upload_and_transcribe(run_app())
    assert backend.uploads == [CLIP]  # the file's bytes, unchanged, over HTTP
    assert at.subheader[0].value == "Transcript · clip.wav"
    assert "xin chào các bạn" in " ".join(texts(at.markdown))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Duration"] == "2.50 s" and metrics["Words"] == "4"
    assert metrics["Processing time"].endswith(" ms") and metrics["Real-time factor"] != "–"
    [code] = at.code
    assert (
        code.value
        == "[00:00.20 → 00:02.20] [00:00.20] xin [00:00.60] chào [00:01.50] các [00:01.80] bạn"
    )
    words = at.main.dataframe[0].value
    assert list(words["word"]) == ["xin", "chào", "các", "bạn"]
    assert list(words["start (s)"]) == [0.2, 0.6, 1.5, 1.8]
    assert list(words["end (s)"]) == [0.5, 1.0, 1.7, 2.2]
    [chart] = at.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    assert len(spec["layer"]) == 5  # waveform band + word spans, starts, ends, labels
    assert not at.error


def test_downloads_carry_txt_srt_vtt_json_of_the_result(backend, monkeypatch):
    stored: dict[str, tuple[bytes, str]] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def spy(self, path_or_data, mimetype, kind, filename=None):
        if filename:
            stored[filename] = (path_or_data, mimetype)
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", spy)
    at = upload_and_transcribe(run_app(), name="bài nói.mp3")
    labels = [b.label for b in at.get("download_button")]
    assert labels[:4] == ["Download .txt", "Download .srt", "Download .vtt", "Download .json"]
    assert stored["bài nói.txt"] == (b"xin ch\xc3\xa0o c\xc3\xa1c b\xe1\xba\xa1n\n", "text/plain")
    assert stored["bài nói.srt"][0].decode() == render(TRANSCRIPT, "srt")
    assert stored["bài nói.vtt"][0].decode() == render(TRANSCRIPT, "vtt")
    body = json.loads(stored["bài nói.json"][0])
    assert body["text"] == "xin chào các bạn" and body["model"] == "vi-test-int8"
    assert [w["word"] for w in body["words"]] == ["xin", "chào", "các", "bạn"]
    at.get("download_button")[1].click().run()  # clicking downloads, it re-sends nothing
    assert backend.count("POST", "/transcribe") == 1


def test_record_from_microphone_and_transcribe(backend):
    at = run_app()
    recording = wav(1.0, 0.2)
    at.audio_input(key="record").set_value(("recording.wav", recording, "audio/wav")).run()
    assert not at.button(key="transcribe_record").disabled
    at.button(key="transcribe_record").click().run()
    assert not at.exception
    assert backend.uploads == [recording]
    assert at.subheader[0].value.startswith("Transcript · recording-")
    assert at.get("vega_lite_chart")


def test_silence_says_no_speech(backend):
    backend.transcript = Transcript("", "vi", 1.0)
    at = upload_and_transcribe(run_app(), data=wav(1.0, 0.0))
    assert texts(at.info) == ["No speech recognised (silence or noise)."]
    assert not at.code  # no time marks without words
    assert at.metric[3].value == "0"


def test_audio_the_ui_cannot_draw_still_gets_a_transcript(backend):
    at = upload_and_transcribe(run_app(), name="voice.m4a", data=b"\x00\x00\x00\x20ftypM4A ")
    assert "xin chào các bạn" in " ".join(texts(at.markdown))
    assert not at.get("vega_lite_chart")
    assert any("No waveform" in c for c in texts(at.caption))


def test_api_key_from_the_sidebar_is_sent(backend):
    backend.require_key = True
    at = upload_and_transcribe(run_app())
    [message] = texts(at.error)
    assert (
        message.startswith("The service needs an API key")
        and "(HTTP 401, invalid_api_key)" in message
    )
    at.text_input(key="api_key").set_value(KEY).run()
    at.button(key="transcribe_upload").click().run()
    assert not at.error
    assert "xin chào các bạn" in " ".join(texts(at.markdown))
    method, path, headers = backend.requests[-1]
    assert (method, path, headers["authorization"]) == ("POST", "/transcribe", f"Bearer {KEY}")


def test_api_key_from_the_environment(backend, monkeypatch):
    backend.require_key = True
    monkeypatch.setenv("ASR_API_KEY", KEY)
    at = upload_and_transcribe(run_app())
    assert not at.error and len(at.metric) == 4


# ---------------------------------------------------------------------------------------
# Errors from the service: a readable message, never a traceback


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            AudioTooLongError("audio is 4000 s long, the limit is 3600 s"),
            "The audio is too large or too long for the service (HTTP 413, audio_too_long): "
            "audio is 4000 s long, the limit is 3600 s",
        ),
        (
            UnsupportedAudioError("not a decodable audio file"),
            "The service could not decode this file as audio (HTTP 415, unsupported_audio): "
            "not a decodable audio file",
        ),
        (
            ServiceUnavailable("encoder is at capacity", retry_after_s=3),
            "The service is busy or one of its stages is down (HTTP 503, service_unavailable): "
            "encoder is at capacity Retry in about 3 s.",
        ),
        (
            RuntimeError("boom"),
            "The service failed on this request (HTTP 500, internal_error): "
            "internal error: RuntimeError",
        ),
    ],
    ids=["413", "415", "503", "500"],
)
def test_service_errors_are_messages(backend, error, expected):
    backend.error = error
    at = upload_and_transcribe(run_app())
    assert texts(at.error) == [expected]
    assert not at.exception and not at.metric  # no half-drawn result


def test_proxy_and_gateway_errors_are_messages(backend):
    at = run_app()
    backend.raw = (503, "Too many requests in the queue", "text/plain")
    at = upload_and_transcribe(at)
    assert texts(at.error) == [
        "The service is busy or one of its stages is down (HTTP 503): "
        "Too many requests in the queue"
    ]
    backend.raw = (502, "<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
    at.button(key="transcribe_upload").click().run()
    [message] = texts(at.error)
    assert message.startswith("A proxy in front of the service could not reach it (HTTP 502)")
    assert not at.exception


def test_error_then_success_keeps_only_the_result(backend):
    backend.error = UnsupportedAudioError("not a decodable audio file")
    at = upload_and_transcribe(run_app())
    assert at.error
    backend.error = None
    at.button(key="transcribe_upload").click().run()
    assert not at.error and at.metric


def test_service_gone_during_transcribe(backend, monkeypatch):
    at = run_app()
    at.text_input(key="url").set_value(f"http://127.0.0.1:{free_port()}").run()
    at = upload_and_transcribe(at)
    [_, message] = [e.value for e in at.error]  # sidebar status, then the request's error
    assert message.startswith("Cannot reach the service at http://127.0.0.1:")


# ---------------------------------------------------------------------------------------
# History of this session


def test_history_lists_results_redownloads_shows_and_clears(backend):
    at = run_app()
    assert at.subheader[-1].value == "History (0)"
    at = upload_and_transcribe(at, name="first.wav")
    backend.transcript = Transcript("một hai", "vi", 1.0, [Word("một", 0.1, 0.4)])
    at = upload_and_transcribe(at, name="second.flac")
    assert at.subheader[-1].value == "History (2)"
    table = at.main.dataframe[-1].value
    assert list(table["source"]) == ["second.flac", "first.wav"]
    assert list(table["words"]) == [1, 4]
    choice = at.selectbox(key="history_choice")
    assert choice.value == 0
    choice.set_value(1).run()
    history_downloads = [b for b in at.get("download_button") if "dl_history" in b.id]
    assert [b.label for b in history_downloads] == [
        "Download .txt",
        "Download .srt",
        "Download .vtt",
        "Download .json",
    ]
    at.button(key="history_show").click().run()
    assert at.subheader[0].value == "Transcript · first.wav"
    assert not at.get("vega_lite_chart")  # only the latest audio is kept
    assert backend.count("POST", "/transcribe") == 2  # showing again sends nothing
    at.button(key="history_clear").click().run()
    assert at.subheader[-1].value == "History (0)"


# ---------------------------------------------------------------------------------------
# The pure helpers


def test_settings_from_environment():
    env = {"ASR_URL": "10.0.0.5:8000/", "ASR_API_KEY": " k ", "ASR_TIMEOUT_S": "12"}
    assert ui_client.Settings.from_env(env) == ui_client.Settings("http://10.0.0.5:8000", "k", 12)
    defaults = ui_client.Settings.from_env({"ASR_TIMEOUT_S": "soon"})
    assert defaults == ui_client.Settings(ui_client.DEFAULT_URL, None, ui_client.DEFAULT_TIMEOUT_S)


def test_error_messages_from_responses():
    request = httpx.Request("POST", "http://127.0.0.1/transcribe")
    body = {"error": {"code": "audio_too_large", "message": "upload is over the limit"}}
    error = ui_client.error_from_response(httpx.Response(413, json=body, request=request))
    assert (error.status, error.code) == (413, "audio_too_large")
    assert str(error) == (
        "The audio is too large or too long for the service (HTTP 413, audio_too_large): "
        "upload is over the limit"
    )
    busy = httpx.Response(503, text="busy", headers={"Retry-After": "2"}, request=request)
    assert ui_client.error_from_response(busy).retry_after_s == 2
    odd = ui_client.error_from_response(httpx.Response(418, text="x" * 1000, request=request))
    assert odd.message.startswith("The service answered HTTP 418 (HTTP 418): xxx")
    assert len(odd.message) < 400


def test_timeout_is_a_message():
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    settings = ui_client.Settings("http://127.0.0.1:1", None, 1)
    client = ui_client.AsrClient(settings, httpx.MockTransport(slow))
    with client, pytest.raises(ui_client.ServiceError, match="No answer from the service"):
        client.transcribe(b"RIFF", "a.wav")


def test_clock_and_timed_lines():
    assert results.clock(0) == "00:00.00"
    assert results.clock(61.256) == "01:01.26"
    assert results.clock(3725.5) == "1:02:05.50"
    words = [Word("a", 0.0, 0.5), Word("b.", 0.6, 1.0), Word("c", 5.0, 5.5)]
    body = Transcript("a b. c", "vi", 6.0, words, words_to_segments(words)).to_dict()
    result = results.Result("x.wav", body)
    assert results.timed_lines(result) == [
        "[00:00.00 → 00:01.00] [00:00.00] a [00:00.60] b.",
        "[00:05.00 → 00:05.50] [00:05.00] c",
    ]
    assert results.word_rows(result)[2] == {
        "#": 3,
        "word": "c",
        "start (s)": 5.0,
        "end (s)": 5.5,
        "length (s)": 0.5,
    }
    assert results.format_seconds(None) == "–" and results.format_rtf(0.12345) == "0.123"
    assert results.format_seconds(0.0854) == "85 ms" and results.format_seconds(2.5) == "2.50 s"


def test_downloads_match_the_service_renderer():
    body = TRANSCRIPT.to_dict() | {"model": "m", "processing_time": 0.1}
    files = {f.file_name: f for f in results.downloads(results.Result("talk.ogg", body))}
    assert list(files) == ["talk.txt", "talk.srt", "talk.vtt", "talk.json"]
    for fmt, name in (("text", "talk.txt"), ("srt", "talk.srt"), ("vtt", "talk.vtt")):
        assert files[name].data.decode() == render(TRANSCRIPT, fmt)
    assert json.loads(files["talk.json"].data) == body
    assert files["talk.vtt"].mime == "text/vtt"


def test_history_keeps_the_newest():
    history = results.History(limit=2)
    for i in range(3):
        history.add(results.Result(f"{i}.wav", {"text": f"t{i}"}), datetime(2026, 1, 1, 9, 0, i))
    assert history.labels() == ["09:00:02 · 2.wav", "09:00:01 · 1.wav"]
    assert history.rows()[0]["text"] == "t2"
    history.clear()
    assert len(history) == 0


def test_waveform_envelope_and_undecodable_audio():
    env = waveform.envelope_of(wav(2.0, 0.5))
    assert env is not None and env.duration_s == pytest.approx(2.0)
    assert len(env.time_s) == waveform.ENVELOPE_POINTS
    assert env.high.max() == pytest.approx(0.5, abs=1e-3)
    assert env.low.min() == pytest.approx(-0.5, abs=1e-3)
    short = waveform.envelope(np.array([0.1, -0.2, 0.3], np.float32), RATE)
    assert list(short.high) == pytest.approx([0.1, -0.2, 0.3])
    assert waveform.envelope_of(b"not audio") is None
    assert waveform.envelope_of(b"") is None


# ---------------------------------------------------------------------------------------
# The UI's subtitles: byte-for-byte the service's, from the JSON alone


def _words(text: str, start: float, step: float = 0.35, length: float = 0.3) -> list[Word]:
    return [
        Word(w, start + i * step, start + i * step + length) for i, w in enumerate(text.split())
    ]


# Words with no segments, which the renderer groups itself: at sentence ends, at a pause
# over 0.8 s, at 84 characters (many short words) and at 6 s (few slow ones).
_UNSEGMENTED = (
    _words("xin chào. các bạn? vâng", 0.0)
    + _words("sau khoảng lặng dài", 3.0)
    + _words(" ".join(f"từ{i}" for i in range(30)), 5.0, step=0.25, length=0.2)
    + _words("một hai ba bốn năm sáu bảy tám chín mười", 13.0, step=0.7, length=0.6)
)
SUBTITLE_CASES = {
    "segments": TRANSCRIPT,
    "words_only": Transcript(" ".join(w.word for w in _UNSEGMENTED), "vi", 21.0, _UNSEGMENTED),
    "text_only": Transcript("xin chào các bạn", "vi", 2.5),
    "empty": Transcript("", "vi", 1.0),
    "silence_with_segments_only": Transcript("", "vi", 2.0, [], [Segment(0.5, 1.5, "ừ")]),
    "markup_lines_and_hours": Transcript(
        "a & b <i>c</i> --> d hai dòng",
        "vi",
        3730.0,
        [Word("a", 3599.9995, 3600.0005)],
        [
            Segment(3599.9995, 3600.0005, "a & b <i>c</i> --> d"),
            Segment(3725.4567, 3729.0, "hai\n\ndòng \t ở  đây"),
        ],
    ),
}


def ui_render(transcript: Transcript, ext: str) -> str:
    """What the UI makes of the service's JSON for this transcript."""
    body = json.loads(formats.to_json(transcript))
    return subtitles.RENDERERS[ext](subtitles.Transcript.from_json(body))


@pytest.mark.parametrize("name", SUBTITLE_CASES)
@pytest.mark.parametrize(("ext", "fmt"), [("txt", "text"), ("srt", "srt"), ("vtt", "vtt")])
def test_subtitles_match_the_service_renderer(name, ext, fmt):
    transcript = SUBTITLE_CASES[name]
    assert ui_render(transcript, ext) == render(transcript, fmt)


_TEXT = hs.text(alphabet="aàạ.?!…&<>- \n", max_size=12)
_TIME = hs.floats(0, 7200, allow_nan=False)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    words=hs.lists(hs.builds(Word, _TEXT, _TIME, _TIME), max_size=25),
    segments=hs.lists(hs.builds(Segment, _TIME, _TIME, _TEXT), max_size=4),
    text=_TEXT,
)
def test_subtitles_match_the_service_renderer_on_any_transcript(words, segments, text):
    transcript = Transcript(text, "vi", 3.0, words, segments)
    for ext, fmt in (("txt", "text"), ("srt", "srt"), ("vtt", "vtt")):
        assert ui_render(transcript, ext) == render(transcript, fmt)


def test_subtitle_rules_are_the_services():
    ours = (
        subtitles.MAX_SEGMENT_S,
        subtitles.MAX_GAP_S,
        subtitles.MAX_SEGMENT_CHARS,
        subtitles.SENTENCE_END,
    )
    assert ours == (
        formats.DEFAULT_MAX_SEGMENT_S,
        formats.DEFAULT_MAX_GAP_S,
        formats.DEFAULT_MAX_SEGMENT_CHARS,
        formats.SENTENCE_END,
    )


# ---------------------------------------------------------------------------------------
# What the UI imports: only the `ui` extra, never the model stack or serve_app

UI_MODULES = sorted(p.stem for p in (REPO / "ui").glob("*.py") if p.stem not in ("__init__", "app"))
NOT_IN_THE_UI = {"serve_app", "ray", "onnxruntime", "numba", "torch", "scipy"}


def test_ui_imports_neither_serve_app_nor_the_model_stack():
    """The UI is an HTTP client that knows the service by its JSON: importing every ui module
    and running the app loads nothing of serve_app, Ray, ONNX Runtime, numba, torch or scipy.
    In a fresh interpreter, so that what this test process imported hides nothing."""
    code = textwrap.dedent(
        f"""
        import importlib, json, sys
        for name in {UI_MODULES!r}:
            importlib.import_module("ui." + name)
        from streamlit.testing.v1 import AppTest
        at = AppTest.from_file("ui/app.py", default_timeout={APP_TIMEOUT_S}).run()
        assert not at.exception, at.exception
        assert at.sidebar.error, "the app did not run up to its status panel"
        print(json.dumps(sorted(sys.modules)))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASR_")}
    env["ASR_URL"] = f"http://127.0.0.1:{free_port()}"  # nothing listens: no request leaves
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=APP_TIMEOUT_S * 2,
    )
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.splitlines()[-1])
    assert {f"ui.{name}" for name in UI_MODULES} <= set(loaded)  # app.py runs, not imported
    assert sorted({m.split(".")[0] for m in loaded} & NOT_IN_THE_UI) == []


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_ui_extra_lists_every_package_ui_imports():
    """compose/ui.Dockerfile installs the `ui` extra of pyproject.toml and nothing else."""
    imported: set[str] = set()
    for path in (REPO / "ui").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"__future__", "ui"}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extra = {_canonical(re.match(r"[\w.-]+", r)[0]) for r in project["optional-dependencies"]["ui"]}
    distributions = importlib.metadata.packages_distributions()
    assert third_party, "no imports found in ui/"
    for module in sorted(third_party):
        provided_by = {_canonical(d) for d in distributions.get(module, [module])}
        assert provided_by & extra, f"ui/ imports {module}, which the ui extra does not list"
