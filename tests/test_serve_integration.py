"""The real graph over HTTP: serve_config.yaml deployed on the session's local Ray cluster
(tests/conftest.py: `serve_url`), so the config that `make serve` runs is the one under test.
"""

from __future__ import annotations

import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from serve_app.audio import SAMPLE_RATE, decode_audio
from serve_app.encoder import EncoderOptions
from serve_app.transcriber import Transcriber
from tests.conftest import API_KEY, APP_NAME, AUTH

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
CLIPS = REPO / "tests" / "data" / "clips"
TRANSCRIPT_KEYS = ("text", "language", "duration", "words", "segments")


def _clip_names() -> list[str]:
    rows = (json.loads(line) for line in (CLIPS / "manifest.jsonl").read_text().splitlines())
    return [row["audio"] for row in rows]


@pytest.fixture(scope="module")
def reference(default_bundle) -> dict[str, dict]:
    """What the in-process transcriber (`vi-asr transcribe`) says for every clip."""
    transcriber = Transcriber(default_bundle)
    return {
        name: transcriber.transcribe((CLIPS / name).read_bytes()).to_dict()
        for name in _clip_names()
    }


@pytest.fixture(scope="module")
def base_url(serve_url, reference) -> str:
    return serve_url


def post_clip(base_url: str, name: str, **data) -> httpx.Response:
    with (CLIPS / name).open("rb") as f:
        return httpx.post(
            f"{base_url}/transcribe",
            files={"file": (name, f, "application/octet-stream")},
            data=data,
            headers=AUTH,
            timeout=120,
        )


def test_clips_over_http_match_the_in_process_transcriber(base_url, reference):
    for name, expected in reference.items():
        response = post_clip(base_url, name)
        assert response.status_code == 200, response.text
        body = response.json()
        assert {k: body[k] for k in TRANSCRIPT_KEYS} == expected, name
        assert body["model"] and body["processing_time"] > 0
        assert response.headers.get_list("x-request-id") == [body["id"]]


def test_long_recording_is_windowed_and_stitched_like_in_process(base_url, default_bundle):
    """~45 s of speech: several windows, encoded as separate calls, stitched by the decoder."""
    gap = np.zeros(SAMPLE_RATE, np.float32)
    speech = [decode_audio((CLIPS / n).read_bytes()) for n in ("north_16k.wav", "south_48k.ogg")]
    audio = np.concatenate([part for _ in range(6) for clip in speech for part in (clip, gap)])
    buffer = io.BytesIO()
    sf.write(buffer, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    data = buffer.getvalue()
    # The service runs ONNX Runtime one window per call (INT8 results depend on batch mates),
    # so the reference does too.
    transcriber = Transcriber(default_bundle, encoder_options=EncoderOptions(max_batch=1))
    expected = transcriber.transcribe(data).to_dict()
    response = httpx.post(
        f"{base_url}/transcribe",
        content=data,
        headers={**AUTH, "content-type": "audio/wav"},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["duration"] > 40
    assert len(response.headers["x-encoder-batch-sizes"].split(",")) >= 2
    assert {k: body[k] for k in TRANSCRIPT_KEYS} == expected


def test_upload_above_the_grpc_default_message_size(base_url, default_bundle):
    """The upload travels Ingress -> Preprocessor over Serve's gRPC data plane, whose default
    message limit is 4 MiB; serve_config.yaml raises it above max_upload_bytes."""
    speech = decode_audio((CLIPS / "north_16k.wav").read_bytes())
    n = 20 * SAMPLE_RATE
    audio = np.tile(speech, -(-n // len(speech)))[:n]
    stereo_48k = np.repeat(np.repeat(audio, 3)[:, None], 2, axis=1)  # 48 kHz, 2 channels
    buffer = io.BytesIO()
    sf.write(buffer, stereo_48k, 48_000, format="WAV", subtype="FLOAT")
    data = buffer.getvalue()
    assert len(data) > 7 * 2**20
    transcriber = Transcriber(default_bundle, encoder_options=EncoderOptions(max_batch=1))
    expected = transcriber.transcribe(data).to_dict()
    response = httpx.post(
        f"{base_url}/transcribe",
        files={"file": ("big.wav", data, "audio/wav")},
        headers=AUTH,
        timeout=300,
    )
    assert response.status_code == 200, response.text
    assert {k: response.json()[k] for k in TRANSCRIPT_KEYS} == expected


def test_raw_audio_body_and_subtitle_format(base_url, reference):
    name = "north_16k.wav"
    response = httpx.post(
        f"{base_url}/transcribe?response_format=vtt",
        content=(CLIPS / name).read_bytes(),
        headers={**AUTH, "content-type": "audio/wav"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert response.text.startswith("WEBVTT")
    for word in reference[name]["text"].split()[:3]:
        assert word in response.text


def test_openai_client_works_unchanged(base_url, reference):
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0, timeout=120)
    name = "south_48k.ogg"
    with (CLIPS / name).open("rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert result.text == reference[name]["text"]
    with (CLIPS / name).open("rb") as f:
        verbose = client.audio.transcriptions.create(
            model="whisper-1",
            file=f,
            response_format="verbose_json",
            timestamp_granularities=["word"],
        )
    assert verbose.text == reference[name]["text"]
    assert [w.word for w in verbose.words] == [w["word"] for w in reference[name]["words"]]


def test_burst_of_concurrent_requests_all_succeed_and_batch(base_url, reference):
    names = [n for n in reference if reference[n]["text"]] * 4  # 20 requests with speech
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda n: post_clip(base_url, n), names))
    assert [r.status_code for r in responses] == [200] * len(names)
    for name, response in zip(names, responses, strict=True):
        assert response.json()["text"] == reference[name]["text"], name
    sizes = [
        int(size)
        for r in responses
        for size in r.headers.get("x-encoder-batch-sizes", "").split(",")
        if size
    ]
    assert max(sizes) > 1, f"the encoder never batched: {sizes}"


def test_bad_uploads_get_4xx_while_good_ones_succeed(base_url, reference):
    url = f"{base_url}/transcribe"
    noise = os.urandom(4096)
    bad = [
        (lambda: httpx.post(url, files={"file": ("e.wav", b"")}, headers=AUTH), 400),
        (lambda: httpx.post(url, files={"file": ("r.wav", noise)}, headers=AUTH), 415),
        (
            lambda: httpx.post(
                url, content=b"hello", headers={**AUTH, "content-type": "text/plain"}
            ),
            415,
        ),
        (
            lambda: httpx.post(url, files={"file": ("t.txt", b"hi", "text/plain")}, headers=AUTH),
            415,
        ),
        (
            lambda: httpx.post(
                url, files={"file": ("a.wav", b"x")}, data={"language": "en"}, headers=AUTH
            ),
            400,
        ),
    ]
    good = ["north_16k.wav", "central_44k_stereo.flac", "north_f2_22k.mp3"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        good_futures = [pool.submit(post_clip, base_url, n) for n in good]
        bad_futures = [(pool.submit(call), status) for call, status in bad]
        for future, status in bad_futures:
            response = future.result()
            assert response.status_code == status, response.text
            assert response.json()["error"]["code"]
            assert response.headers["x-request-id"]
        for name, future in zip(good, good_futures, strict=True):
            response = future.result()
            assert response.status_code == 200
            assert response.json()["text"] == reference[name]["text"]


def test_api_key_is_required_on_post_routes(base_url):
    clip = {"file": ("a.wav", (CLIPS / "silence.wav").read_bytes())}
    missing = httpx.post(f"{base_url}/transcribe", files=clip)
    wrong = httpx.post(
        f"{base_url}/v1/audio/transcriptions",
        files=clip,
        data={"model": "whisper-1"},
        headers={"authorization": "Bearer wrong"},
    )
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert len(response.headers.get_list("x-request-id")) == 1


def test_the_shipped_lm_decodes_over_http(base_url, default_bundle, reference):
    """The default bundle carries its lexicon + LM; the Decoder beam-searches with them, and
    every word it returns is a lexicon word with times inside the clip."""
    from serve_app.bundle import load_bundle
    from serve_app.decoding import read_lexicon

    bundle = load_bundle(default_bundle)
    lexicon = set(read_lexicon(default_bundle / bundle.config.lm_files[0]))
    model = httpx.get(f"{base_url}/models", timeout=10).json()["data"][0]
    assert model["language_model"] is True and model["decoder"]["kind"] == "beam"
    body = post_clip(base_url, "south_48k.ogg").json()
    assert body["text"] == reference["south_48k.ogg"]["text"]
    assert body["words"] and all(w["word"] in lexicon for w in body["words"])
    assert all(0 <= w["start"] < w["end"] <= body["duration"] for w in body["words"])


def test_a_client_of_the_original_service_works_unchanged(base_url, reference):
    """Written the way the PhoWhisper-CTC service's own API client is (requests, multipart,
    its model id and fields): health, models, languages, every clip, then a text file with a
    model that does not exist (400) and with the real one (>= 400, not a transcript)."""
    import requests

    session = requests.Session()
    session.headers.update(AUTH)  # this test deployment has ASR_API_KEY set
    session.get(f"{base_url}/health", timeout=30).raise_for_status()
    models = session.get(f"{base_url}/models", timeout=30).json()["models"]
    assert all(m["id"] and m["name"] for m in models)
    session.get(f"{base_url}/languages", timeout=30).raise_for_status()
    errors = []
    for name in _clip_names():
        with (CLIPS / name).open("rb") as f:
            response = session.post(
                f"{base_url}/transcribe",
                files={"file": (name, f, "audio/wav")},
                data={"model": "phowhisper-tiny-ctc", "language": "vi"},
                timeout=120,
            )
        try:
            response.raise_for_status()
            result = response.json()
            assert result["text"] == reference[name]["text"]
            assert f"{result['real_time_factor']:.2f}x" and f"{result['processing_time']:.2f}"
            assert result["model"] and result["language"] == "vi" and result["duration"] > 0
        except (requests.HTTPError, AssertionError, KeyError, TypeError) as exc:
            errors.append((name, repr(exc)))
    assert errors == []
    not_audio = (Path(__file__).name, Path(__file__).read_bytes(), "text/plain")
    response = session.post(
        f"{base_url}/transcribe",
        files={"file": not_audio},
        data={"model": "non-existent-model", "language": "vi"},
        timeout=60,
    )
    assert response.status_code == 400 and "non-existent-model" in response.json()["detail"]
    response = session.post(
        f"{base_url}/transcribe",
        files={"file": not_audio},
        data={"model": "phowhisper-tiny-ctc", "language": "vi", "model_type": "onnx"},
        timeout=60,
    )
    assert response.status_code == 415, response.text


def test_info_routes(base_url):
    assert httpx.get(f"{base_url}/").json()["auth"] == "bearer"
    assert httpx.get(f"{base_url}/models").json()["data"][0]["id"]
    assert httpx.get(f"{base_url}/languages").json()["languages"][0]["code"] == "vi"
    assert httpx.get(f"{base_url}/health").status_code == 200


def test_health_is_503_while_a_stage_is_down_then_recovers(base_url, reference):
    """Kill the Decoder's replica: /health says 503 until Serve has replaced it."""
    import ray

    replicas = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{APP_NAME}#Decoder#")
    ]
    assert replicas
    for name in replicas:
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)

    statuses = _poll_health(base_url, until=503, timeout_s=30)
    assert statuses[-1] == 503, statuses
    statuses = _poll_health(base_url, until=200, timeout_s=120)
    assert statuses[-1] == 200, statuses
    response = post_clip(base_url, "north_16k.wav")
    assert response.status_code == 200
    assert response.json()["text"] == reference["north_16k.wav"]["text"]


def _poll_health(base_url: str, until: int, timeout_s: float) -> list[int]:
    statuses: list[int] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        statuses.append(httpx.get(f"{base_url}/health", timeout=10).status_code)
        if statuses[-1] == until:
            break
        time.sleep(0.2)
    return statuses
