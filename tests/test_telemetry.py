"""serve_app.metrics and serve_app.tracing without a Ray cluster: exporter choice from
OTEL_* variables, one trace per request through the real stages (in-process, spans in an
in-memory exporter), what the ingress records, the Ray-backed metric definitions, and the
dashboard/alert files."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
from contextlib import nullcontext
from pathlib import Path

import httpx
import pytest
import yaml
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from ray.serve.exceptions import BackPressureError

from serve_app import metrics as asr_metrics
from serve_app import tracing
from serve_app.api import ApiSettings, ServiceInfo, ServiceUnavailable, create_app
from serve_app.errors import InputError

REPO = Path(__file__).resolve().parent.parent
CLIP = REPO / "tests" / "data" / "clips" / "north_16k.wav"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(autouse=True)
def no_tracing_after():
    yield
    tracing.configure_tracing(env={})


# ---------------------------------------------------------------------------------------
# Exporter selection


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:1"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
    ],
)
def test_exporters_come_from_the_standard_variables(env, names):
    assert tracing.exporter_names(env) == names


def test_unknown_exporter_or_protocol_is_an_error():
    with pytest.raises(ValueError, match="zipkin"):
        tracing.exporter_names({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(ValueError, match="http/json"):
        tracing.configure_tracing(
            env={"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
        )


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_otlp_exporter_is_installed_batched(protocol):
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
    }
    assert tracing.configure_tracing(env=env) is True
    (exporter,) = tracing.exporters()
    module = type(exporter).__module__
    assert ("grpc" if protocol == "grpc" else "http") in module


def test_no_exporter_means_no_spans_except_trace_ids_at_the_ingress():
    assert tracing.configure_tracing(env={}) is False
    with tracing.stage_span("preprocess") as extra:
        assert extra == ()  # handle calls keep their plain signature
    assert isinstance(tracing.replica_span("x", {"traceparent": "00-..."}), nullcontext)
    assert tracing.configure_tracing(ids_without_exporter=True, env={}) is False
    with tracing.server_span("/transcribe", "POST", []):
        assert tracing.current_trace_id()
        with tracing.stage_span("encode") as extra:
            (carrier,) = extra
            assert carrier["traceparent"].split("-")[1] == tracing.current_trace_id()


# ---------------------------------------------------------------------------------------
# One request through the real stages, in-process, with an in-memory exporter


class LocalHandle:
    """Calls a deployment object in this process the way its DeploymentHandle would."""

    def __init__(self, target, batched: bool = False) -> None:
        self.target, self.batched = target, batched

    def __getattr__(self, _method: str) -> LocalHandle:  # handle.encode.remote(...)
        return self

    def remote(self, *args):
        return self._call(*args)

    async def _call(self, *args):
        if self.batched:  # @serve.batch runs outside a replica only as its batch body
            features, *trace = args
            return self.target.run_batch([features], [*trace] or None)[0]
        result = self.target(*args)
        return await result if inspect.isawaitable(result) else result


class Recorder(asr_metrics.RequestMetrics):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def request(self, *args) -> None:
        self.calls.append(("request", *args))

    def error(self, *args) -> None:
        self.calls.append(("error", *args))

    def rejected(self, *args) -> None:
        self.calls.append(("rejected", *args))

    def transcribed(self, route, audio_s, elapsed_s, stage_seconds) -> None:
        self.calls.append(("transcribed", route, audio_s, sorted(stage_seconds)))


@pytest.fixture(scope="module")
def stages(default_bundle):
    from serve_app.deployments import Decoder, Encoder, Preprocessor

    bundle = str(default_bundle)
    return (
        Preprocessor.func_or_class(bundle),
        Encoder.func_or_class(bundle, "int8", 1),
        Decoder.func_or_class(bundle),
    )


def _app(stages, metrics):
    from serve_app.deployments import ServePipeline

    pre, enc, dec = stages
    pipeline = ServePipeline(
        LocalHandle(pre), LocalHandle(enc, batched=True), LocalHandle(dec), ServiceInfo("m", "int8")
    )
    return create_app(pipeline, ApiSettings(), metrics)


async def _post(app, path: str, **kwargs) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post(path, **kwargs)


@pytest.mark.slow
def test_one_request_one_trace_with_a_span_per_stage(stages):
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(exporter)
    metrics = Recorder()
    files = {"file": ("a.wav", CLIP.read_bytes())}
    headers = {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
    response = asyncio.run(
        _post(_app(stages, metrics), "/transcribe", files=files, headers=headers)
    )
    assert response.status_code == 200, response.text
    assert response.json()["trace_id"] == TRACE_ID == response.headers["x-trace-id"]

    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {
        "ingress",
        "preprocess",
        "preprocessor",
        "encode",
        "encoder.batch",
        "decode",
        "decoder",
    }
    ingress = spans["ingress"]
    assert ingress.parent.span_id == 0x00F067AA0BA902B7  # the client's span
    assert ingress.attributes["http.route"] == "/transcribe"
    assert ingress.attributes["http.response.status_code"] == 200
    for stage in ("preprocess", "encode", "decode"):
        assert spans[stage].context.trace_id == int(TRACE_ID, 16)
        assert spans[stage].parent.span_id == ingress.context.span_id
    # What crossed the "handles" as a carrier made the replicas' spans children of the stages.
    assert spans["preprocessor"].parent.span_id == spans["preprocess"].context.span_id
    assert spans["decoder"].parent.span_id == spans["decode"].context.span_id
    batch = spans["encoder.batch"]
    assert [link.context.span_id for link in batch.links] == [spans["encode"].context.span_id]
    assert batch.attributes["asr.batch_size"] == 1

    print(f"\ntrace {TRACE_ID}")
    for span in sorted(spans.values(), key=lambda s: s.start_time):
        parent = f"{span.parent.span_id:016x}" if span.parent else "-"
        ms = (span.end_time - span.start_time) / 1e6
        print(f"  {span.name:13s} {ms:8.1f} ms  span {span.context.span_id:016x}  parent {parent}")

    (request,) = [c for c in metrics.calls if c[0] == "request"]
    assert request[1:4] == ("/transcribe", "POST", 200)
    (transcribed,) = [c for c in metrics.calls if c[0] == "transcribed"]
    assert transcribed[1] == "/transcribe" and transcribed[2] > 0
    assert transcribed[3] == ["decode", "encode", "preprocess"]


class StubPipeline:
    """Raises what a real pipeline raises; the app around it is the real one."""

    info = ServiceInfo("m", "int8")

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def transcribe(self, audio: bytes):
        raise self.exc

    async def health(self) -> dict[str, str]:
        return {}


@pytest.mark.parametrize(
    ("exc", "status", "kind", "rejected"),
    [
        (ServiceUnavailable("full", retry_after_s=1.0), 503, "overloaded", True),
        (ServiceUnavailable("stage down"), 503, "stage_unavailable", False),
        (RuntimeError("bug"), 500, "internal_error", False),
    ],
)
def test_errors_are_counted_by_kind_and_rejections_separately(exc, status, kind, rejected):
    metrics = Recorder()
    app = create_app(StubPipeline(exc), ApiSettings(), metrics)
    files = {"file": ("a.wav", b"RIFF")}
    if status == 500:
        with pytest.raises(RuntimeError):  # Starlette answers 500, then re-raises
            asyncio.run(_post(app, "/transcribe", files=files))
    else:
        assert asyncio.run(_post(app, "/transcribe", files=files)).status_code == status
    assert ("request", "/transcribe", "POST", status) == metrics.calls[0][:4]
    assert ("error", "/transcribe", kind) in metrics.calls
    assert (("rejected", "/transcribe") in metrics.calls) is rejected


def test_bad_input_and_unknown_paths_have_bounded_labels():
    metrics = Recorder()
    app = create_app(StubPipeline(RuntimeError()), ApiSettings(api_key="k"), metrics)
    asyncio.run(_post(app, "/transcribe", files={"file": ("a.wav", b"x")}))
    asyncio.run(_post(app, "/no/such/path/12345"))
    errors = [c for c in metrics.calls if c[0] == "error"]
    assert errors == [("error", "/transcribe", "invalid_api_key"), ("error", "other", "not_found")]


def test_error_kind_is_the_json_error_code():
    class Coded(InputError):
        code = "audio_too_long"

    assert asr_metrics.error_kind(Coded("x")) == "audio_too_long"
    assert asr_metrics.error_kind(ValueError()) == "internal_error"
    try:  # what ServePipeline does with Ray's BackPressureError (no Retry-After configured)
        try:
            raise BackPressureError(num_queued_requests=1, max_queued_requests=1)
        except BackPressureError:
            raise ServiceUnavailable("at capacity") from None
    except ServiceUnavailable as exc:
        assert asr_metrics.error_kind(exc) == "overloaded"


# ---------------------------------------------------------------------------------------
# The Ray-backed metrics (real ray.serve.metrics objects; nothing is exported without a
# cluster, but names, tag keys and values are validated)


def test_ray_metrics_accept_what_the_ingress_and_encoder_record():
    metrics = asr_metrics.RayRequestMetrics("default", "int8", "vi")
    metrics.request("/transcribe", "POST", 200, 0.2)
    metrics.error("/transcribe", "audio_too_large")
    metrics.rejected("/transcribe")
    metrics.transcribed("/transcribe", 3.0, 0.2, {"preprocess": 0.01, "encode": 0.1})
    metrics.transcribed("/transcribe", 0.0, 0.01, {})  # empty audio: no RTF, no audio seconds
    encoder = asr_metrics.EncoderMetrics()
    encoder.batch([200, 120, 200], [[0, 2], [1]])
    encoder.batch([100], [[0]])


# ---------------------------------------------------------------------------------------
# Dashboard and alert files


def test_asr_dashboard_json_is_generated_from_its_builder():
    spec = importlib.util.spec_from_file_location(
        "build_asr_dashboard", REPO / "dashboards" / "build_asr_dashboard.py"
    )
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    committed = (REPO / "dashboards" / "asr_service.json").read_text()
    assert builder.render() == committed, "run: python dashboards/build_asr_dashboard.py"
    panels = [p for p in json.loads(committed)["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    assert all(p["targets"] and p["description"] for p in panels)


def test_alert_rules_have_a_threshold_duration_and_summary():
    rules = yaml.safe_load((REPO / "ray_cluster" / "alerts.yml").read_text())
    (group,) = rules["groups"]
    names = {r["alert"] for r in group["rules"]}
    assert {"ASRHighErrorRate", "ASRHighP99Latency", "ASRUnhealthyReplicas"} <= names
    assert "ASRQueueRejections" in names
    for rule in group["rules"]:
        assert rule["for"] and rule["labels"]["severity"] and rule["annotations"]["summary"]
