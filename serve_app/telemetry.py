"""Service metrics (`asr_*`) and request tracing (OpenTelemetry), cheap on the request path.

Metrics go through `ray.serve.metrics`, which tags them with application/deployment/replica
and exports them on each node's metrics agent; Prometheus sees them with a `ray_` prefix
(`asr_requests_total` -> `ray_asr_requests_total`). Ray is imported only when a Ray-backed
recorder is created, so the Ray-free API (`serve_app.api`) runs and is tested without it:
its default recorder, `RequestMetrics`, records nothing.

Tracing: one trace per request. The ingress opens a server span ("ingress", continuing a
client's W3C `traceparent` when sent); the pipeline opens one child span per stage
("preprocess", "encode" incl. the batch wait, "decode") and hands the stage's context to
the replica as a small carrier dict (`{"traceparent": ...}`), where the stage's own work is a
grandchild span when that replica exports. Exporters follow the standard `OTEL_*` variables:
OTLP when `OTEL_TRACES_EXPORTER=otlp` or an `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` is set,
`console` on request, nothing by default. Without an exporter the ingress still makes trace
ids (returned as `trace_id`) from an SDK provider with no span processor, so nothing is
queued or sent; other replicas then skip their spans entirely.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SERVICE_NAME = "vi-asr-serve"
TRACER_NAME = "serve_app"
# Stage spans and the `stage` label of asr_stage_duration_seconds.
STAGES = ("preprocess", "encode", "decode")
OTHER_ROUTE = "other"  # the route label of paths the app does not serve (bounded cardinality)
# Request and stage latency (s): a short clip takes ~0.1 s, an hour of audio a minute or two.
LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
# Real-time factor (processing seconds per audio second): < 1 is faster than real time.
RTF_BUCKETS = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5]
BATCH_SIZE_BUCKETS = [b + 0.5 for b in range(1, 32)]  # one bucket per batch size 1..32
TRUE_VALUES = {"1", "true", "yes", "on"}

_propagator = TraceContextTextMapPropagator()


# ---------------------------------------------------------------------------------------
# Metrics


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


class RayRequestMetrics(RequestMetrics):
    """The ingress' `asr_*` metrics through `ray.serve.metrics` (tagged per replica)."""

    def __init__(self, model: str = "", precision: str = "", language: str = "") -> None:
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
        self.model_info = metrics.Gauge(
            "asr_model_info",
            description="Always 1; the labels say which model this ingress serves.",
            tag_keys=("model", "precision", "language", "version"),
        )
        from serve_app import __version__

        labels = {"model": model, "precision": precision, "language": language}
        self.model_info.set(1, tags={**labels, "version": __version__})

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

    def batch(self, lengths: Sequence[int], max_batch: int, max_waste: float) -> None:
        """One batch call: the windows' frame counts, grouped into ORT calls the way
        `OnnxEncoder.run` groups them."""
        from serve_app.encoder import plan_batches

        self.batch_sizes.observe(len(lengths))
        real = padded = 0
        for group in plan_batches(lengths, max_batch, max_waste):
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
# Tracing

_tracer: trace.Tracer = trace.NoOpTracer()
_configured = False  # an SDK provider is set: spans (and trace ids) are made
_exporting = False  # ... and sent somewhere
_provider: Any = None  # the SDK TracerProvider, shut down (flushed) when replaced
_exporters: list[Any] = []


def env_flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in TRUE_VALUES


def exporter_names(env: Mapping[str, str] = os.environ) -> list[str]:
    """Which span exporters the standard OTEL_* variables ask for ([] = none).

    Unlike the SDK's own default ("otlp"), nothing is exported unless asked: either by
    OTEL_TRACES_EXPORTER (otlp, console, none; comma-separated) or by an OTLP endpoint.
    """
    if env_flag(env, "OTEL_SDK_DISABLED"):
        return []
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n]
    if not names and (
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    ):
        names = ["otlp"]
    unknown = set(names) - {"otlp", "console", "none"}
    if unknown:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={env.get('OTEL_TRACES_EXPORTER')!r}: "
            f"unsupported {sorted(unknown)}; use otlp, console or none"
        )
    return [n for n in names if n != "none"]


def _make_exporter(name: str, env: Mapping[str, str]) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    # Endpoint, headers, timeout and compression are read from OTEL_EXPORTER_OTLP_* by the
    # exporters themselves.
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use grpc or http/protobuf")
    return OTLPSpanExporter()


def configure_tracing(
    exporter: Any | None = None,
    *,
    ids_without_exporter: bool = False,
    env: Mapping[str, str] = os.environ,
) -> bool:
    """Set this process' tracer. Returns whether spans are exported.

    `exporter` (e.g. an InMemorySpanExporter in tests) is used as is, synchronously;
    otherwise the OTEL_* variables choose (batched export). With no exporter, spans are
    still made when `ids_without_exporter` (the ingress, for `trace_id`), else tracing is
    a no-op. OTEL_SDK_DISABLED=true turns everything off.
    """
    global _tracer, _configured, _exporting, _provider, _exporters
    if _provider is not None:
        _provider.shutdown()
    _tracer, _configured, _exporting, _provider, _exporters = (
        trace.NoOpTracer(),
        False,
        False,
        None,
        [],
    )
    if env_flag(env, "OTEL_SDK_DISABLED"):
        return False
    names = [] if exporter is not None else exporter_names(env)
    if exporter is None and not names and not ids_without_exporter:
        return False

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES override the default service name.
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        _exporters = [exporter]
    for name in names:
        _exporters.append(_make_exporter(name, env))
        provider.add_span_processor(BatchSpanProcessor(_exporters[-1]))
    _tracer, _configured, _provider = provider.get_tracer(TRACER_NAME), True, provider
    _exporting = exporter is not None or bool(names)
    return _exporting


def tracer() -> trace.Tracer:
    return _tracer


def exporters() -> list[Any]:
    """The span exporters in use (empty: spans stay in this process)."""
    return list(_exporters)


def exporting() -> bool:
    return _exporting


def current_trace_id() -> str | None:
    """The current trace's id as 32 hex digits, or None when there is no trace."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None


def carrier() -> dict[str, str]:
    """The current span's context as W3C headers, to pass across a Ray handle call."""
    headers: dict[str, str] = {}
    _propagator.inject(headers)
    return headers


@contextmanager
def server_span(
    route: str, method: str, headers: Iterable[tuple[bytes, bytes]]
) -> Iterator[trace.Span]:
    """The request's root span, continuing the client's `traceparent` when it sent one."""
    incoming = {}
    for key, value in headers:
        if key in (b"traceparent", b"tracestate"):
            incoming[key.decode()] = value.decode("latin-1")
    parent = _propagator.extract(incoming) if incoming else None
    attributes = {"http.route": route, "http.request.method": method}
    with _tracer.start_as_current_span(
        "ingress", context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
    ) as span:
        yield span


@contextmanager
def stage_span(stage: str, **attributes: Any) -> Iterator[tuple[dict[str, str], ...]]:
    """A child span of the request for one stage. Yields the extra arguments for the
    stage's handle call: `(carrier,)` when this process traces, else `()`, so that every
    call from one ingress has the same arity (@serve.batch requires it)."""
    if not _configured:
        yield ()
        return
    with _tracer.start_as_current_span(stage, kind=trace.SpanKind.CLIENT) as span:
        for key, value in attributes.items():
            span.set_attribute(f"asr.{key}", value)
        yield (carrier(),)


def replica_span(name: str, trace_carrier: Mapping[str, str] | None) -> Any:
    """The stage's own work inside its replica, a child of the caller's stage span.
    A no-op unless this replica exports spans."""
    if not _exporting or not trace_carrier:
        return nullcontext()
    parent = _propagator.extract(dict(trace_carrier))
    return _tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER)


def batch_span(name: str, carriers: Iterable[Mapping[str, str] | None], size: int) -> Any:
    """One span for a batch serving several requests: linked to each request's trace
    (the OpenTelemetry pattern for batching). A no-op unless this replica exports spans."""
    if not _exporting:
        return nullcontext()
    links = []
    for c in carriers:
        if c:
            context = trace.get_current_span(_propagator.extract(dict(c))).get_span_context()
            if context.is_valid:
                links.append(trace.Link(context))
    return _tracer.start_as_current_span(
        name,
        context=trace.set_span_in_context(trace.INVALID_SPAN),
        links=links,
        attributes={"asr.batch_size": size},
    )


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
