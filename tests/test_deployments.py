"""The Ray wrappers without a Ray cluster: batch body, batching config, pipeline errors."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from ray.exceptions import RayTaskError
from ray.serve import batching
from ray.serve.exceptions import BackPressureError

from serve_app.api import ServiceInfo, ServiceUnavailable
from serve_app.deployments import BatchingConfig, Decoder, Encoder, ServePipeline, batch_wait
from serve_app.encoder import OnnxEncoder
from serve_app.errors import CorruptAudioError
from serve_app.formats import Transcript
from serve_app.transcriber import Prepared, WindowFeatures

INFO = ServiceInfo(model="m", precision="int8")


def test_batching_config_validates():
    assert BatchingConfig(max_batch_size=4, batch_wait_timeout_s=0.0, ort_max_batch=4)
    for bad in (
        {"max_batch_size": 0},
        {"batch_wait_timeout_s": -1},
        {"max_batch_size": 2, "ort_max_batch": 3},
        {"ort_parallel_runs": 0},
        {"ort_max_batch_frames": 0},
    ):
        with pytest.raises(ValueError):
            BatchingConfig(**bad)


@pytest.mark.slow
def test_encoder_batch_body_matches_the_plain_encoder(default_bundle):
    encoder = Encoder.func_or_class(str(default_bundle), "int8", 1)
    encoder.reconfigure(
        {
            "max_batch_size": 4,
            "batch_wait_timeout_s": 0.01,
            "ort_parallel_runs": 2,
            "ort_max_batch": 4,
            "ort_max_batch_frames": 400,
        }
    )
    assert encoder.core.options.parallel_runs == 2
    assert (encoder.core.options.max_batch, encoder.core.options.max_batch_frames) == (4, 400)
    assert encoder.core.plan([200, 120, 200]) == [[0, 2], [1]]  # 3 x 200 > 400 frames
    rng = np.random.default_rng(0)
    windows = [rng.normal(size=(80, n)).astype(np.float16) for n in (200, 120, 200)]
    batched = encoder.run_batch(windows)
    alone = OnnxEncoder(encoder.core.model_path).run(windows[1:2])[0]
    assert [size for _, size in batched] == [3, 3, 3]
    assert [out.shape[0] for out, _ in batched] == [100, 60, 100]
    # One window per ORT call: a window's result does not depend on its batch mates.
    np.testing.assert_array_equal(batched[1][0], alone)


def test_batches_wait_only_when_every_ort_slot_is_busy():
    assert batch_wait(in_flight=1, parallel_runs=1, configured_s=0.02) == 0.0
    assert batch_wait(in_flight=2, parallel_runs=2, configured_s=0.02) == 0.0
    assert batch_wait(in_flight=3, parallel_runs=2, configured_s=0.02) == 0.02


@pytest.mark.slow
def test_a_lone_window_is_not_held_for_the_batch_wait(default_bundle, monkeypatch):
    """With an idle ORT slot the window runs at once; a configured 1 s wait applies only once
    the slots are taken (before, every batch's first window waited the full timeout)."""
    # Serve's real batch queue, outside a replica: skip only its start-up check, which reads
    # the replica's max_ongoing_requests to log a warning.
    monkeypatch.setattr(
        batching._BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda _: None
    )
    # The queue lives on the decorated function, i.e. the class, and holds this test's event
    # loop: drop it afterwards, or the class can no longer be pickled into a deployment.
    lazy_queue = Encoder.func_or_class.encode_batch.set_max_batch_size.__self__
    monkeypatch.setattr(lazy_queue, "_queue", None)
    encoder = Encoder.func_or_class(str(default_bundle), "int8", 1)
    encoder.reconfigure({"max_batch_size": 8, "batch_wait_timeout_s": 1.0, "ort_max_batch": 8})
    window = np.random.default_rng(0).normal(size=(80, 100)).astype(np.float16)

    async def timed(n: int) -> tuple[float, list[int]]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        results = await asyncio.gather(*(encoder.encode(window) for _ in range(n)))
        return loop.time() - t0, [size for _, size in results]

    async def main():
        alone = await timed(1)
        crowd = await timed(4)  # 4 windows, 1 ORT slot: they wait for each other and batch
        return alone, crowd, encoder.in_flight

    (alone_s, alone_sizes), (_, crowd_sizes), left = asyncio.run(main())
    assert alone_s < 0.8 and alone_sizes == [1]
    assert max(crowd_sizes) > 1 and left == 0


class FakeHandle:
    """Stands in for a DeploymentHandle: `.remote()` and `.method.remote()` return awaitables."""

    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        return self._call(*args)

    def __getattr__(self, _name):
        return self

    async def _call(self, *args):
        return self.fn(*args)


def make_pipeline(preprocess, encode=None, decode=None) -> ServePipeline:
    encode = encode or (lambda features: (np.zeros((features.shape[1] // 2, 4)), 2))
    decode = decode or (lambda prepared, lps: Transcript("x", "vi", prepared.duration_s))
    return ServePipeline(FakeHandle(preprocess), FakeHandle(encode), FakeHandle(decode), INFO)


def test_pipeline_skips_silent_windows_and_strips_features_for_the_decoder():
    prepared = Prepared(
        2.0,
        [
            WindowFeatures(0.0, 1.0, np.ones((80, 100), np.float16)),
            WindowFeatures(1.0, 1.0, None),
        ],
    )
    seen = {}

    def decode(skeleton, log_probs):
        seen["skeleton"], seen["log_probs"] = skeleton, log_probs
        return Transcript("x", "vi", skeleton.duration_s)

    result = asyncio.run(make_pipeline(lambda _: prepared, decode=decode).transcribe(b"a"))
    assert result.transcript.text == "x"
    assert result.encoder_batch_sizes == (2,)
    assert [w.features for w in seen["skeleton"].windows] == [None, None]
    assert seen["log_probs"][0].shape == (50, 4) and seen["log_probs"][1] is None


def test_pipeline_unwraps_stage_input_errors():
    def preprocess(_):
        try:
            raise CorruptAudioError("not a decodable audio file")
        except CorruptAudioError as exc:
            raise RayTaskError("Preprocessor", "traceback...", exc).as_instanceof_cause() from exc

    with pytest.raises(CorruptAudioError) as info:
        asyncio.run(make_pipeline(preprocess).transcribe(b"a"))
    assert str(info.value) == "not a decodable audio file"


def test_pipeline_turns_backpressure_into_service_unavailable():
    def preprocess(_):
        raise BackPressureError(num_queued_requests=5, max_queued_requests=5)

    with pytest.raises(ServiceUnavailable):
        asyncio.run(make_pipeline(preprocess).transcribe(b"a"))


def test_health_reports_each_stage():
    def broken():
        raise RuntimeError("replica gone")

    pipeline = ServePipeline(
        FakeHandle(lambda: "ok"), FakeHandle(broken), FakeHandle(lambda: "ok"), INFO
    )
    stages = asyncio.run(pipeline.health())
    assert stages["preprocessor"] == "ok" and stages["decoder"] == "ok"
    assert stages["encoder"].startswith("RuntimeError")


@pytest.mark.slow
def test_decoder_user_config_overrides_the_bundle_settings_live(default_bundle):
    decoder = Decoder.func_or_class(str(default_bundle))
    bundle_settings = decoder.bundle.config.decoder_settings
    assert decoder.settings() == bundle_settings.to_dict()
    assert bundle_settings.kind == "beam"  # the default bundle ships its LM

    decoder.reconfigure({"kind": "greedy"})
    assert decoder.settings()["kind"] == "greedy"
    decoder.reconfigure({"lm_weight": 1.25})  # back to the bundle's kind, one weight changed
    assert decoder.settings() == {**bundle_settings.to_dict(), "lm_weight": 1.25}
    decoder.reconfigure({})
    assert decoder.settings() == bundle_settings.to_dict()
    for bad in ({"kind": "viterbi"}, {"beam_width": 0}, {"beam": 4}):
        with pytest.raises(ValueError):
            decoder.reconfigure(bad)
    assert decoder.settings() == bundle_settings.to_dict()  # a bad update changes nothing


@pytest.mark.slow
def test_preprocessor_prepares_small_uploads_inline_and_large_ones_in_a_thread(
    default_bundle, monkeypatch, tmp_path
):
    import threading

    from serve_app import deployments
    from serve_app.errors import InputError
    from tests.conftest import CLIPS_DIR

    pre = deployments.Preprocessor.func_or_class(str(default_bundle))
    audio = (CLIPS_DIR / "north_16k.wav").read_bytes()
    expected = pre.core(audio)
    threads: list[str] = []
    prepare = pre._prepare

    def spy(data, trace):
        threads.append(threading.current_thread().name)
        return prepare(data, trace)

    monkeypatch.setattr(pre, "_prepare", spy)

    def run(limit: int, data: bytes):
        monkeypatch.setattr(deployments, "INLINE_UPLOAD_BYTES", limit)
        return asyncio.run(pre(data))

    for limit in (len(audio), len(audio) - 1):  # at the limit: inline; above it: a thread
        got = run(limit, audio)
        assert got.duration_s == expected.duration_s
        for a, b in zip(got.windows, expected.windows, strict=True):
            np.testing.assert_array_equal(a.features, b.features)
    assert threads[0] == "MainThread" and threads[1] != "MainThread"
    # A small upload that needs an ffmpeg subprocess is not decoded on the event loop either.
    from tests.test_audio import ffmpeg_encode

    m4a = ffmpeg_encode(audio, tmp_path, ".m4a", "-c:a", "aac", "-b:a", "32k")
    assert run(10**6, m4a).duration_s == pytest.approx(expected.duration_s, abs=0.1)
    assert threads[2] != "MainThread"
    for limit in (10**6, 0):  # a bad upload is the same InputError either way
        with pytest.raises(InputError):
            run(limit, b"not audio at all")
