"""Faults under load: kill an Encoder replica's process, kill the Preprocessor's, bring the
Encoder to zero replicas and back; count failed requests and time to recovery.

    .venv/bin/python -m bench.faults --start                 # its own `serve run`, ~4 min
    .venv/bin/python -m bench.faults --url http://127.0.0.1:8000 --ray-address 127.0.0.1:6379

A steady open-loop load (bench/load.py's client, --rate requests/s) runs through every
scenario. The script connects to the service's Ray cluster as a driver to read Serve's state
(replicas, their PIDs, the deployed config) and to redeploy; with --start that is the cluster
`serve run` started, otherwise --ray-address must name it (the script checks that its Serve
HTTP port is the URL's before doing anything). Scenarios:

- kill-encoder / kill-preprocessor: SIGKILL the PID of one RUNNING replica of the stage (only
  that PID), as an OOM kill or a crash would. Serve notices, starts a replacement.
- zero-encoder: with the load paused, redeploy the Encoder with min_replicas 0 and short
  delays so the autoscaler takes it to 0 replicas; resume the load (the first requests wait
  for a cold start from zero); then redeploy the original config.

Per scenario: requests sent/failed by status around the fault (those in flight when it hit,
and those sent after), the longest latency, seconds until the stage had its replicas back
(Serve's view) and until requests succeeded again (the client's view). JSON goes to
bench/results/faults-<time>.json (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import machine_info, uptime_line, write_results
from bench.load import SPEECH_CLIPS, Client, Record, load_clips, summarize
from bench.stack import ServeStack

APP = "asr"
START_TIMEOUT_S = 300.0
POLL_S = 0.5
ZERO_TIMEOUT_S = 150.0  # for the autoscaler to take a stage down to 0 replicas
RECOVERY_TIMEOUT_S = 180.0
ZERO_AUTOSCALING = {  # fast to zero: the smallest delays Serve's autoscaler accepts
    "min_replicas": 0,
    "max_replicas": 2,
    "initial_replicas": 0,
    "target_ongoing_requests": 8,
    "upscale_delay_s": 0,
    "downscale_delay_s": 1,
    "downscale_to_zero_delay_s": 1,
    "look_back_period_s": 11,  # must exceed Serve's 10 s metrics interval
}
IN_FLIGHT_WAIT_S = 10.0  # for requests to be in flight when the fault hits


class BackgroundLoad(threading.Thread):
    """Open-loop requests at `rate`/s in their own event loop, tagged with `self.phase`;
    paused while `self.paused` is set."""

    def __init__(self, url: str, api_key: str | None, rate: float, timeout_s: float) -> None:
        super().__init__(daemon=True)
        self.url, self.api_key, self.rate, self.timeout_s = url, api_key, rate, timeout_s
        self.phase = "baseline"
        self.records: list[Record] = []
        self.in_flight = 0
        self.paused = threading.Event()
        self.halt = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        clips = load_clips(list(SPEECH_CLIPS))
        client = Client(self.url, self.api_key, self.timeout_s)
        client.t0 = self.t0
        tasks: set[asyncio.Task] = set()
        i = 0
        while not self.halt.is_set():
            await asyncio.sleep(1 / self.rate)
            if self.paused.is_set():
                continue
            task = asyncio.create_task(self._one(client, clips[i % len(clips)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout_s + 5)
        await client.aclose()

    async def _one(self, client: Client, clip: tuple[str, bytes]) -> None:
        self.in_flight += 1
        try:
            self.records.append(await client.transcribe(self.phase, clip))
        finally:
            self.in_flight -= 1

    def now(self) -> float:
        return time.monotonic() - self.t0

    def stop(self) -> None:
        self.halt.set()
        self.join(self.timeout_s + 30)


# ---------------------------------------------------------------------------------------
# Serve's view, through a driver connected to the service's cluster


def connect(address: str) -> None:
    # New local clusters require the token (~/.ray/auth_token); read when ray is imported.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    ray.init(address=address, namespace="serve", log_to_driver=False, logging_level="WARNING")


def serve_details() -> dict[str, Any]:
    from ray.serve.context import _get_global_client

    return _get_global_client().get_serve_details()


def running_replicas(stage: str) -> list[dict[str, Any]]:
    deployment = serve_details()["applications"][APP]["deployments"][stage]
    return [r for r in deployment["replicas"] if str(r["state"]).endswith("RUNNING")]


def stage_healthy(stage: str, replicas: int, without: str | None = None) -> bool:
    """The stage is HEALTHY with `replicas` RUNNING, none of them the replica `without`."""
    deployment = serve_details()["applications"][APP]["deployments"][stage]
    running = [r for r in deployment["replicas"] if str(r["state"]).endswith("RUNNING")]
    if without is not None and any(r["replica_id"] == without for r in running):
        return False
    return str(deployment["status"]).endswith("HEALTHY") and len(running) >= replicas


def wait_until(predicate, timeout_s: float) -> float | None:
    """Seconds until `predicate()` held, or None if it never did within `timeout_s`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        with contextlib.suppress(Exception):  # Serve's state may be mid-update
            if predicate():
                return round(time.monotonic() - start, 2)
        time.sleep(POLL_S)
    return None


def deploy(apps: list[dict[str, Any]]) -> None:
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    details = serve_details()
    http = {k: v for k, v in details["http_options"].items() if k in {"host", "port", "root_path"}}
    schema = ServeDeploySchema.model_validate(
        {
            "proxy_location": str(details["proxy_location"].value),
            "http_options": http,
            "applications": apps,
        }
    )
    _get_global_client().deploy_apps(schema)


def deployed_apps() -> list[dict[str, Any]]:
    apps = serve_details()["applications"].values()
    return [
        json.loads(json.dumps(a["deployed_app_config"], default=_plain))
        for a in apps
        if a.get("deployed_app_config")
    ]


def _plain(value: Any) -> Any:
    return getattr(value, "value", str(value))


# ---------------------------------------------------------------------------------------
# Scenarios


def kill_replica(load: BackgroundLoad, stage: str, observe_s: float) -> dict[str, Any]:
    replicas = running_replicas(stage)
    if not replicas:
        raise RuntimeError(f"{stage} has no RUNNING replica to kill")
    before = len(replicas)
    victim = replicas[0]
    load.phase = f"kill-{stage.lower()}"
    wait_until(lambda: load.in_flight >= 2, IN_FLIGHT_WAIT_S)
    t_fault = load.now()
    in_flight = load.in_flight
    os.kill(int(victim["pid"]), signal.SIGKILL)  # this replica's process, nothing else
    print(
        f"{load.phase}: SIGKILL pid {victim['pid']} ({victim['actor_name']}), "
        f"{in_flight} requests in flight",
        flush=True,
    )
    replaced = wait_until(
        lambda: stage_healthy(stage, before, without=victim["replica_id"]), RECOVERY_TIMEOUT_S
    )
    time.sleep(max(0.0, observe_s - (load.now() - t_fault)))
    return {
        "victim_pid": victim["pid"],
        "victim": victim["actor_name"],
        "replicas_before": before,
        "t_fault_s": round(t_fault, 2),
        "serve_recovered_s": replaced,
        "requests_in_flight_at_kill": in_flight,
    }


def zero_and_back(load: BackgroundLoad, stage: str, observe_s: float) -> dict[str, Any]:
    original = deployed_apps()
    zero = copy.deepcopy(original)
    for app in zero:
        for deployment in app.get("deployments", []):
            if app["name"] == APP and deployment["name"] == stage:
                deployment.pop("num_replicas", None)
                deployment["autoscaling_config"] = dict(ZERO_AUTOSCALING)
    load.paused.set()
    time.sleep(5)  # answers of the paused load come back
    deploy(zero)
    to_zero = wait_until(lambda: not running_replicas(stage), ZERO_TIMEOUT_S)
    result: dict[str, Any] = {"stage": stage, "seconds_to_zero_replicas": to_zero}
    load.phase = f"zero-{stage.lower()}"
    t_fault = load.now()
    result["t_fault_s"] = round(t_fault, 2)
    load.paused.clear()  # requests now meet a stage with no replica: cold start from zero
    back = wait_until(lambda: stage_healthy(stage, 1), RECOVERY_TIMEOUT_S)
    result["serve_recovered_s"] = back
    time.sleep(max(0.0, observe_s / 2 - (load.now() - t_fault)))
    load.phase = f"restore-{stage.lower()}"
    t_restore = load.now()
    deploy(original)
    result["restore_applied_s"] = wait_until(
        lambda: str(serve_details()["applications"][APP]["status"]).endswith("RUNNING"),
        RECOVERY_TIMEOUT_S,
    )
    result["t_restore_s"] = round(t_restore, 2)
    time.sleep(max(0.0, observe_s / 2 - (load.now() - t_restore)))
    return result


def figures(records: list[Record], t_fault: float, t_end: float) -> dict[str, Any]:
    """Requests around a fault: in flight when it hit, and sent after it (until t_end)."""
    in_flight = [r for r in records if r.sent_s < t_fault < r.sent_s + r.latency_s]
    after = [r for r in records if t_fault <= r.sent_s < t_end]
    failures = [r for r in in_flight + after if r.status != "200"]
    last_failure = max((r.sent_s for r in failures), default=None)
    return {
        "in_flight_at_fault": summarize(in_flight) if in_flight else {"sent": 0},
        "sent_after_fault": summarize(after) if after else {"sent": 0},
        "failed": len(failures),
        "max_latency_s": max((r.latency_s for r in in_flight + after), default=None),
        # The client's view: from the fault until the last failed request was sent.
        "client_recovered_s": 0.0 if last_failure is None else round(last_failure - t_fault, 2),
    }


def run(args: argparse.Namespace, url: str, address: str) -> dict[str, Any]:
    connect(address)
    port = int(serve_details()["http_options"]["port"])
    if port != httpx.URL(url).port:
        raise SystemExit(f"the cluster at {address} serves HTTP on port {port}, not {url}")
    load = BackgroundLoad(url, args.api_key, args.rate, args.request_timeout_s)
    load.start()
    scenarios: list[dict[str, Any]] = []
    try:
        time.sleep(args.settle_s)
        for name in args.scenarios.split(","):
            if name == "kill-encoder":
                info = kill_replica(load, "Encoder", args.observe_s)
            elif name == "kill-preprocessor":
                info = kill_replica(load, "Preprocessor", args.observe_s)
            elif name == "zero-encoder":
                info = zero_and_back(load, "Encoder", args.observe_s)
            else:
                raise SystemExit(f"unknown scenario {name!r}")
            info["scenario"] = name
            scenarios.append(info)
            load.phase = "between"
            time.sleep(args.settle_s)
    finally:
        load.stop()
    t_ends = [s["t_fault_s"] for s in scenarios[1:]] + [float("inf")]
    for info, t_end in zip(scenarios, t_ends, strict=True):
        info.update(figures(load.records, info["t_fault_s"], t_end))
        print(
            f"{info['scenario']:18s} failed {info['failed']:3d}  "
            f"in flight at the fault {info['in_flight_at_fault']['sent']:3d}  "
            f"sent after {info['sent_after_fault']['sent']:4d}  "
            f"Serve back after {info.get('serve_recovered_s')} s  "
            f"clients ok again after {info['client_recovered_s']} s  "
            f"max latency {info['max_latency_s']} s",
            flush=True,
        )
    baseline = [r for r in load.records if r.phase == "baseline"]
    return {
        "baseline": summarize(baseline),
        "all_requests": summarize(load.records),
        "scenarios": scenarios,
    }


def stack_address(stack: ServeStack) -> str:
    """The GCS address of the cluster `serve run` started, from its session directory."""
    assert stack.workdir is not None
    files = list((stack.workdir / "ray" / "session_latest").glob("gcs_server_port_*"))
    if not files:
        raise RuntimeError("no gcs_server_port file in the stack's Ray session")
    return f"127.0.0.1:{files[0].read_text().strip()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--ray-address", default=None, help="the service's cluster (GCS)")
    parser.add_argument("--api-key", default=os.environ.get("ASR_API_KEY"))
    parser.add_argument("--start", action="store_true", help="start `serve run` on a free port")
    parser.add_argument(
        "--model-dir", type=Path, default=os.environ.get("ASR_MODEL_DIR", "models/default")
    )
    parser.add_argument("--scenarios", default="kill-encoder,kill-preprocessor,zero-encoder")
    parser.add_argument("--rate", type=float, default=3.0, help="requests per second")
    parser.add_argument("--settle-s", type=float, default=15.0, help="load before each fault")
    parser.add_argument("--observe-s", type=float, default=40.0, help="load after each fault")
    parser.add_argument("--request-timeout-s", type=float, default=120.0)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not args.start and not args.ray_address:
        parser.error("give --ray-address of the service's cluster, or --start")

    results: dict[str, Any] = {
        "args": {k: str(v) for k, v in vars(args).items() if k != "api_key"},
        "machine": machine_info(),
        "note": args.note,
    }
    stack = ServeStack(args.model_dir) if args.start else None
    try:
        if stack:
            stack.start()
            results["cold_start"] = stack.wait_healthy(START_TIMEOUT_S)
            url, address = stack.url, stack_address(stack)
        else:
            url, address = args.url, args.ray_address
        results["url"] = url
        results.update(run(args, url, address))
    finally:
        with contextlib.suppress(Exception):
            import ray

            ray.shutdown()
        if stack:
            results["stop"] = stack.stop()
    results["uptime_end"] = uptime_line()
    write_results(results, "faults", args.out, default=str)


if __name__ == "__main__":
    main()
