"""Live streaming without Ray: the protocol pieces, the endpointer, and the WebSocket route of
the real ASGI app around a fake pipeline that "hears" tone bursts as words."""

from __future__ import annotations

import base64
import itertools
import json

import numpy as np
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from serve_app.api import ApiSettings, ServiceInfo, create_app
from serve_app.endpointer import Endpointer
from serve_app.formats import Transcript, Word, words_to_segments
from serve_app.metrics import RequestMetrics
from serve_app.streaming import (
    CloseCode,
    StreamError,
    StreamLimits,
    StreamParams,
    chosen_subprotocol,
    control_message,
    decode_frame,
    key_from_subprotocols,
)

RATE = 16000
WORDS = {2: "một", 4: "hai", 6: "ba"}  # burst amplitude x 10 -> the word the fake hears
BURST_S, PAUSE_S = 0.6, 0.9
FRAME_S = 0.1  # what the client sends per message


def bursts(amplitudes=(0.2, 0.4, 0.6), rate: int = RATE, lead_s: float = 0.3) -> np.ndarray:
    """Tone bursts separated by pauses: one 'word' each."""
    t = np.arange(round(BURST_S * rate)) / rate
    parts = [np.zeros(round(lead_s * rate), np.float32)]
    for a in amplitudes:
        parts += [(a * np.sin(2 * np.pi * 220 * t)).astype(np.float32)]
        parts += [np.zeros(round(PAUSE_S * rate), np.float32)]
    return np.concatenate(parts)


def heard(samples: np.ndarray, rate: int) -> list[Word]:
    """The fake model: every loud stretch is one word, named by its amplitude."""
    frame = rate // 50
    n = len(samples) // frame
    peaks = np.abs(samples[: n * frame]).reshape(n, frame).max(axis=1) if n else np.zeros(0)
    words, start = [], None
    for i, peak in enumerate([*peaks, 0.0]):
        if peak > 0.05 and start is None:
            start = i
        elif peak <= 0.05 and start is not None:
            level = round(10 * float(peaks[start:i].max()))
            words.append(Word(WORDS.get(level, "?"), start / 50, i / 50))
            start = None
    return words


class StreamPipeline:
    def __init__(self, fail_after: int | None = None):
        self.info = ServiceInfo(model="vi-test", precision="int8")
        self.calls: list[float] = []
        self.fail_after = fail_after

    async def transcribe(self, audio: bytes):
        raise AssertionError("streams never upload")

    async def transcribe_samples(self, samples: np.ndarray, sample_rate: int) -> Transcript:
        self.calls.append(len(samples) / sample_rate)
        if self.fail_after is not None and len(self.calls) > self.fail_after:
            raise RuntimeError("model crashed")
        words = heard(samples, sample_rate)
        text = " ".join(w.word for w in words)
        return Transcript(text, "vi", len(samples) / sample_rate, words, words_to_segments(words))

    async def health(self):
        return {"stages": "ok"}


class Recorder(RequestMetrics):
    def __init__(self):
        self.events: list[tuple] = []

    def stream_opened(self):
        self.events.append(("opened",))

    def stream_closed(self):
        self.events.append(("closed",))

    def stream_partial(self, latency_s):
        self.events.append(("partial", latency_s))

    def stream_final(self):
        self.events.append(("final",))

    def stream_error(self, code):
        self.events.append(("error", code))


def client_for(pipeline=None, metrics=None, api_key=None, **limits) -> TestClient:
    settings = ApiSettings(api_key=api_key, stream_limits=StreamLimits(**limits))
    return TestClient(create_app(pipeline or StreamPipeline(), settings, metrics))


def frames(audio: np.ndarray, rate: int, encoding: str = "pcm_s16le") -> list[bytes]:
    step = round(FRAME_S * rate)
    out = []
    for i in range(0, len(audio), step):
        chunk = audio[i : i + step]
        if encoding == "pcm_s16le":
            out.append((chunk * 32767).astype("<i2").tobytes())
        else:
            out.append(chunk.astype("<f4").tobytes())
    return out


def stream(ws, audio: np.ndarray, rate: int, encoding: str = "pcm_s16le") -> list[dict]:
    for frame in frames(audio, rate, encoding):
        ws.send_bytes(frame)
    ws.send_text(json.dumps({"type": "end"}))
    messages = []
    while not messages or messages[-1]["type"] not in ("done", "error"):
        messages.append(ws.receive_json())
    return messages


def closed_with(ws) -> int:
    with pytest.raises(WebSocketDisconnect) as info:
        ws.receive_json()
    return info.value.code


# --------------------------------------------------------------------------- pieces


def test_params_from_the_query_string():
    assert StreamParams.from_query({}, "vi") == StreamParams(16000, "pcm_s16le")
    params = StreamParams.from_query({"sample_rate": "48000", "encoding": "f32le"}, "vi")
    assert params.dtype == np.dtype("<f4")
    for query, code in [
        ({"sample_rate": "7999"}, "invalid_sample_rate"),
        ({"sample_rate": "16k"}, "invalid_sample_rate"),
        ({"encoding": "mp3"}, "invalid_encoding"),
        ({"language": "en"}, "unsupported_language"),
    ]:
        with pytest.raises(StreamError) as info:
            StreamParams.from_query(query, "vi")
        assert info.value.code == code and info.value.close_code == CloseCode.UNSUPPORTED_DATA


def test_frames_are_checked_and_scaled():
    limits, pcm = StreamLimits(max_frame_bytes=1024), StreamParams()
    assert decode_frame(np.array([16384, -32768], "<i2").tobytes(), pcm, limits).tolist() == [
        0.5,
        -1.0,
    ]
    cases = [
        (b"\x00\x01\x02", pcm, "misaligned_frame", CloseCode.UNSUPPORTED_DATA),
        (b"\x00" * 2048, pcm, "frame_too_large", CloseCode.TOO_BIG),
        (np.array([np.nan], "<f4").tobytes(), StreamParams(encoding="f32le"),
         "non_finite_samples", CloseCode.UNSUPPORTED_DATA),
    ]  # fmt: skip
    for data, params, code, close in cases:
        with pytest.raises(StreamError) as info:
            decode_frame(data, params, limits)
        assert (info.value.code, info.value.close_code) == (code, close)
    assert control_message('{"type": "end"}') == "end"
    for garbage in ("hello", '{"type": "stop"}', "[1]"):
        with pytest.raises(StreamError, match="text frames"):
            control_message(garbage)


def test_browser_key_travels_as_a_subprotocol():
    key = "s3cret/ключ+="
    token = "bearer." + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")
    assert key_from_subprotocols(["asr.v1", token]) == key
    assert key_from_subprotocols(["asr.v1"]) is None
    assert key_from_subprotocols(["bearer.!!!"]) is None
    assert chosen_subprotocol(["x", "asr.v1", token]) == "asr.v1"
    assert chosen_subprotocol([token]) == token and chosen_subprotocol([]) is None


def test_endpointer_cuts_in_pauses_after_speech_only():
    ep = Endpointer(RATE, silence_s=0.5)
    assert ep.push(np.zeros(RATE, np.float32)) is None  # silence alone never closes
    audio = bursts((0.5,), lead_s=0.0)
    cut = ep.push(audio)
    frames_per_s = 50
    burst_end = 1.0 + BURST_S  # after the leading second of silence
    assert cut is not None
    assert burst_end < cut / frames_per_s < burst_end + 0.5
    long_audio = np.tile(bursts((0.5,), lead_s=0.0)[: round(0.7 * RATE)], 5)
    ep2 = Endpointer(RATE, silence_s=2.0)
    ep2.push(long_audio)
    quiet = ep2.quietest_frame(2.0)
    assert long_audio[quiet * 320 : quiet * 320 + 320].std() < 0.05  # a quiet frame


# --------------------------------------------------------------------------- the route


@pytest.mark.parametrize(
    ("rate", "encoding"), [(16000, "pcm_s16le"), (8000, "pcm_s16le"), (48000, "f32le")]
)
def test_a_stream_gets_partials_finals_and_done(rate, encoding):
    metrics = Recorder()
    client = client_for(metrics=metrics)
    audio = bursts(rate=rate)
    with client.websocket_connect(f"/v1/stream?sample_rate={rate}&encoding={encoding}") as ws:
        messages = stream(ws, audio, rate, encoding)
        assert closed_with(ws) == CloseCode.NORMAL
    finals = [m for m in messages if m["type"] == "final"]
    assert [f["text"] for f in finals] == ["một", "hai", "ba"]  # one utterance per pause
    assert all(f["start"] < f["end"] for f in finals)
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(finals))
    for final in finals:  # word times are stream times, inside the utterance
        (word,) = final["words"]
        assert final["start"] <= word["start"] < word["end"] <= final["end"]
    first_word = finals[0]["words"][0]
    assert first_word["start"] == pytest.approx(0.3, abs=0.05)  # the burst starts at 0.3 s
    assert any(m["type"] == "partial" for m in messages)
    done = messages[-1]
    assert done == {
        "type": "done",
        "text": "một hai ba",
        "duration": pytest.approx(len(audio) / rate, abs=1e-3),
    }
    kinds = [e[0] for e in metrics.events]
    assert kinds[0] == "opened" and kinds[-1] == "closed" and kinds.count("final") == 3


def test_silence_gives_no_finals():
    with client_for().websocket_connect("/v1/stream") as ws:
        messages = stream(ws, np.zeros(3 * RATE, np.float32), RATE)
    assert messages == [{"type": "done", "text": "", "duration": 3.0}]


def test_browser_subprotocol_is_selected_and_carries_the_key():
    token = "bearer." + base64.urlsafe_b64encode(b"k3y").decode().rstrip("=")
    client = client_for(api_key="k3y")
    with client.websocket_connect("/v1/stream", subprotocols=["asr.v1", token]) as ws:
        assert ws.accepted_subprotocol == "asr.v1"
        assert stream(ws, bursts((0.4,)), RATE)[-1]["text"] == "hai"
    with client.websocket_connect("/v1/stream?api_key=k3y") as ws:
        assert stream(ws, bursts((0.2,)), RATE)[-1]["text"] == "một"
    with client.websocket_connect("/v1/stream", headers={"authorization": "Bearer k3y"}) as ws:
        assert stream(ws, bursts((0.6,)), RATE)[-1]["text"] == "ba"


@pytest.mark.parametrize(
    ("query", "headers"), [("", {}), ("?api_key=nope", {}), ("", {"authorization": "Bearer x"})]
)
def test_a_wrong_or_missing_key_is_1008(query, headers):
    with client_for(api_key="k3y").websocket_connect(f"/v1/stream{query}", headers=headers) as ws:
        assert ws.receive_json()["code"] == "invalid_api_key"
        assert closed_with(ws) == CloseCode.POLICY


@pytest.mark.parametrize(
    ("send", "code", "close"),
    [
        (lambda ws: ws.send_text("hello"), "invalid_message", CloseCode.UNSUPPORTED_DATA),
        (lambda ws: ws.send_bytes(b"\x00\x01\x02"), "misaligned_frame", CloseCode.UNSUPPORTED_DATA),
        (lambda ws: ws.send_bytes(b"\x00" * 4096), "frame_too_large", CloseCode.TOO_BIG),
    ],
)
def test_bad_frames_close_with_their_code(send, code, close):
    with client_for(max_frame_bytes=2048).websocket_connect("/v1/stream") as ws:
        send(ws)
        assert ws.receive_json()["code"] == code
        assert closed_with(ws) == close


def test_bad_parameters_are_1003():
    with client_for().websocket_connect("/v1/stream?sample_rate=96000") as ws:
        assert ws.receive_json()["code"] == "invalid_sample_rate"
        assert closed_with(ws) == CloseCode.UNSUPPORTED_DATA


def test_too_many_streams_is_1013_and_a_slot_frees_when_one_ends():
    client = client_for(max_streams=1)
    with client.websocket_connect("/v1/stream") as first:
        first.send_bytes(frames(bursts((0.2,)), RATE)[0])
        with client.websocket_connect("/v1/stream") as second:
            assert second.receive_json()["code"] == "too_many_streams"
            assert closed_with(second) == CloseCode.TRY_AGAIN
        first.send_text('{"type": "end"}')
        while first.receive_json()["type"] != "done":
            pass
    with client.websocket_connect("/v1/stream") as third:
        assert stream(third, bursts((0.4,)), RATE)[-1]["text"] == "hai"


def test_idle_stream_is_closed():
    with client_for(idle_timeout_s=0.3).websocket_connect("/v1/stream") as ws:
        ws.send_bytes(b"\x00\x00" * 160)
        assert ws.receive_json()["code"] == "idle_timeout"
        assert closed_with(ws) == CloseCode.POLICY


def test_a_stream_over_its_duration_gets_its_finals_then_1009():
    audio = bursts((0.2, 0.4, 0.6, 0.2))
    with client_for(max_duration_s=3.0).websocket_connect("/v1/stream") as ws:
        messages = []
        for frame in frames(audio, RATE):
            ws.send_bytes(frame)
        while not messages or messages[-1]["type"] != "error":
            messages.append(ws.receive_json())
        assert closed_with(ws) == CloseCode.TOO_BIG
    assert messages[-1]["code"] == "stream_too_long"
    assert [m["text"] for m in messages if m["type"] == "final"][:2] == ["một", "hai"]


def test_a_model_fault_is_1011_and_the_next_stream_works():
    pipeline = StreamPipeline(fail_after=0)
    metrics = Recorder()
    client = client_for(pipeline, metrics)
    with client.websocket_connect("/v1/stream") as ws:
        message = stream(ws, bursts((0.2,)), RATE)[-1]
        assert message == {
            "type": "error",
            "code": "internal_error",
            "message": "internal error: RuntimeError",
        }
        assert closed_with(ws) == CloseCode.INTERNAL
    pipeline.fail_after = None
    with client.websocket_connect("/v1/stream") as ws:
        assert stream(ws, bursts((0.6,)), RATE)[-1]["text"] == "ba"
    assert ("error", "internal_error") in metrics.events
    assert metrics.events.count(("opened",)) == metrics.events.count(("closed",)) == 2


def test_a_client_that_vanishes_frees_its_stream():
    metrics = Recorder()
    client = client_for(metrics=metrics, max_streams=1)
    with client.websocket_connect("/v1/stream") as ws:
        for frame in frames(bursts(), RATE)[:12]:
            ws.send_bytes(frame)
    # the socket is gone mid-utterance; the only slot is free again
    with client.websocket_connect("/v1/stream") as ws:
        assert stream(ws, bursts((0.4,)), RATE)[-1]["text"] == "hai"
    assert metrics.events.count(("opened",)) == metrics.events.count(("closed",)) == 2


def test_live_page_is_served_and_streams_to_the_route():
    response = client_for().get("/live")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "AudioWorkletNode" in page and "getUserMedia" in page
    assert 'new URL("v1/stream", location.href)' in page and '"asr.v1"' in page
    assert client_for().get("/").json()["endpoints"][-2:] == ["WS /v1/stream", "GET /live"]
