"""Request tracing (OpenTelemetry), cheap on the request path.

One trace per request. The ingress opens a server span ("ingress", continuing a client's W3C
`traceparent` when sent); the pipeline opens one child span per stage ("preprocess",
"encode" incl. the batch wait, "decode") and hands the stage's context to the replica as a
small carrier dict (`{"traceparent": ...}`), where the stage's own work is a grandchild span
when that replica exports. Exporters follow the standard `OTEL_*` variables: OTLP when
`OTEL_TRACES_EXPORTER=otlp` or an `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` is set, `console`
on request, nothing by default. Without an exporter the ingress still makes trace ids
(returned as `trace_id`) from an SDK provider with no span processor, so nothing is queued
or sent; other replicas then skip their spans entirely.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from serve_app import SERVICE_NAME

TRACER_NAME = "serve_app"
TRUE_VALUES = {"1", "true", "yes", "on"}

_propagator = TraceContextTextMapPropagator()


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
