"""The ASGI app without Ray: a fake pipeline behind the real routes, parsing and errors."""

from __future__ import annotations

import asyncio

import pytest
from starlette.testclient import TestClient

from serve_app.api import ApiSettings, PipelineResult, ServiceInfo, ServiceUnavailable, create_app
from serve_app.ctc import Word
from serve_app.errors import CorruptAudioError, EmptyAudioError
from serve_app.formats import Transcript, words_to_segments

WORDS = [Word("xin", 0.1, 0.3), Word("chào", 0.35, 0.7), Word("bạn", 2.0, 2.3)]
TRANSCRIPT = Transcript(
    text="xin chào bạn",
    language="vi",
    duration=2.5,
    words=WORDS,
    segments=words_to_segments(WORDS),
)
INFO = ServiceInfo(model="vi-test", precision="int8", max_upload_bytes=1000)
AUDIO = b"RIFF-fake-audio"


class FakePipeline:
    """Answers from the bytes it gets: b"" and b"junk" fail like the real preprocessor."""

    def __init__(self, stages: dict[str, str] | None = None, health_delay_s: float = 0.0):
        self.info = INFO
        self.stages = stages or {"preprocessor": "ok", "encoder": "ok", "decoder": "ok"}
        self.health_delay_s = health_delay_s
        self.calls: list[bytes] = []

    async def transcribe(self, audio: bytes) -> PipelineResult:
        self.calls.append(audio)
        if not audio:
            raise EmptyAudioError("the audio upload is empty")
        if audio == b"junk":
            raise CorruptAudioError("not a decodable audio file")
        if audio == b"busy":
            raise ServiceUnavailable("at capacity", retry_after_s=2.0)
        if audio == b"crash":
            raise RuntimeError("bug")
        return PipelineResult(TRANSCRIPT, (3,), {"preprocess": 0.01, "encode": 0.1})

    async def health(self) -> dict[str, str]:
        await asyncio.sleep(self.health_delay_s)
        return dict(self.stages)


def client_for(pipeline=None, **settings) -> TestClient:
    app = create_app(pipeline or FakePipeline(), ApiSettings(**settings))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client() -> TestClient:
    return client_for()


def upload(name: str = "clip.wav", data: bytes = AUDIO, ctype: str = "audio/wav"):
    return {"file": (name, data, ctype)}


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code
    assert response.headers["x-request-id"]


# --- info routes --------------------------------------------------------------------------


def test_root_lists_service_and_model(client):
    body = client.get("/").json()
    assert body["model"] == "vi-test"
    assert body["language"] == "vi"
    assert body["auth"] == "none"
    assert "POST /v1/audio/transcriptions" in body["endpoints"]


@pytest.mark.parametrize("path", ["/models", "/v1/models"])
def test_models_lists_the_served_model(client, path):
    body = client.get(path).json()
    assert [m["id"] for m in body["data"]] == ["vi-test"]
    assert body["data"][0]["precision"] == "int8"
    # the original service's UI reads `models`, each with an id and a name
    assert body["models"] == body["data"] and body["models"][0]["name"] == "vi-test"
    assert "phowhisper-tiny-ctc" in body["data"][0]["aliases"]


def test_languages(client):
    assert client.get("/languages").json() == {"languages": [{"code": "vi", "name": "vietnamese"}]}


def test_health_ok_when_every_stage_answers(client):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["model_loaded"] is True
    assert body["device"] == "cpu" and body["time"].endswith("+00:00")


def test_health_503_when_a_stage_fails():
    client = client_for(FakePipeline({"preprocessor": "ok", "encoder": "ActorDiedError: x"}))
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["stages"]["encoder"].startswith("ActorDiedError")
    assert response.json()["model_loaded"] is False


def test_health_503_when_the_pipeline_does_not_answer_in_time():
    client = client_for(FakePipeline(health_delay_s=1.0), health_timeout_s=0.05)
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


# --- POST /transcribe ---------------------------------------------------------------------


def test_transcribe_multipart_returns_the_documented_fields(client):
    response = client.post("/transcribe", files=upload())
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {
        "id",
        "text",
        "language",
        "model",
        "duration",
        "processing_time",
        "real_time_factor",
        "words",
        "segments",
        "timestamp",
    }
    assert body["text"] == "xin chào bạn"
    assert body["model"] == "vi-test"
    assert body["words"][1] == {"word": "chào", "start": 0.35, "end": 0.7}
    assert body["segments"][0]["text"] == "xin chào"
    assert body["id"] == response.headers["x-request-id"]
    assert response.headers["x-encoder-batch-sizes"] == "3"
    assert "encode;dur=100.0" in response.headers["server-timing"]


def test_transcribe_passes_the_upload_bytes_once_and_unchanged():
    pipeline = FakePipeline()
    client_for(pipeline).post("/transcribe", files=upload(data=b"\x00\x01abc"))
    assert pipeline.calls == [b"\x00\x01abc"]


def test_transcribe_raw_audio_body_with_query_fields(client):
    response = client.post(
        "/transcribe?response_format=text",
        content=AUDIO,
        headers={"content-type": "audio/flac"},
    )
    assert response.status_code == 200
    assert response.text == "xin chào bạn\n"


@pytest.mark.parametrize(
    ("fmt", "media_type", "start"),
    [
        ("text", "text/plain", "xin chào bạn"),
        ("srt", "text/plain", "1\n00:00:00,100 --> "),
        ("vtt", "text/vtt", "WEBVTT\n\n00:00:00.100 --> "),
    ],
)
def test_transcribe_text_formats(client, fmt, media_type, start):
    response = client.post("/transcribe", files=upload(), data={"response_format": fmt})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    assert response.text.startswith(start)


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        ({"response_format": "xml"}, 400, "invalid_response_format"),
        ({"language": "en"}, 400, "unsupported_language"),
        ({"model": "whisper-large"}, 400, "model_not_found"),
        ({"model": "non-existent-model"}, 400, "model_not_found"),
        ({"model": "phowhisper-tiny-ctc", "model_type": "tensorflow"}, 400, "invalid_model_type"),
    ],
)
def test_transcribe_bad_fields_are_400_before_any_work(data, status, code):
    pipeline = FakePipeline()
    response = client_for(pipeline).post("/transcribe", files=upload(), data=data)
    assert_error(response, status, code)
    assert pipeline.calls == []


@pytest.mark.parametrize("data", [{"language": "vi"}, {"language": "VI"}, {"model": "vi-test"}])
def test_transcribe_accepts_the_served_language_and_model(client, data):
    assert client.post("/transcribe", files=upload(), data=data).status_code == 200


@pytest.mark.parametrize("model_type", [None, "pytorch", "onnx"])
def test_the_original_services_requests_are_accepted(client, model_type):
    """What clients of the PhoWhisper-CTC service send: its model id, language, model_type."""
    data = {"model": "phowhisper-tiny-ctc", "language": "vi"}
    if model_type:
        data["model_type"] = model_type
    response = client.post("/transcribe", files=upload("a.wav", AUDIO, "audio/wav"), data=data)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == "xin chào bạn" and body["model"] == "vi-test"
    assert body["model_type"] == "onnx" and body["language"] == "vi"
    # numbers its clients format with :.2f (the fake answers in well under a millisecond)
    assert all(isinstance(body[f], float) for f in ("processing_time", "real_time_factor"))
    assert body["duration"] > 0  # they divide by it
    assert body["id"] and body["timestamp"] and "trace_id" in body


def test_errors_carry_the_message_under_detail_too(client):
    body = client.post("/transcribe", files=upload(), data={"model": "nope"}).json()
    assert body["detail"] == body["error"]["message"] and "nope" in body["detail"]


def test_missing_file_part_is_400(client):
    response = client.post("/transcribe", data={"language": "vi"}, files={"other": ("a", b"x")})
    assert_error(response, 400, "missing_file")


@pytest.mark.parametrize(
    "headers", [{"content-type": "text/plain"}, {"content-type": "application/json"}, {}]
)
def test_non_audio_body_is_415(client, headers):
    response = client.post("/transcribe", content=b'{"a": 1}', headers=headers)
    assert_error(response, 415, "unsupported_media_type")


def test_core_input_errors_keep_their_status_and_code(client):
    assert_error(client.post("/transcribe", files=upload(data=b"junk")), 415, "corrupt_audio")
    assert_error(client.post("/transcribe", files=upload(data=b"")), 400, "empty_audio")


def test_upload_over_the_limit_is_413(client):
    big = b"x" * (INFO.max_upload_bytes + 1)
    assert_error(client.post("/transcribe", files=upload(data=big)), 413, "audio_too_large")
    response = client.post("/transcribe", content=big, headers={"content-type": "audio/wav"})
    assert_error(response, 413, "audio_too_large")


def test_overload_is_503_with_retry_after(client):
    response = client.post("/transcribe", files=upload(data=b"busy"))
    assert_error(response, 503, "service_unavailable")
    assert response.headers["retry-after"] == "2"


def test_a_server_fault_is_a_json_500_not_a_success(client):
    assert_error(client.post("/transcribe", files=upload(data=b"crash")), 500, "internal_error")


def test_unknown_route_is_json_404(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/transcribe"), 405, "method_not_allowed")


# --- request ids --------------------------------------------------------------------------


def test_client_request_id_is_echoed_and_used_as_the_id(client):
    response = client.post("/transcribe", files=upload(), headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert response.json()["id"] == "abc-123"


def test_every_response_gets_a_fresh_request_id(client):
    ids = {client.get("/").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


def test_request_id_header_left_to_the_serve_proxy_when_asked():
    response = client_for(add_request_id_header=False).get("/")
    assert "x-request-id" not in response.headers


# --- auth ---------------------------------------------------------------------------------


def test_api_key_guards_post_routes_only():
    client = client_for(api_key="s3cret")
    for path in ("/transcribe", "/v1/audio/transcriptions"):
        response = client.post(path, files=upload(), data={"model": "whisper-1"})
        assert_error(response, 401, "invalid_api_key")
        assert response.headers["www-authenticate"] == "Bearer"
        wrong = client.post(path, files=upload(), headers={"authorization": "Bearer nope"})
        assert_error(wrong, 401, "invalid_api_key")
        ok = client.post(
            path,
            files=upload(),
            data={"model": "whisper-1"},
            headers={"authorization": "Bearer s3cret"},
        )
        assert ok.status_code == 200
    assert client.get("/").json()["auth"] == "bearer"
    assert client.get("/health").status_code == 200


# --- OpenAI-compatible route --------------------------------------------------------------


def openai_post(client, **data):
    return client.post(
        "/v1/audio/transcriptions", files=upload(), data={"model": "whisper-1", **data}
    )


def test_openai_json_is_text_only(client):
    response = openai_post(client)
    assert response.status_code == 200
    assert response.json() == {"text": "xin chào bạn"}


def test_openai_verbose_json_with_word_timestamps(client):
    response = openai_post(
        client, response_format="verbose_json", **{"timestamp_granularities[]": ["word"]}
    )
    body = response.json()
    assert body["task"] == "transcribe"
    assert body["language"] == "vietnamese"
    assert body["duration"] == 2.5
    assert body["segments"][0] == {"id": 0, "start": 0.1, "end": 0.7, "text": "xin chào"}
    assert body["words"][2] == {"word": "bạn", "start": 2.0, "end": 2.3}


def test_openai_verbose_json_leaves_words_out_unless_asked(client):
    body = openai_post(client, response_format="verbose_json").json()
    assert "words" not in body
    assert body["segments"]


def test_openai_text_and_bad_granularity(client):
    assert openai_post(client, response_format="text").text == "xin chào bạn\n"
    response = openai_post(client, **{"timestamp_granularities[]": "char"})
    assert_error(response, 400, "invalid_timestamp_granularity")
