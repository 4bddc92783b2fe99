"""Two Ray nodes on this machine: the graph spreads over both, one node dies under traffic, and
the lost replicas come back on the survivor while requests keep being answered.

The session's cluster (tests/conftest.py) gets a second raylet with its own CPUs. A separate
app of the same graph (`serve_app.app:build_app`, app "multinode" on /multinode) is deployed
with fixed replica counts and small CPU reservations, so Serve's default SPREAD scheduling
puts replicas on both nodes while all of them still fit on the head alone. The shared "asr"
app is left alone. Figures go to stdout and bench/results/multinode-*.json.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import API_KEY, AUTH

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
CLIP = REPO / "tests" / "data" / "clips" / "north_16k.wav"
RESULTS_DIR = REPO / "bench" / "results"
APP = "multinode"
ROUTE = "/multinode"
WORKER_CPUS = 2
# Two of each stage: with SPREAD scheduling one lands on each node. CPU reservations are small
# so that all eight still fit on the 2-CPU head next to the shared "asr" app (0.9 CPU).
REPLICAS = {"Ingress": 2, "Preprocessor": 2, "Encoder": 2, "Decoder": 2}
NUM_CPUS = {"Ingress": 0.05, "Preprocessor": 0.1, "Encoder": 0.2, "Decoder": 0.05}
DEPLOY_TIMEOUT_S = 180
RECOVERY_TIMEOUT_S = 180
TRAFFIC_THREADS = 4
MAX_REQUESTS = 3000  # bound on the whole run, whatever happens
REQUEST_TIMEOUT_S = 60
TRAFFIC_BEFORE_LOSS_S = 5
TRAFFIC_AFTER_RECOVERY_S = 5


@dataclass
class Sample:
    sent: float  # seconds since the traffic started
    done: float
    status: int | None  # None: no HTTP answer at all
    error: str = ""


def _with_options(app: Any, options: dict[str, dict]) -> Any:
    """The same bound graph with per-deployment options applied (what a Serve config's
    `deployments:` section does for `serve deploy`)."""
    from ray.serve import Application

    bound = app._bound_deployment
    args = tuple(
        _with_options(a, options) if isinstance(a, Application) else a for a in bound.init_args
    )
    kwargs = {
        k: _with_options(v, options) if isinstance(v, Application) else v
        for k, v in bound.init_kwargs.items()
    }
    return Application(
        bound.options(_init_args=args, _init_kwargs=kwargs, **options.get(bound.name, {}))
    )


def _build_app(bundle: Path) -> Any:
    from serve_app.app import build_app

    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    env = config["applications"][0]["runtime_env"]["env_vars"]
    options = {
        name: {
            "num_replicas": count,
            "ray_actor_options": {"num_cpus": NUM_CPUS[name], "runtime_env": {"env_vars": env}},
        }
        for name, count in REPLICAS.items()
    }
    args = {"model_dir": str(bundle), "api_key": API_KEY, "health_timeout_s": 2}
    return _with_options(build_app(args), options)


def _replicas_by_node(dashboard_url: str) -> dict[str, Counter]:
    """node id -> {deployment: live replicas} for this app, from Ray's state API (the
    session cluster's own dashboard: other Ray clusters may run on this machine)."""
    from ray.util.state import list_actors

    prefix = f"ServeReplica:{APP}:"
    actors = list_actors(
        address=dashboard_url, filters=[("state", "=", "ALIVE")], limit=10_000, timeout=30
    )
    placed: dict[str, Counter] = {}
    for actor in actors:
        if actor.class_name.startswith(prefix):
            deployment = actor.class_name.removeprefix(prefix)
            placed.setdefault(actor.node_id, Counter())[deployment] += 1
    return placed


def _app_status() -> str | None:
    from ray import serve

    status = serve.status().applications.get(APP)
    return None if status is None else status.status


def _wait(predicate, timeout_s: float, what: str, poll_s: float = 0.5) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(poll_s)
    pytest.fail(f"{what}: not within {timeout_s} s")


def _traffic(url: str, t0: float, stop: threading.Event, out: list[Sample], lock) -> None:
    audio = CLIP.read_bytes()
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        while not stop.is_set():
            with lock:
                if len(out) >= MAX_REQUESTS:
                    return
            sent = time.monotonic() - t0
            try:
                response = client.post(
                    url, files={"file": (CLIP.name, audio, "audio/wav")}, headers=AUTH
                )
                sample = Sample(sent, time.monotonic() - t0, response.status_code)
                if response.status_code != 200:
                    sample.error = response.text[:200]
            except httpx.HTTPError as exc:
                sample = Sample(sent, time.monotonic() - t0, None, f"{type(exc).__name__}: {exc}")
            with lock:
                out.append(sample)


def test_graph_survives_losing_a_node(ray_cluster, serve_url, default_bundle):
    from ray import serve

    head_id = ray_cluster.cluster.head_node.node_id
    dashboard = f"http://127.0.0.1:{ray_cluster.dashboard_port}"
    worker = ray_cluster.add_worker(num_cpus=WORKER_CPUS)
    worker_alive = True
    url = f"{serve_url}{ROUTE}/transcribe"
    try:
        ray_cluster.cluster.wait_for_nodes()
        worker_id = worker.node_id
        serve.run_many(
            [serve.RunTarget(_build_app(default_bundle), name=APP, route_prefix=ROUTE)],
            wait_for_applications_running=False,
        )
        deploy_s = _wait(lambda: _app_status() == "RUNNING", DEPLOY_TIMEOUT_S, "deploy")
        before = _replicas_by_node(dashboard)
        assert set(before) == {head_id, worker_id}, f"replicas not on both nodes: {before}"
        assert sum(sum(c.values()) for c in before.values()) == sum(REPLICAS.values())
        warm = httpx.post(
            url, files={"file": (CLIP.name, CLIP.read_bytes())}, headers=AUTH, timeout=120
        )
        assert warm.status_code == 200, warm.text
        expected_text = warm.json()["text"]

        samples: list[Sample] = []
        lock, stop = threading.Lock(), threading.Event()
        t0 = time.monotonic()
        threads = [
            threading.Thread(target=_traffic, args=(url, t0, stop, samples, lock), daemon=True)
            for _ in range(TRAFFIC_THREADS)
        ]
        for thread in threads:
            thread.start()
        try:
            time.sleep(TRAFFIC_BEFORE_LOSS_S)
            t_loss = time.monotonic() - t0
            ray_cluster.remove_worker(worker)  # abrupt: its raylet and replicas are killed
            worker_alive = False

            def healed() -> bool:
                placed = _replicas_by_node(dashboard)
                on_head = sum(placed.get(head_id, Counter()).values())
                return (
                    _app_status() == "RUNNING"
                    and set(placed) == {head_id}
                    and on_head == sum(REPLICAS.values())
                )

            recovery_s = _wait(healed, RECOVERY_TIMEOUT_S, "replicas back on the head", 1.0)
            t_healed = time.monotonic() - t0
            time.sleep(TRAFFIC_AFTER_RECOVERY_S)
        finally:
            stop.set()
            for thread in threads:
                thread.join(REQUEST_TIMEOUT_S + 5)
        after = _replicas_by_node(dashboard)
        check = httpx.post(
            url, files={"file": (CLIP.name, CLIP.read_bytes())}, headers=AUTH, timeout=120
        )
        assert check.status_code == 200 and check.json()["text"] == expected_text
    finally:
        if worker_alive:
            ray_cluster.remove_worker(worker)
        serve.delete(APP)

    # In flight at the loss = sent before it and answered after it.
    phases = {
        "before_loss": [s for s in samples if s.done < t_loss],
        "during_loss": [s for s in samples if s.done >= t_loss and s.sent < t_healed],
        "after_recovery": [s for s in samples if s.sent >= t_healed],
    }
    figures = {
        "worker_cpus": WORKER_CPUS,
        "replicas_requested": REPLICAS,
        "deploy_s": round(deploy_s, 1),
        "replicas_before": _named(before, head_id, worker_id),
        "replicas_after": _named(after, head_id, worker_id),
        "requests_sent": len(samples),
        "traffic_threads": TRAFFIC_THREADS,
        "node_lost_at_s": round(t_loss, 2),
        "healthy_again_after_s": round(recovery_s, 1),
        **{
            phase: {
                "sent": len(group),
                "ok": sum(s.status == 200 for s in group),
                "failed": sum(s.status != 200 for s in group),
                "failures_by_status": dict(
                    Counter(str(s.status) for s in group if s.status != 200)
                ),
            }
            for phase, group in phases.items()
        },
        "first_ok_after_loss_s": _first_ok_after(samples, t_loss),
        "failure_examples": sorted({s.error[:160] for s in samples if s.status != 200})[:5],
        "samples": [asdict(s) for s in samples],
    }
    _record(figures)

    assert figures["before_loss"]["failed"] == 0, figures["before_loss"]
    assert figures["during_loss"]["ok"] > 0, "no request succeeded while the node was lost"
    assert figures["after_recovery"]["sent"] > 0
    assert figures["after_recovery"]["failed"] == 0, figures["after_recovery"]
    assert figures["replicas_after"] == {"head": REPLICAS}


def _named(placed: dict[str, Counter], head_id: str, worker_id: str) -> dict[str, dict]:
    names = {head_id: "head", worker_id: "worker"}
    return {names.get(node, node): dict(sorted(c.items())) for node, c in placed.items()}


def _first_ok_after(samples: list[Sample], t_loss: float) -> float | None:
    oks = [s.done - t_loss for s in samples if s.sent >= t_loss and s.status == 200]
    return round(min(oks), 2) if oks else None


def _record(figures: dict) -> None:
    summary = {k: v for k, v in figures.items() if k != "samples"}
    print("\nmulti-node figures:\n" + json.dumps(summary, indent=2))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"multinode-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(figures, indent=2))
    print(f"written {path.relative_to(REPO)}")
