"""Thin Ray Serve wrappers over the Ray-free stages, and the pipeline the ingress runs.

    Ingress --bytes--> Preprocessor --float16 features per window--> Encoder (@serve.batch)
            --log-probs--> Decoder --Transcript--> Ingress

The ingress calls each stage through its DeploymentHandle. The encoder receives ONE window
per call so windows of different requests share a batch; silent windows never reach it.
Options here are defaults for `serve run serve_app.app:build_app`; serve_config.yaml sets
the real ones (replicas, autoscaling, CPUs, batching).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from serve_app import metrics, tracing
from serve_app.api import (
    ApiSettings,
    PipelineResult,
    ServiceInfo,
    ServiceUnavailable,
    create_app,
)
from serve_app.audio import AudioLimits, needs_ffmpeg, resample
from serve_app.bundle import load_bundle
from serve_app.encoder import DEFAULT_MAX_BATCH_FRAMES
from serve_app.errors import InputError
from serve_app.formats import Transcript
from serve_app.transcriber import Prepared

DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_BATCH_WAIT_TIMEOUT_S = 0.02  # 20 ms: small next to a window's encode time
# Windows per ONNX Runtime call inside one @serve.batch, and padded mel frames per call:
# short windows share a call, long ones run alone (bigger calls measured slower on CPU).
# fp32 and per-frame INT8 graphs give a window the same result however it is batched;
# graphs from ORT's quantize_dynamic run one window per call whatever this says.
DEFAULT_ORT_MAX_BATCH = 1
DEFAULT_ORT_PARALLEL_RUNS = 1
MAX_CONCURRENT_BATCHES = 4  # @serve.batch calls in progress per replica (fixed at import)
# Uploads up to this size are prepared on the Preprocessor's event loop, larger ones in a
# worker thread. Handing a short clip to Serve's thread pool and back cost more CPU than its
# decoding and log-mel (bench/cpu_cost.py, c=16, 3-5 s clips: 7.4-7.7 -> 5.7-6.1 CPU-ms per
# request in the Preprocessor). 256 KiB is 8 s of 16 kHz WAV or ~1.5 min of 24 kbps Opus:
# tens of ms at most on the loop, so health checks and other requests barely wait. Uploads
# that need an ffmpeg subprocess (MP4/AAC, Matroska, AMR, ASF) always go to a thread.
INLINE_UPLOAD_BYTES = 256 * 1024
STAGE_ERRORS = (ActorDiedError, ActorUnavailableError, RayActorError)


@dataclass(frozen=True)
class BatchingConfig:
    """The Encoder's `user_config`: changed live with `serve deploy`, no restart."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_TIMEOUT_S
    ort_max_batch: int = DEFAULT_ORT_MAX_BATCH
    ort_parallel_runs: int = DEFAULT_ORT_PARALLEL_RUNS
    ort_max_batch_frames: int = DEFAULT_MAX_BATCH_FRAMES

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch_size <= 64:
            raise ValueError(f"max_batch_size must be in 1..64, got {self.max_batch_size}")
        if not 1 <= self.ort_max_batch <= self.max_batch_size:
            raise ValueError(
                f"ort_max_batch must be in 1..max_batch_size, got {self.ort_max_batch}"
            )
        if self.ort_max_batch_frames < 1:
            raise ValueError(f"ort_max_batch_frames must be >= 1, got {self.ort_max_batch_frames}")
        if not 1 <= self.ort_parallel_runs <= 16:
            raise ValueError(f"ort_parallel_runs must be in 1..16, got {self.ort_parallel_runs}")
        if not 0.0 <= self.batch_wait_timeout_s <= 1.0:
            raise ValueError(
                f"batch_wait_timeout_s must be in [0, 1] s, got {self.batch_wait_timeout_s}"
            )


def batch_wait(in_flight: int, parallel_runs: int, configured_s: float) -> float:
    """How long a new batch may wait for more windows: not at all while the replica has an
    idle ORT slot (waiting would leave a core idle to save nothing), the configured wait once
    every slot is taken (the windows would queue anyway, so gathering them costs nothing).
    Measured over HTTP, 3-5 s clips (python -m bench.batch_wait, bench/README.md): a fixed
    20 ms wait cost c=1 and c=2 ~20% of their throughput, no wait cost c=16 7%; this rule
    keeps both gains."""
    return configured_s if in_flight > parallel_runs else 0.0


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=8)
class Preprocessor:
    """Decode, resample, window, log-mel; ships float16 features."""

    def __init__(self, bundle_dir: str, limits: AudioLimits | None = None) -> None:
        from serve_app.transcriber import Preprocessor as CorePreprocessor

        self.core = CorePreprocessor(load_bundle(bundle_dir).config, limits)
        resample(np.zeros(480, np.float32), 48_000)  # imports scipy.signal now, not on a request
        tracing.configure_tracing()  # exports spans only when OTEL_* variables say so

    async def __call__(self, audio: bytes, trace: dict[str, str] | None = None) -> Prepared:
        """An upload's windows; a small one on the event loop, a large one in a thread."""
        if len(audio) <= INLINE_UPLOAD_BYTES and not needs_ffmpeg(audio):
            return self._prepare(audio, trace)
        return await asyncio.to_thread(self._prepare, audio, trace)

    def _prepare(self, audio: bytes, trace: dict[str, str] | None) -> Prepared:
        with tracing.replica_span("preprocessor", trace):
            return self.core(audio)

    def samples(
        self, samples: np.ndarray, sample_rate: int, trace: dict[str, str] | None = None
    ) -> Prepared:
        """A live stream's utterance: float32 mono at the client's rate."""
        with tracing.replica_span("preprocessor", trace):
            return self.core.from_audio(resample(samples, sample_rate))

    def ping(self) -> str:
        return "ok"


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=32,
    user_config={
        "max_batch_size": DEFAULT_MAX_BATCH_SIZE,
        "batch_wait_timeout_s": DEFAULT_BATCH_WAIT_TIMEOUT_S,
        "ort_max_batch": DEFAULT_ORT_MAX_BATCH,
        "ort_parallel_runs": DEFAULT_ORT_PARALLEL_RUNS,
        "ort_max_batch_frames": DEFAULT_MAX_BATCH_FRAMES,
    },
)
class Encoder:
    """ONNX Runtime behind @serve.batch: one window per call, batches across requests."""

    def __init__(
        self, bundle_dir: str, precision: str | None = None, ort_threads: int | None = None
    ) -> None:
        from serve_app.encoder import EncoderOptions, OnnxEncoder

        bundle = load_bundle(bundle_dir)
        overrides = {} if ort_threads is None else {"intra_op_threads": ort_threads}
        options = EncoderOptions.from_env(**overrides)
        self.core = OnnxEncoder(bundle.model_path(precision), options)
        self.metrics = metrics.EncoderMetrics()  # batch sizes, padded vs real frames
        self.batch_wait_timeout_s = DEFAULT_BATCH_WAIT_TIMEOUT_S
        self.in_flight = 0  # windows in this replica: queued for a batch or running
        tracing.configure_tracing()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = BatchingConfig(**user_config)
        self.encode_batch.set_max_batch_size(config.max_batch_size)
        self.batch_wait_timeout_s = config.batch_wait_timeout_s
        # OnnxEncoder splits a batch into similar-length groups of at most max_batch and
        # runs up to parallel_runs of them at once.
        self.core.options = replace(
            self.core.options,
            max_batch=config.ort_max_batch,
            max_batch_frames=config.ort_max_batch_frames,
            parallel_runs=config.ort_parallel_runs,
        )

    async def encode(
        self, features: np.ndarray, trace: dict[str, str] | None = None
    ) -> tuple[np.ndarray, int]:
        """One window's (log-probs, size of the batch it ran in)."""
        self.in_flight += 1
        try:
            # Read by Serve when it starts forming the next batch.
            self.encode_batch.set_batch_wait_timeout_s(
                batch_wait(
                    self.in_flight, self.core.options.parallel_runs, self.batch_wait_timeout_s
                )
            )
            return await (
                self.encode_batch(features) if trace is None else self.encode_batch(features, trace)
            )
        finally:
            self.in_flight -= 1

    # Serve forms each batch as soon as the previous one is handed off (after at most the
    # batch wait), then holds it until one of max_concurrent_batches slots frees. With one
    # slot, a replica runs one batch, usually of one window, at a time: one core. Several
    # slots let batches overlap; OnnxEncoder's pool (ort_parallel_runs) caps how many ORT
    # calls actually run at once.
    @serve.batch(
        max_batch_size=DEFAULT_MAX_BATCH_SIZE,
        batch_wait_timeout_s=0.0,  # set per window by encode()
        max_concurrent_batches=MAX_CONCURRENT_BATCHES,
    )
    async def encode_batch(
        self, features: list[np.ndarray], traces: list[dict[str, str]] | None = None
    ) -> list[tuple[np.ndarray, int]]:
        # A worker thread keeps the replica's event loop free to queue the next batch and
        # to answer health checks while ONNX Runtime runs (it releases the GIL).
        return await asyncio.to_thread(self.run_batch, features, traces)

    def run_batch(
        self, features: list[np.ndarray], traces: list[dict[str, str]] | None = None
    ) -> list[tuple[np.ndarray, int]]:
        """The batch body, callable without Ray: (log-probs, batch size) per window."""
        lengths = [f.shape[1] for f in features]
        self.metrics.batch(lengths, self.core.plan(lengths))
        with tracing.batch_span("encoder.batch", traces or (), len(features)):
            return [(out, len(features)) for out in self.core.run(features)]

    def ping(self) -> str:
        return "ok"


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=16, user_config={})
class Decoder:
    """CTC decoding (greedy, or beam search with the bundle's lexicon + LM), word times,
    stitching of windows. `user_config` overrides the bundle's decoder settings live."""

    def __init__(self, bundle_dir: str) -> None:
        from serve_app.transcriber import Decoder as CoreDecoder

        self.bundle = load_bundle(bundle_dir)
        self.core = CoreDecoder.from_bundle(self.bundle)
        self._warm_up()
        tracing.configure_tracing()

    def _warm_up(self) -> None:
        # Compile the numba kernels (and touch the beam decoder) now, not on a request.
        self.core.decode_window(np.zeros((4, self.core.vocab.size), np.float32), 0.0, 0.08)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Keys of `DecoderSettings` (kind, beam_width, lm_weight, ...) over the bundle's
        own; a ValueError fails the deploy with its message and keeps the old settings."""
        settings = self.bundle.config.decoder_settings.replace(**(user_config or {}))
        self.core.reconfigure(settings)
        self._warm_up()

    def __call__(
        self,
        prepared: Prepared,
        log_probs: list[np.ndarray | None],
        trace: dict[str, str] | None = None,
    ) -> Transcript:
        with tracing.replica_span("decoder", trace):
            return self.core(prepared, log_probs)

    def settings(self) -> dict[str, Any]:
        return self.core.settings.to_dict()

    def ping(self) -> str:
        return "ok"


class ServePipeline:
    """The `api.Pipeline` the ingress runs: stage calls through DeploymentHandles."""

    def __init__(
        self,
        preprocessor: DeploymentHandle,
        encoder: DeploymentHandle,
        decoder: DeploymentHandle,
        info: ServiceInfo,
        ping_timeout_s: float = 2.0,
    ) -> None:
        self.stages = {"preprocessor": preprocessor, "encoder": encoder, "decoder": decoder}
        self.preprocessor, self.encoder, self.decoder = preprocessor, encoder, decoder
        self.info = info
        self.ping_timeout_s = ping_timeout_s

    async def transcribe(self, audio: bytes) -> PipelineResult:
        return await _answered(self._encode_decode(partial(self.preprocessor.remote, audio)))

    async def transcribe_samples(self, samples: np.ndarray, sample_rate: int) -> Transcript:
        """A live stream's utterance through the same three stages as an upload."""
        preprocess = partial(self.preprocessor.samples.remote, samples, sample_rate)
        return (await _answered(self._encode_decode(preprocess))).transcript

    async def _encode_decode(self, preprocess: Callable[..., Any]) -> PipelineResult:
        """`preprocess(*trace)` is the Preprocessor call; then encode and decode."""
        t0 = time.perf_counter()
        # Each stage span yields (carrier,) when tracing, else (): extra handle-call args.
        with tracing.stage_span("preprocess") as trace:
            prepared: Prepared = await _retry_once(partial(preprocess, *trace))
        t1 = time.perf_counter()
        speech = [i for i, w in enumerate(prepared.windows) if w.features is not None]
        with tracing.stage_span("encode", windows=len(speech)) as trace:
            encoded = await asyncio.gather(
                *(
                    _retry_once(
                        partial(self.encoder.encode.remote, prepared.windows[i].features, *trace)
                    )
                    for i in speech
                )
            )
        t2 = time.perf_counter()
        log_probs: list[np.ndarray | None] = [None] * len(prepared.windows)
        for i, (out, _) in zip(speech, encoded, strict=True):
            log_probs[i] = out
        # The decoder needs the window times, not the features: don't ship them again.
        skeleton = Prepared(
            prepared.duration_s, [replace(w, features=None) for w in prepared.windows]
        )
        with tracing.stage_span("decode") as trace:
            transcript = await _retry_once(
                partial(self.decoder.remote, skeleton, log_probs, *trace)
            )
        t3 = time.perf_counter()
        return PipelineResult(
            transcript=transcript,
            encoder_batch_sizes=tuple(size for _, size in encoded),
            stage_seconds={"preprocess": t1 - t0, "encode": t2 - t1, "decode": t3 - t2},
        )

    async def health(self) -> dict[str, str]:
        names = list(self.stages)
        results = await asyncio.gather(*(self._ping(self.stages[n]) for n in names))
        return dict(zip(names, results, strict=True))

    async def _ping(self, handle: DeploymentHandle) -> str:
        try:
            return await asyncio.wait_for(_await(handle.ping.remote()), self.ping_timeout_s)
        except TimeoutError:
            return f"no answer within {self.ping_timeout_s} s"
        except Exception as exc:  # any failure means "not healthy", reported as text
            return f"{type(exc).__name__}: {str(exc)[:200]}"


async def _answered(work: Awaitable[PipelineResult]) -> PipelineResult:
    """The pipeline's result, or the error the API maps: the stage's own InputError (with
    its message), or ServiceUnavailable for a full queue or a stage that is down."""
    try:
        return await work
    except InputError as exc:
        raise _original(exc) from None
    except BackPressureError as exc:
        raise ServiceUnavailable(
            "the service is at capacity, retry shortly", exc.retry_after_s
        ) from None
    except (DeploymentUnavailableError, *STAGE_ERRORS) as exc:
        raise ServiceUnavailable(f"a stage is unavailable ({type(exc).__name__})") from None


async def _retry_once(call: Callable[[], Any]) -> Any:
    """Await a stage call; call it once more if the replica died under it.

    Stage calls are pure functions of their arguments, so a second try (routed to a live
    replica: Serve drops a dead one from its candidates) is safe. Input errors and
    back-pressure are answers, not faults: they are never retried.
    """
    try:
        return await call()
    except STAGE_ERRORS:
        return await call()


async def _await(response: Any) -> Any:
    return await response


def _original(exc: InputError) -> InputError:
    """Ray re-raises a stage's exception as a RayTaskError that is also an instance of the
    original class; its message is a traceback. Return the original, message intact."""
    if isinstance(exc, RayTaskError) and isinstance(exc.cause, InputError):
        return exc.cause
    return exc


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
@serve.ingress()
class Ingress:
    """The HTTP edge: the ASGI app from `serve_app.api`, built once the replica is up."""

    def __init__(
        self,
        preprocessor: DeploymentHandle,
        encoder: DeploymentHandle,
        decoder: DeploymentHandle,
        info: ServiceInfo,
        settings: ApiSettings,
    ) -> None:
        ping_timeout_s = max(0.5, settings.health_timeout_s - 0.5)
        self.pipeline = ServePipeline(preprocessor, encoder, decoder, info, ping_timeout_s)
        self.settings = settings
        self.metrics = metrics.RayRequestMetrics(info.model, info.precision, info.language)
        # Trace ids for every request (returned as trace_id); spans leave this process only
        # when OTEL_* variables choose an exporter.
        tracing.configure_tracing(ids_without_exporter=True)

    def __serve_build_asgi_app__(self):
        return create_app(self.pipeline, self.settings, self.metrics)
