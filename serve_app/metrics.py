"""Service metrics (`asr_*`) and the ingress' ASGI middleware that records them.

Metrics go through `ray.serve.metrics`, which tags them with application/deployment/replica
and exports them on each node's metrics agent; Prometheus sees them with a `ray_` prefix
(`asr_requests_total` -> `ray_asr_requests_total`). Ray is imported only when a Ray-backed
recorder is created, so the Ray-free API (`serve_app.api`) runs and is tested without it:
its default recorder, `RequestMetrics`, records nothing. The counters that dashboards and
alerts take `rate()` of are exported at 0 from start-up, so a panel shows 0, not "no data",
before the first error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry import trace

from serve_app.tracing import current_trace_id, server_span

# Stage spans and the `stage` label of asr_stage_duration_seconds.
STAGES = ("preprocess", "encode", "decode")
OTHER_ROUTE = "other"  # the route label of paths the app does not serve (bounded cardinality)
# Request and stage latency (s): a short clip takes ~0.1 s, an hour of audio a minute or two.
LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
# Real-time factor (processing seconds per audio second): < 1 is faster than real time.
RTF_BUCKETS = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5]
BATCH_SIZE_BUCKETS = [b + 0.5 for b in range(1, 32)]  # one bucket per batch size 1..32
# Partial latency (s): the target is under 1 s on the project's 2-core machine.
PARTIAL_LATENCY_BUCKETS_S = [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10]
GAUGE_REFRESH_S = 5.0  # well inside the ~20 s after which Ray's agent forgets a gauge
# The routes whose counters start at 0, and the error kind their zero series carries.
TRANSCRIBE_ROUTES = ("/transcribe", "/v1/audio/transcriptions")
ZERO_ERROR_KIND = "internal_error"


class RequestMetrics:
    """What the ingress records per request. This base records nothing (no Ray needed);
    `RayRequestMetrics` sends the same calls to `ray.serve.metrics`."""

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Every HTTP request: route template, method, status code, wall time."""

    def error(self, route: str, kind: str) -> None:
        """A request answered with an error: `kind` is the JSON error code."""

    def rejected(self, route: str) -> None:
        """A request refused because a stage's queue was full (503 + Retry-After)."""

    def transcribed(
        self, route: str, audio_s: float, elapsed_s: float, stage_seconds: Mapping[str, float]
    ) -> None:
        """A successful transcription: audio length, wall time, time per stage."""

    def stream_opened(self) -> None:
        """A WebSocket stream was accepted (it counts until stream_closed)."""

    def stream_closed(self) -> None: ...

    def stream_partial(self, latency_s: float) -> None:
        """A partial was sent `latency_s` after the newest audio it covers arrived."""

    def stream_final(self) -> None: ...

    def stream_error(self, code: str) -> None:
        """A stream ended with an error message (its JSON `code`)."""


class RayRequestMetrics(RequestMetrics):
    """The ingress' `asr_*` metrics through `ray.serve.metrics` (tagged per replica)."""

    def __init__(
        self,
        model: str = "",
        precision: str = "",
        language: str = "",
        zero_routes: Sequence[str] = TRANSCRIBE_ROUTES,
    ) -> None:
        from ray.serve import metrics

        self.requests = metrics.Counter(
            "asr_requests_total",
            description="HTTP requests by route, method and status code.",
            tag_keys=("route", "method", "status"),
        )
        self.request_seconds = metrics.Histogram(
            "asr_request_duration_seconds",
            description="Wall time of a request inside the ingress app, by route.",
            boundaries=LATENCY_BUCKETS_S,
            tag_keys=("route",),
        )
        self.stage_seconds = metrics.Histogram(
            "asr_stage_duration_seconds",
            description="Wall time of one pipeline stage as the ingress sees it (incl. the "
            "Ray hop; encode includes the batch wait), per successful transcription.",
            boundaries=LATENCY_BUCKETS_S,
            tag_keys=("stage",),
        )
        self.audio_seconds = metrics.Counter(
            "asr_audio_seconds_total",
            description="Seconds of audio transcribed successfully, by route.",
            tag_keys=("route",),
        )
        self.transcriptions = metrics.Counter(
            "asr_transcriptions_total",
            description="Successful transcriptions, by route.",
            tag_keys=("route",),
        )
        self.rtf = metrics.Histogram(
            "asr_real_time_factor",
            description="Processing seconds per second of audio (lower is faster).",
            boundaries=RTF_BUCKETS,
            tag_keys=("route",),
        )
        self.errors = metrics.Counter(
            "asr_errors_total",
            description="Requests answered with an error, by route and error code.",
            tag_keys=("route", "kind"),
        )
        self.rejections = metrics.Counter(
            "asr_queue_rejections_total",
            description="Requests refused with 503 because a stage's queue was full.",
            tag_keys=("route",),
        )
        self.streams_active = metrics.Gauge(
            "asr_streams_active",
            description="Open WebSocket streams on this ingress replica.",
        )
        self.streams = metrics.Counter(
            "asr_streams_total", description="WebSocket streams accepted."
        )
        self.partial_latency = metrics.Histogram(
            "asr_stream_partial_latency_seconds",
            description="From the arrival of a stream's newest audio to the partial that "
            "covers it being sent.",
            boundaries=PARTIAL_LATENCY_BUCKETS_S,
        )
        self.stream_finals = metrics.Counter(
            "asr_stream_finals_total", description="Utterances closed and sent as finals."
        )
        self.stream_errors = metrics.Counter(
            "asr_stream_errors_total",
            description="Streams ended with an error message, by its code.",
            tag_keys=("code",),
        )
        self._active = 0
        self.model_info = metrics.Gauge(
            "asr_model_info",
            description="Always 1; the labels say which model this ingress serves.",
            tag_keys=("model", "precision", "language", "version"),
        )
        from serve_app import __version__

        labels = {"model": model, "precision": precision, "language": language}
        self._model_tags = {**labels, "version": __version__}
        self._set_gauges()
        # Ray's metrics agent drops a gauge that was not set again within two export
        # intervals (~20 s): set the gauges again on a timer, so they never go missing.
        threading.Thread(target=self._refresh_gauges, name="asr-gauges", daemon=True).start()
        _export_zero(self.streams, {})
        _export_zero(self.stream_finals, {})
        _export_zero(self.stream_errors, {"code": ZERO_ERROR_KIND})
        for route in zero_routes:
            _export_zero(self.errors, {"route": route, "kind": ZERO_ERROR_KIND})
            for counter in (self.rejections, self.transcriptions, self.audio_seconds):
                _export_zero(counter, {"route": route})

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.inc(1, tags={"route": route, "method": method, "status": str(status)})
        self.request_seconds.observe(seconds, tags={"route": route})

    def error(self, route: str, kind: str) -> None:
        self.errors.inc(1, tags={"route": route, "kind": kind})

    def rejected(self, route: str) -> None:
        self.rejections.inc(1, tags={"route": route})

    def transcribed(
        self, route: str, audio_s: float, elapsed_s: float, stage_seconds: Mapping[str, float]
    ) -> None:
        tags = {"route": route}
        self.transcriptions.inc(1, tags=tags)
        if audio_s > 0:
            self.audio_seconds.inc(audio_s, tags=tags)
            self.rtf.observe(elapsed_s / audio_s, tags=tags)
        for stage, seconds in stage_seconds.items():
            self.stage_seconds.observe(seconds, tags={"stage": stage})

    def _set_gauges(self) -> None:
        self.model_info.set(1, tags=self._model_tags)
        self.streams_active.set(self._active)

    def _refresh_gauges(self) -> None:
        while True:
            time.sleep(GAUGE_REFRESH_S)
            self._set_gauges()

    def stream_opened(self) -> None:
        self._active += 1
        self.streams.inc()
        self.streams_active.set(self._active)

    def stream_closed(self) -> None:
        self._active -= 1
        self.streams_active.set(self._active)

    def stream_partial(self, latency_s: float) -> None:
        self.partial_latency.observe(latency_s)

    def stream_final(self) -> None:
        self.stream_finals.inc()

    def stream_error(self, code: str) -> None:
        self.stream_errors.inc(tags={"code": code})


def _export_zero(counter: Any, tags: Mapping[str, str]) -> None:
    """Export a counter's series at 0, so `rate()` and the panels read 0 before the first
    event instead of no data. Ray's `Counter.inc` refuses 0: this does what it does (fill in
    Serve's replica tags) and records 0 (ray.serve.metrics / ray.util.metrics, Ray 2.60)."""
    from ray.serve.metrics import _add_serve_context_tag_values

    full = dict(tags)
    _add_serve_context_tag_values(counter._tag_keys, full)
    counter._record(0, tags=full)


class EncoderMetrics:
    """The encoder's batching: windows per @serve.batch call and padded vs real frames."""

    def __init__(self) -> None:
        from ray.serve import metrics

        self.batch_sizes = metrics.Histogram(
            "asr_encoder_batch_size",
            description="Windows per @serve.batch call of the encoder.",
            boundaries=BATCH_SIZE_BUCKETS,
        )
        self.frames = metrics.Counter(
            "asr_encoder_frames_total",
            description="Mel frames of encoded windows: kind=real (the audio's own) and "
            "kind=computed (what ONNX Runtime ran, padding to a group's longest window "
            "included). Padding waste = 1 - real / computed.",
            tag_keys=("kind",),
        )

    def batch(self, lengths: Sequence[int], groups: Sequence[Sequence[int]]) -> None:
        """One batch call: the windows' frame counts and the ORT calls `OnnxEncoder.plan`
        groups them into."""
        self.batch_sizes.observe(len(lengths))
        real = padded = 0
        for group in groups:
            real += sum(lengths[i] for i in group)
            padded += max(lengths[i] for i in group) * len(group)
        # Both counts are > 0 for any batch (a counter cannot be incremented by 0), so the
        # waste panel shows 0 rather than nothing when no padding is done.
        self.frames.inc(real, tags={"kind": "real"})
        self.frames.inc(padded, tags={"kind": "computed"})


def error_kind(exc: BaseException) -> str:
    """The `kind` label of an error: the JSON error code the client sees."""
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code:
        return code
    status = getattr(exc, "status_code", None)
    if status == 404:
        return "not_found"
    if status == 405:
        return "method_not_allowed"
    if isinstance(status, int):
        return "bad_request" if status < 500 else "server_error"
    if type(exc).__name__ == "ServiceUnavailable":
        # The pipeline raises it while handling Ray's BackPressureError (a full queue; its
        # retry_after_s is set only when the deployment has a backpressure_config).
        cause = exc.__cause__ or exc.__context__
        full = getattr(exc, "retry_after_s", None) or type(cause).__name__ == "BackPressureError"
        return "overloaded" if full else "stage_unavailable"
    return "internal_error"


# ---------------------------------------------------------------------------------------
# The ingress' ASGI side: one middleware, and the exception handlers noting the error code


def route_of(scope: Mapping[str, Any], routes: frozenset[str]) -> str:
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path if path in routes else OTHER_ROUTE


def note_errors(handlers: Mapping[Any, Any]) -> dict[Any, Any]:
    """Wrap Starlette exception handlers so the middleware learns each error's code."""

    def wrap(handler: Any) -> Any:
        async def noted(request: Any, exc: Exception) -> Any:
            request.scope.setdefault("state", {})["error_kind"] = error_kind(exc)
            return await handler(request, exc)

        return noted

    return {key: wrap(handler) for key, handler in handlers.items()}


class TelemetryMiddleware:
    """Per HTTP request: the root span, `X-Trace-Id` on the response, and the request,
    error and rejection metrics. Everything is recorded in-process, after the response."""

    def __init__(self, app: Any, metrics: RequestMetrics, routes: Iterable[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = frozenset(routes)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route, method = route_of(scope, self.routes), scope.get("method", "")
        state = scope.setdefault("state", {})
        state["route"] = route
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering
        with server_span(route, method, scope.get("headers", ())) as span:
            trace_id = current_trace_id()

            async def send_with_trace_id(message: dict) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    if trace_id:
                        headers = [*message.get("headers", []), (b"x-trace-id", trace_id.encode())]
                        message = {**message, "headers": headers}
                await send(message)

            try:
                await self.app(scope, receive, send_with_trace_id)
            finally:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(trace.StatusCode.ERROR)
                self._record(route, method, status, time.perf_counter() - started, state)

    def _record(self, route: str, method: str, status: int, seconds: float, state: dict) -> None:
        self.metrics.request(route, method, status, seconds)
        if status >= 400:
            kind = state.get("error_kind") or ("internal_error" if status >= 500 else "bad_request")
            self.metrics.error(route, kind)
            if kind == "overloaded":
                self.metrics.rejected(route)
