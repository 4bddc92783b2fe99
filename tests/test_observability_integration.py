"""Dashboards and alerts proven on real data: a real Prometheus (the Debian package) scrapes the
session's real Ray cluster through Ray's service-discovery file while real traffic goes
through the real graph; then every PromQL expression of every ASR dashboard panel and every
alert rule runs through Prometheus' HTTP API and must return series. Ray's own dashboards
(dashboards/ray/) are run too: all must parse, the panels listed in RAY_PANELS_WITH_DATA must
return series. The per-panel results go to cache/observability/panels.json (git-ignored).

Also one request's trace across the Ray handles, exported over OTLP/HTTP to a receiver in
this process, printed with its stage spans.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import API_KEY, AUTH, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
CLIPS = REPO / "tests" / "data" / "clips"
DASHBOARDS = REPO / "dashboards"
ALERTS = REPO / "ray_cluster" / "alerts.yml"
ARTIFACT = REPO / "cache" / "observability" / "panels.json"
SCRAPE_INTERVAL = "1s"
RATE_WINDOW = "2m"  # what $__rate_interval becomes: covers the whole test's traffic
READY_TIMEOUT_S = 60
DATA_TIMEOUT_S = 120  # Ray pushes metrics to its agent every ~10 s, plus the scrape
OBS_APP, OBS_PREFIX = "asr-obs", "/obs"
SPEECH_CLIPS = ("north_16k.wav", "central_44k_stereo.flac", "south_48k.ogg")
# Ray's generated panels this graph's traffic must fill (dashboard file -> panel titles).
# The others need what this test does not produce (gRPC, GPUs, object spilling, Ray Data,
# failed tasks, ...): they are run, must parse, and their series counts are recorded.
RAY_PANELS_WITH_DATA: dict[str, set[str]] = {
    "serve_grafana_dashboard.json": {
        "QPS per application",
        "Error QPS per application",
        "Error QPS per application per error code",
        "P50 latency per application",
        "P90 latency per application",
        "P99 latency per application",
        "Replicas per deployment",
        "QPS per deployment",
        "P50 latency per deployment",
        "P90 latency per deployment",
        "P99 latency per deployment",
        "Queue size per deployment",
        "Ongoing HTTP Requests",
        "Cluster Utilization",
        "Node count",
        "Node network",
        "Scheduling Tasks",
        "Controller Control Loop Duration",
        "Number of Control Loops",
    },
    "serve_deployment_grafana_dashboard.json": {
        "Replicas per deployment",
        "QPS per replica",
        "P50 latency per replica",
        "P90 latency per replica",
        "P99 latency per replica",
        "Queue size per deployment",
        "Running requests per replica",
    },
    "default_grafana_dashboard.json": {
        "Node Count",
        "Node CPU Usage",
        "Node Memory Usage (heap + object store)",
        "Node CPU Usage by Component",
        "Node Memory Usage by Component",
        "Object Store Memory Usage",
        "Alive Actors by Name",
        "Logical CPUs Usage",
        "Running Tasks by Name",
    },
}
COMPARISON = re.compile(r"^(?P<query>.*\S)\s*(?:>|<|>=|<=|==|!=)\s*[0-9.eE+-]+\s*$", re.DOTALL)


# ---------------------------------------------------------------------------------------
# Prometheus, started and stopped by this module


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> dict:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        body = response.json()
        assert body["status"] == "success", f"{expr}: {body}"
        return body["data"]

    def series(self, expr: str) -> int:
        return len(self.query(expr)["result"])

    def wait_for(self, expr: str, what: str, timeout_s: float = DATA_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.series(expr):
                return
            time.sleep(1)
        pytest.fail(f"no series for {what} ({expr}) within {timeout_s} s")


def _scrape_config(service_discovery_file: Path, rules: Path) -> dict:
    """ray_cluster/prometheus.yml with this cluster's discovery file and a fast scrape."""
    config = yaml.safe_load((REPO / "ray_cluster" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=SCRAPE_INTERVAL, evaluation_interval=SCRAPE_INTERVAL)
    config["rule_files"] = [str(rules)]
    (job,) = config["scrape_configs"]
    job["file_sd_configs"] = [{"files": [str(service_discovery_file)]}]
    # Ray lists its agents by node IP; they listen on every interface. Keep the test's
    # traffic on loopback: same targets, host 127.0.0.1.
    job["relabel_configs"] = [
        {
            "source_labels": ["__address__"],
            "regex": r"[^:]+:(\d+)",
            "target_label": "__address__",
            "replacement": "127.0.0.1:$1",
        }
    ]
    return config


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def prometheus(ray_cluster) -> Prometheus:
    if not shutil.which("prometheus") or not shutil.which("promtool"):
        pytest.fail("prometheus/promtool missing: `make system-deps` installs the Debian package")
    workdir = Path(tempfile.mkdtemp(prefix="asr-prom-", dir="/tmp"))
    rules = workdir / "alerts.yml"
    shutil.copy(ALERTS, rules)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(
        yaml.safe_dump(_scrape_config(ray_cluster.service_discovery_file, rules))
    )
    print(_run("promtool", "check", "config", str(config_path)))
    print(_run("promtool", "check", "rules", str(ALERTS)))
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert process.poll() is None, (workdir / "prometheus.log").read_text()
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"Prometheus not ready within {READY_TIMEOUT_S} s")
        yield Prometheus(url)
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # its own session: only what we started
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# An OTLP/HTTP receiver and a second, deliberately tiny app of the same graph


class SpanSink(ThreadingHTTPServer):
    """Collects the spans POSTed to /v1/traces (OTLP/HTTP, protobuf)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OtlpHandler)
        self.spans: list = []
        self.lock = threading.Lock()


class _OtlpHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        request = ExportTraceServiceRequest()
        request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
        spans = [
            (rs.resource, span)
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]
        with self.server.lock:
            self.server.spans.extend(spans)
        body = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def span_sink():
    sink = SpanSink()
    thread = threading.Thread(target=sink.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        sink.shutdown()
        sink.server_close()


@pytest.fixture(scope="module")
def obs_url(serve_url, default_bundle, span_sink) -> str:
    """The graph once more as app `asr-obs` on /obs: a Preprocessor taking one request and
    queueing one (so a small burst is refused: queue-rejection metrics), and every replica
    exporting spans to `span_sink` over OTLP/HTTP. Deleted at the end; `asr` is untouched."""
    from ray import serve

    from serve_app.api import ApiSettings, ServiceInfo
    from serve_app.bundle import load_bundle
    from serve_app.deployments import Decoder, Encoder, Ingress, Preprocessor

    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{span_sink.server_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # ms: spans reach the sink soon after a request
        "OMP_NUM_THREADS": "1",
    }

    def options(num_cpus: float) -> dict:
        return {"num_cpus": num_cpus, "runtime_env": {"env_vars": env}}

    bundle = load_bundle(default_bundle)
    info = ServiceInfo(model=bundle.config.name, precision=bundle.config.default_precision)
    path = str(default_bundle)
    app = Ingress.options(ray_actor_options=options(0.05)).bind(
        Preprocessor.options(
            ray_actor_options=options(0.05), max_ongoing_requests=1, max_queued_requests=1
        ).bind(path),
        Encoder.options(ray_actor_options=options(0.1)).bind(path, None, 1),
        Decoder.options(ray_actor_options=options(0.05)).bind(path),
        info,
        ApiSettings(add_request_id_header=False),
    )
    serve.run(app, name=OBS_APP, route_prefix=OBS_PREFIX)
    try:
        yield f"{serve_url}{OBS_PREFIX}"
    finally:
        serve.delete(OBS_APP)


# ---------------------------------------------------------------------------------------
# Traffic: bounded, to 127.0.0.1 only


def _stream_clip_and_garbage(serve_url: str) -> int:
    """A clip through WS /v1/stream at real time (partials, a final), then a socket that
    sends text garbage (a stream error). Returns the second socket's close code."""
    import asyncio

    import websockets

    from serve_app.audio import load_audio_file
    from serve_app.stream_client import stream_audio, stream_url

    audio = load_audio_file(CLIPS / "south_48k.ogg")
    done = stream_audio(audio, serve_url, rate=1.0, api_key=API_KEY)
    assert done["text"]

    async def garbage() -> int:
        url = stream_url(serve_url) + "&api_key=" + API_KEY
        async with websockets.connect(url) as ws:
            await ws.send("not json")
            await ws.recv()
            await ws.wait_closed()
            return ws.close_code

    return asyncio.run(garbage())


def _post(url: str, name: str, headers: dict | None = None) -> httpx.Response:
    with (CLIPS / name).open("rb") as f:
        return httpx.post(url, files={"file": (name, f)}, headers=headers or {}, timeout=120)


@pytest.fixture(scope="module")
def traffic(serve_url, obs_url, prometheus) -> dict[str, list[int]]:
    """~30 requests: good ones on both routes, bad uploads, a wrong key, and a burst that
    overflows asr-obs's one-deep Preprocessor queue. Returns status codes per kind."""
    statuses: dict[str, list[int]] = {}
    transcribe = f"{serve_url}/transcribe"
    with ThreadPoolExecutor(max_workers=4) as pool:
        good = list(pool.map(lambda n: _post(transcribe, n, AUTH), SPEECH_CLIPS * 3))
    statuses["good"] = [r.status_code for r in good]
    with (CLIPS / "north_16k.wav").open("rb") as f:
        openai = httpx.post(
            f"{serve_url}/v1/audio/transcriptions",
            files={"file": ("a.wav", f)},
            data={"model": "whisper-1"},
            headers=AUTH,
            timeout=120,
        )
    statuses["openai"] = [openai.status_code]
    statuses["bad"] = [
        httpx.post(transcribe, files={"file": ("e.wav", b"")}, headers=AUTH).status_code,
        httpx.post(transcribe, files={"file": ("r.wav", b"\x01" * 512)}, headers=AUTH).status_code,
        httpx.post(transcribe, files={"file": ("a.wav", b"x")}).status_code,
    ]
    statuses["health"] = [httpx.get(f"{serve_url}/health", timeout=30).status_code]
    statuses["stream"] = [_stream_clip_and_garbage(serve_url)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        burst = list(pool.map(lambda n: _post(f"{obs_url}/transcribe", n), ["north_16k.wav"] * 10))
    statuses["burst"] = [r.status_code for r in burst]
    assert statuses["good"] == [200] * len(good) and statuses["openai"] == [200]
    assert statuses["bad"] == [400, 415, 401] and statuses["stream"] == [1003]
    assert 503 in statuses["burst"] and 200 in statuses["burst"], statuses["burst"]
    # Wait for the last of it to reach Prometheus (Ray's push interval + the scrape).
    prometheus.wait_for(
        'ray_asr_queue_rejections_total{application="asr-obs"}', "the burst's rejections"
    )
    prometheus.wait_for(
        'ray_asr_requests_total{application="asr",route="/v1/audio/transcriptions"}',
        "the OpenAI-route request",
    )
    prometheus.wait_for('ray_asr_errors_total{kind="invalid_api_key"}', "the 401")
    prometheus.wait_for(
        'ray_asr_stream_partial_latency_seconds_bucket{application="asr"}', "a stream's partials"
    )
    prometheus.wait_for('ray_asr_stream_errors_total{code="invalid_message"}', "a stream error")
    # Ray's agent drops a gauge it has not heard of for two export intervals, which a busy
    # machine can miss once: the panels are read when the gauge is there.
    prometheus.wait_for('ray_asr_model_info{application="asr"}', "the model-info gauge")
    return statuses


# ---------------------------------------------------------------------------------------
# Dashboards and rules as Prometheus sees them


def _variables(dashboard: dict) -> dict[str, str]:
    """Each template variable at its "All" value, as Grafana sends it."""
    values = {"__rate_interval": RATE_WINDOW, "__interval": "15s", "__range": RATE_WINDOW}
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "datasource":
            values[var["name"]] = var.get("allValue") or ".*"
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    assert not re.search(r"\$[A-Za-z_]", expr), f"unsubstituted variable in {expr}"
    return expr


def panel_queries(path: Path) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows' nested panels too."""
    dashboard = json.loads(path.read_text())
    values = _variables(dashboard)
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return [
        (panel["title"], substitute(target["expr"], values))
        for panel in panels
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def alert_queries() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    out = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            match = COMPARISON.match(rule["expr"].strip())
            assert match, f"{rule['alert']}: expected `<query> <op> <threshold>`"
            out.append((rule["alert"], match["query"]))
    return out


def _record(results: list[dict]) -> None:
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps(results, indent=1) + "\n")


def _evaluate(prometheus: Prometheus, source: str, queries) -> list[dict]:
    results = []
    for title, expr in queries:
        data = prometheus.query(expr)  # asserts the query parsed and ran
        results.append(
            {"source": source, "panel": title, "series": len(data["result"]), "expr": expr}
        )
    return results


def _print_table(results: list[dict]) -> None:
    for r in results:
        print(f"{r['series']:4d} series  {r['source']:45s} {r['panel']}")


def test_counters_are_exported_at_zero_before_any_traffic(prometheus, obs_url):
    """asr-obs's ingress has served nothing yet (this runs before the `traffic` fixture):
    its error, rejection and transcription counters are there anyway, at 0, so rate() and
    the panels read 0 rather than no data."""
    for name in ("errors", "queue_rejections", "transcriptions", "audio_seconds"):
        expr = f'ray_asr_{name}_total{{application="asr-obs",route="/transcribe"}}'
        prometheus.wait_for(expr, f"{name} at start-up")
        values = [float(r["value"][1]) for r in prometheus.query(expr)["result"]]
        assert values and all(v == 0 for v in values), (expr, values)


def test_every_asr_panel_and_alert_query_returns_series(prometheus, traffic):
    results = _evaluate(
        prometheus, "asr_service.json", panel_queries(DASHBOARDS / "asr_service.json")
    )
    results += _evaluate(prometheus, "ray_cluster/alerts.yml", alert_queries())
    # A counter first exported late in the traffic (the burst's 503s and rejections) has one
    # sample until the next scrape, and rate() needs two: give such queries a few scrapes.
    deadline = time.monotonic() + DATA_TIMEOUT_S
    while any(not r["series"] for r in results) and time.monotonic() < deadline:
        time.sleep(1)
        for r in results:
            if not r["series"]:
                r["series"] = prometheus.series(r["expr"])
    ray_results = []
    for path in sorted((DASHBOARDS / "ray").glob("*.json")):
        ray_results += _evaluate(prometheus, f"ray/{path.name}", panel_queries(path))
    _record(results + ray_results)
    _print_table(results)
    empty = [f"{r['source']}: {r['panel']}: {r['expr']}" for r in results if not r["series"]]
    assert not empty, "queries without series:\n" + "\n".join(empty)

    _print_table(ray_results)
    filled = {(r["source"], r["panel"]) for r in ray_results if r["series"]}
    missing = [
        (f"ray/{name}", title)
        for name, titles in RAY_PANELS_WITH_DATA.items()
        for title in titles
        if (f"ray/{name}", title) not in filled
    ]
    assert not missing, f"Ray panels expected to show this graph's data are empty: {missing}"


def test_alert_rules_load_and_evaluate_in_prometheus(prometheus, traffic):
    expected = {name for name, _ in alert_queries()}
    deadline = time.monotonic() + 30
    while True:
        groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = {r["name"]: r for g in groups for r in g["rules"]}
        evaluated = all(r.get("health") == "ok" for r in rules.values())
        if (set(rules) == expected and evaluated) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert set(rules) == expected
    for name, rule in rules.items():
        assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"


def test_prometheus_scrapes_every_node_in_rays_discovery_file(prometheus, ray_cluster):
    """Every target Ray lists is discovered; the head's metrics agent (where Serve's and the
    service's metrics are) is up. Ray also lists its dashboard's and autoscaler's fixed
    metrics ports (44227, 44217), which a test cluster without an autoscaler may not serve:
    they are reported, not required."""
    listed = json.loads(ray_cluster.service_discovery_file.read_text())
    ports = {t.rsplit(":", 1)[1] for group in listed for t in group["targets"]}
    agent = str(ray_cluster.metrics_export_port)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        active = httpx.get(f"{prometheus.url}/api/v1/targets", timeout=10).json()["data"]
        health = {
            t["scrapeUrl"].rsplit(":", 1)[1].split("/")[0]: t["health"]
            for t in active["activeTargets"]
        }
        if health.get(agent) == "up" or time.monotonic() > deadline:
            break
        time.sleep(1)
    print(f"targets from Ray's discovery file: {health}")
    assert set(health) == ports
    assert health[agent] == "up"


# ---------------------------------------------------------------------------------------
# One request's trace, across the Ray handles


def test_one_request_is_one_trace_with_a_span_per_stage(obs_url, span_sink, traffic):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = _post(
        f"{obs_url}/transcribe",
        "north_16k.wav",
        {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )
    assert response.status_code == 200, response.text
    # The client's trace is continued, and said back in the body and a header.
    assert response.json()["trace_id"] == trace_id
    assert response.headers["x-trace-id"] == trace_id

    wanted = {"ingress", "preprocess", "encode", "decode", "preprocessor", "decoder"}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with span_sink.lock:
            spans = [s for _, s in span_sink.spans if s.trace_id.hex() == trace_id]
            batches = [s for _, s in span_sink.spans if s.name == "encoder.batch"]
        if wanted <= {s.name for s in spans} and any(
            link.trace_id.hex() == trace_id for b in batches for link in b.links
        ):
            break
        time.sleep(0.5)
    by_name = {s.name: s for s in spans}
    assert wanted <= set(by_name), sorted(by_name)
    ingress = by_name["ingress"]
    for stage in ("preprocess", "encode", "decode"):
        assert by_name[stage].parent_span_id == ingress.span_id, stage
    # Context crossed the handles: each replica's span is a child of its stage span.
    assert by_name["preprocessor"].parent_span_id == by_name["preprocess"].span_id
    assert by_name["decoder"].parent_span_id == by_name["decode"].span_id
    batch = next(b for b in batches if any(k.trace_id.hex() == trace_id for k in b.links))
    assert any(k.span_id == by_name["encode"].span_id for k in batch.links)

    print(f"\ntrace {trace_id}")
    for span in sorted([*spans, batch], key=lambda s: s.start_time_unix_nano):
        ms = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
        print(
            f"  {span.name:13s} {ms:8.1f} ms  span {span.span_id.hex()}"
            f"  parent {span.parent_span_id.hex() or '-'}"
        )
