"""Fuzzing (hypothesis) of the two places untrusted bytes enter: the audio decoder and the
upload parsing of the HTTP app. Whatever comes in, only a typed InputError (decoder) or a 4xx
with a JSON error body (app) may come out: never another exception, never a 500.

Examples are bounded and derandomized (the same examples on every run, no example database
written to disk), so the module runs in well under a minute.
"""

from __future__ import annotations

import io
import math
import struct

import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from serve_app.api import ApiSettings, PipelineResult, ServiceInfo, create_app
from serve_app.audio import AudioLimits, decode_audio
from serve_app.errors import InputError
from serve_app.formats import Transcript

LIMITS = AudioLimits(max_bytes=256 * 1024, max_duration_s=30.0)
FUZZ = settings(
    max_examples=150,
    deadline=2000,  # ms per example; a slow decode is a finding too
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check_decode(data: bytes) -> None:
    """decode_audio either returns a usable waveform or raises a typed input error."""
    try:
        audio = decode_audio(data, LIMITS)
    except InputError as error:
        assert 400 <= error.http_status < 500 and str(error)
        return
    assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) > 0
    assert np.isfinite(audio).all() and float(np.max(np.abs(audio))) <= 1.0
    assert len(audio) <= LIMITS.max_duration_s * 16000 + 16000


def wav_bytes(frames: np.ndarray, rate: int, subtype: str, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, frames, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def raw_wav(rate: int, channels: int, bits: int, fmt_tag: int, data_len: int, data: bytes) -> bytes:
    """A RIFF/WAVE file whose header fields are whatever the caller says (lies included)."""
    block_align = max(1, channels * bits // 8) & 0xFFFF
    fmt = struct.pack(
        "<HHIIHH", fmt_tag, channels, rate, (rate * block_align) & 0xFFFFFFFF, block_align, bits
    )
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", data_len) + data
    return b"RIFF" + struct.pack("<I", len(body) & 0xFFFFFFFF) + body


SAMPLE = st.one_of(
    st.floats(-1.0, 1.0, width=32),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e30, -1e30, 0.0]),
)


@FUZZ
@given(st.binary(max_size=4096))
def test_decoder_on_random_bytes(data):
    check_decode(data)


@FUZZ
@given(
    rate=st.sampled_from([8000, 16000, 22050, 44100, 48000, 96000]),
    channels=st.integers(1, 8),
    n=st.integers(0, 400),
    subtype_fmt=st.sampled_from(
        [("PCM_16", "WAV"), ("FLOAT", "WAV"), ("PCM_U8", "WAV"), ("PCM_24", "FLAC")]
    ),
    cut=st.integers(0, 10_000),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    samples=st.lists(SAMPLE, min_size=1, max_size=16),
)
def test_decoder_on_mutated_real_files(rate, channels, n, subtype_fmt, cut, flips, samples):
    """Real WAV/FLAC files (NaN/Inf/huge floats included), then truncated and bit-flipped."""
    subtype, fmt = subtype_fmt
    values = np.resize(np.array(samples, np.float32), (n, channels))
    if subtype != "FLOAT":
        values = np.nan_to_num(np.clip(values, -1, 1))
    data = bytearray(wav_bytes(values, rate, subtype, fmt))
    if not data:  # libsndfile writes nothing at all for a FLAC of 0 frames
        check_decode(b"")
        return
    for position, byte in flips:
        data[position % len(data)] = byte
    check_decode(bytes(data[: max(1, len(data) - cut % len(data))]))


@FUZZ
@given(
    rate=st.integers(0, 2**32 - 1),
    channels=st.integers(0, 2**16 - 1),
    bits=st.sampled_from([0, 1, 8, 12, 16, 24, 32, 64, 65535]),
    fmt_tag=st.sampled_from([0, 1, 3, 6, 7, 0xFFFE, 0xFFFF]),
    data_len=st.one_of(st.integers(0, 64), st.just(2**32 - 1), st.integers(0, 2**32 - 1)),
    data=st.binary(max_size=512),
)
def test_decoder_on_lying_wav_headers(rate, channels, bits, fmt_tag, data_len, data):
    """Headers that lie about rate, channels, sample size and length."""
    check_decode(raw_wav(rate, channels, bits, fmt_tag, data_len, data))


# ---------------------------------------------------------------------------------------
# The upload path of the real app, with the real decoder behind it


class DecodingPipeline:
    """An in-process stand-in for the Ray graph: decodes for real, transcribes nothing."""

    info = ServiceInfo(
        model="vi-fuzz", precision="int8", max_upload_bytes=LIMITS.max_bytes, max_duration_s=30
    )

    async def transcribe(self, audio: bytes) -> PipelineResult:
        waveform = decode_audio(audio, LIMITS)
        duration = len(waveform) / 16000
        return PipelineResult(Transcript("", "vi", duration, [], []))

    async def health(self) -> dict[str, str]:
        return {"pipeline": "ok"}


CLIENT = TestClient(create_app(DecodingPipeline(), ApiSettings()), raise_server_exceptions=True)
GOOD_WAV = wav_bytes(np.zeros(1600, np.float32), 16000, "PCM_16")
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
# Field names/values as multipart writes them: quotes and CR/LF are what break headers.
FIELD_TEXT = st.text(st.characters(min_codepoint=1, max_codepoint=0x2FF), max_size=300)


def assert_answer(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert body["error"]["code"] and body["error"]["message"]
        assert len(response.content) < 2048  # an error does not echo a huge field back


def multipart(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    chunks = []
    for name, filename, payload in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        chunks.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode(
                "utf-8", "surrogatepass"
            )
            + payload
            + b"\r\n"
        )
    return b"".join(chunks) + f"--{boundary}--\r\n".encode()


@FUZZ
@given(
    content_type=st.one_of(
        st.sampled_from(
            [
                "audio/wav",
                "application/octet-stream",
                "audio/",
                "multipart/form-data",
                "multipart/form-data; boundary=",
                "application/json",
                "text/plain",
                "",
            ]
        ),
        HEADER_TEXT,
    ),
    body=st.one_of(st.binary(max_size=2048), st.just(GOOD_WAV), st.just(b"")),
    query=st.dictionaries(
        st.sampled_from(["response_format", "language", "model", "timestamp_granularities"]),
        HEADER_TEXT,
        max_size=3,
    ),
)
def test_raw_body_path(content_type, body, query):
    headers = {"content-type": content_type} if content_type else {}
    response = CLIENT.post("/transcribe", content=body, headers=headers, params=query)
    assert_answer(response)


@FUZZ
@given(
    boundary=st.text(
        st.characters(min_codepoint=33, max_codepoint=126, exclude_characters='";\\'),
        min_size=1,
        max_size=90,
    ),
    fields=st.lists(
        st.tuples(FIELD_TEXT, st.one_of(st.none(), FIELD_TEXT), st.binary(max_size=256)),
        max_size=6,
    ),
    with_file=st.booleans(),
    file_body=st.one_of(st.binary(max_size=2048), st.just(GOOD_WAV)),
    huge_name=st.sampled_from([0, 10_000, 200_000]),
    cut=st.integers(0, 64),
    route=st.sampled_from(["/transcribe", "/v1/audio/transcriptions"]),
)
def test_multipart_path(boundary, fields, with_file, file_body, huge_name, cut, route):
    parts = list(fields)
    if huge_name:
        parts.append(("n" * huge_name, None, b"value"))
    if with_file:
        parts.append(("file", "clip.wav", file_body))
    body = multipart(boundary, parts)
    body = body[: len(body) - cut] if cut else body
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    response = CLIENT.post(route, content=body, headers=headers)
    assert_answer(response)


def test_the_fuzzed_app_does_transcribe_a_good_upload():
    """The fuzz targets above are not vacuous: a well-formed upload does get through."""
    response = CLIENT.post(
        "/transcribe", files={"file": ("a.wav", GOOD_WAV, "audio/wav")}, data={"language": "vi"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["duration"] == 0.1
