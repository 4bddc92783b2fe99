"""Load and soak test over loopback HTTP: a steady rate for minutes, then past saturation,
then the steady rate again to show recovery.

    make serve                                   # in another terminal, or let --start do it
    .venv/bin/python -m bench.load               # 4 min steady, 30 s overload, 60 s recovery
    .venv/bin/python -m bench.load --start --steady-s 60 --overload-s 20 --recovery-s 30

Requests arrive open-loop (at fixed intervals, whatever the service answers), so an overloaded
service really sees more work than it can do, as with real clients. Each request has a
client timeout: a request that hangs is counted as `timeout`, never waited on forever.

Figures: requests sent and failed by status per phase and per time window, latency
p50/p95/p99/max of every answer (and of the 200s), RSS/PSS of every process of the Ray stack
and their total over time (the service's process tree: `serve run`'s with --start, else the
one that listens on the URL's port and its Ray ancestors), and verdicts:

- steady: no errors; memory growth (total PSS, start vs end of the phase) within
  --rss-growth-mib; latency stable (p50 of the last third within 1.5x + 0.5 s of the first);
- overload: the rejected requests get 503 fast (p95 < --fast-503-s), nothing hangs (no
  client timeouts), every connection is accepted (no ConnectTimeout: a full listen backlog);
- recovery: every request succeeds again once the overload stops.

JSON goes to bench/results/load-<time>.json (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import latency_summary, machine_info, uptime_line, write_results
from bench.stack import MemorySample, ServeStack, memory_summary, snapshot

REPO = Path(__file__).resolve().parent.parent
CLIPS_DIR = REPO / "tests" / "data" / "clips"
SPEECH_CLIPS = ("north_16k.wav", "central_44k_stereo.flac", "south_48k.ogg", "north_f2_22k.mp3")
REQUEST_TIMEOUT_S = 120.0  # a request with no answer by then counts as hung
START_TIMEOUT_S = 300.0
DRAIN_TIMEOUT_S = REQUEST_TIMEOUT_S + 10.0


@dataclass
class Record:
    phase: str
    sent_s: float  # seconds since the test started
    latency_s: float
    status: str  # HTTP status code, or "timeout" / the transport error's name
    audio_s: float = 0.0
    detail: str = ""  # for an error: its JSON error code, else the start of the body


def load_clips(names: list[str]) -> list[tuple[str, bytes]]:
    return [(name, (CLIPS_DIR / name).read_bytes()) for name in names]


def _error_detail(response: httpx.Response) -> str:
    """The app's errors are JSON with a code; Serve's proxy answers 503 in plain text."""
    try:
        return "app:" + response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return "proxy:" + response.text.split("(")[0][:60]


class Client:
    """One shared httpx.AsyncClient; every request bounded by REQUEST_TIMEOUT_S."""

    def __init__(self, url: str, api_key: str | None, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s
        self.http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=2000, max_keepalive_connections=64),
            timeout=httpx.Timeout(timeout_s, connect=10.0),
        )
        self.t0 = time.monotonic()

    async def transcribe(self, phase: str, clip: tuple[str, bytes]) -> Record:
        name, data = clip
        start = time.monotonic()
        audio_s, detail = 0.0, ""
        try:
            # The whole exchange under one deadline: httpx's timeouts are per read/write.
            async with asyncio.timeout(self.timeout_s):
                response = await self.http.post(
                    f"{self.url}/transcribe", files={"file": (name, data)}, headers=self.headers
                )
            status = str(response.status_code)
            if response.status_code == 200:
                audio_s = float(response.json()["duration"])
            else:
                detail = _error_detail(response)
        except (TimeoutError, httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout):
            status = "timeout"  # no answer within the request timeout: hung
        except httpx.TransportError as error:
            status = type(error).__name__  # ConnectTimeout: not even accepted (backlog full)
        end = time.monotonic()
        return Record(
            phase, round(start - self.t0, 3), round(end - start, 4), status, audio_s, detail
        )

    async def aclose(self) -> None:
        await self.http.aclose()


async def open_loop(
    client: Client, clips: list[tuple[str, bytes]], phase: str, rate: float, duration_s: float
) -> list[Record]:
    """Send `rate` requests per second for `duration_s`, not waiting for answers; then wait
    (bounded by the request timeout) for every answer."""
    tasks: list[asyncio.Task[Record]] = []
    start = time.monotonic()
    for i in range(round(rate * duration_s)):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(client.transcribe(phase, clips[i % len(clips)])))
    done = await asyncio.wait_for(asyncio.gather(*tasks), DRAIN_TIMEOUT_S)
    return list(done)


# ---------------------------------------------------------------------------------------
# Memory of the Ray stack


def stack_root(url: str) -> psutil.Process | None:
    """The process that listens on the URL's port (Serve's proxy), walked up through its
    Ray ancestors (raylet, and `serve run` when it started the cluster)."""
    port = httpx.URL(url).port or 80
    listener = None
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            listener = conn.pid
            break
    if listener is None:
        return None
    root = psutil.Process(listener)
    while (parent := root.parent()) is not None and parent.pid != 1:
        command = " ".join(parent.cmdline())
        if "ray" not in command and "serve" not in command:
            break
        root = parent
    return root


class MemoryPoller(threading.Thread):
    """The stack's memory (stack.snapshot) every `every_s`, tagged with the phase."""

    def __init__(self, root: psutil.Process, every_s: float, t0: float) -> None:
        super().__init__(daemon=True)
        self.root, self.every_s, self.t0 = root, every_s, t0
        self.phase = "warmup"
        self.samples: list[tuple[str, MemorySample]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            sample = MemorySample(round(time.monotonic() - self.t0, 1), snapshot(self.root))
            self.samples.append((self.phase, sample))
            self.halt.wait(self.every_s)

    def stop(self) -> None:
        self.halt.set()
        self.join()


def memory_report(poller: MemoryPoller | None, bound_mib: float) -> dict[str, Any]:
    if poller is None or not poller.samples:
        return {"note": "no process tree found for the URL: memory not sampled"}
    over_time = [
        {
            "t_s": s.t_s,
            "phase": phase,
            "processes": len(s.processes),
            **{f"{k}_mib": round(v / 2**20, 1) for k, v in s.totals().items()},
        }
        for phase, s in poller.samples
    ]
    steady = [row for row in over_time if row["phase"] == "steady"]
    verdict: dict[str, Any] = {"bound_mib": bound_mib}
    if len(steady) >= 4:
        tenth = max(1, len(steady) // 10)
        first = statistics.median(r["pss_mib"] for r in steady[:tenth])
        last = statistics.median(r["pss_mib"] for r in steady[-tenth:])
        verdict.update(
            pss_start_mib=first,
            pss_end_mib=last,
            growth_mib=round(last - first, 1),
            processes_start=steady[0]["processes"],
            processes_end=steady[-1]["processes"],
            ok=last - first <= bound_mib,
        )
    else:
        verdict["ok"] = None  # too short a steady phase to say
    return {
        "growth_verdict": verdict,
        "summary": memory_summary([s for _, s in poller.samples]),
        "over_time": over_time,
    }


# ---------------------------------------------------------------------------------------
# Figures


def summarize(records: list[Record]) -> dict[str, Any]:
    statuses = collections.Counter(r.status for r in records)
    details = collections.Counter(f"{r.status} {r.detail}" for r in records if r.detail)
    ok = [r.latency_s for r in records if r.status == "200"]
    return {
        "sent": len(records),
        "ok": len(ok),
        "failed": len(records) - len(ok),
        "by_status": dict(sorted(statuses.items())),
        "errors": dict(details.most_common(8)),
        "audio_s": round(sum(r.audio_s for r in records), 1),
        "all": latency_summary([r.latency_s for r in records]),
        "ok_latency": latency_summary(ok),
    }


def windows(records: list[Record], window_s: float) -> list[dict[str, Any]]:
    """Per window of send time: what was sent in it and how it was answered."""
    buckets: dict[int, list[Record]] = collections.defaultdict(list)
    for record in records:
        buckets[int(record.sent_s // window_s)].append(record)
    rows = []
    for index in sorted(buckets):
        group = buckets[index]
        summary = summarize(group)
        rows.append(
            {
                "t_s": index * window_s,
                "phase": collections.Counter(r.phase for r in group).most_common(1)[0][0],
                "sent": summary["sent"],
                "by_status": summary["by_status"],
                **{k: v for k, v in summary["all"].items() if k != "latency_mean_s"},
            }
        )
    return rows


def verdicts(phases: dict[str, list[Record]], fast_503_s: float) -> dict[str, Any]:
    steady = phases["steady"]
    third = max(1, len(steady) // 3)
    first = statistics.median(r.latency_s for r in steady[:third])
    last = statistics.median(r.latency_s for r in steady[-third:])
    overload = phases["overload"]
    rejected = [r.latency_s for r in overload if r.status == "503"]
    hung = [r for r in overload if r.status == "timeout"]
    refused = [r for r in overload if r.status not in {"200", "503", "timeout"}]
    recovery = phases["recovery"]
    return {
        "steady_no_errors": all(r.status == "200" for r in steady),
        "steady_latency_stable": {
            "p50_first_third_s": round(first, 3),
            "p50_last_third_s": round(last, 3),
            "ok": last <= 1.5 * first + 0.5,
        },
        "overload_got_503": bool(rejected),
        "overload_503_fast": {
            "p95_s": round(latency_summary(rejected)["latency_p95_s"] or 0.0, 3),
            "bound_s": fast_503_s,
            "ok": bool(rejected) and latency_summary(rejected)["latency_p95_s"] < fast_503_s,
        },
        "overload_nothing_hung": {"hung": len(hung), "ok": not hung},
        "overload_all_connections_accepted": {
            "transport_errors": dict(collections.Counter(r.status for r in refused)),
            "ok": not refused,
        },
        "recovered": all(r.status == "200" for r in recovery),
    }


def print_phase(name: str, summary: dict[str, Any]) -> None:
    lat = summary["all"]
    print(
        f"{name:9s} sent {summary['sent']:5d}  ok {summary['ok']:5d}  "
        f"by status {summary['by_status']}  p50 {lat['latency_p50_s']} s  "
        f"p95 {lat['latency_p95_s']} s  p99 {lat['latency_p99_s']} s  "
        f"max {lat['latency_max_s']} s",
        flush=True,
    )


async def run(args: argparse.Namespace, url: str, root: psutil.Process | None) -> dict[str, Any]:
    clips = load_clips(args.clips.split(","))
    client = Client(url, args.api_key, args.request_timeout_s)
    poller = MemoryPoller(root, args.memory_poll_s, client.t0) if root else None
    if poller:
        poller.start()
    phases: dict[str, list[Record]] = {}
    phases_drain: float | None = None
    try:
        warmup = [await client.transcribe("warmup", clip) for clip in clips]
        if not all(r.status == "200" for r in warmup):
            raise RuntimeError(f"warm-up failed: {[r.status for r in warmup]}")
        plan = [
            ("steady", args.rate, args.steady_s),
            ("overload", args.overload_rate, args.overload_s),
            ("recovery", args.rate, args.recovery_s),
        ]
        for phase, rate, duration in plan:
            if poller:
                poller.phase = phase
            t = time.monotonic()
            print(f"{phase}: {rate} req/s for {duration} s ...", flush=True)
            phases[phase] = await open_loop(client, clips, phase, rate, duration)
            print_phase(phase, summarize(phases[phase]))
            if phase == "overload":
                # Arrivals stopped; when did the last overload answer come back?
                last = max(r.sent_s + r.latency_s for r in phases[phase])
                drain = last - (t - client.t0 + duration)
                phases_drain = round(max(0.0, drain), 2)
                print(f"overload drained {phases_drain} s after its last arrival", flush=True)
    finally:
        if poller:
            poller.stop()
        await client.aclose()
    records = [r for p in phases.values() for r in p]
    return {
        "phases": {name: summarize(rs) for name, rs in phases.items()},
        "overload_drain_s": phases_drain,
        "windows": windows(records, args.window_s),
        "verdicts": verdicts(phases, args.fast_503_s),
        "memory": memory_report(poller, args.rss_growth_mib),
        "records": [asdict(r) for r in records] if args.keep_records else None,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=os.environ.get("ASR_API_KEY"))
    parser.add_argument(
        "--start", action="store_true", help="start `serve run serve_config.yaml` on a free port"
    )
    parser.add_argument(
        "--model-dir", type=Path, default=os.environ.get("ASR_MODEL_DIR", "models/default")
    )
    parser.add_argument("--clips", default=",".join(SPEECH_CLIPS), help="from tests/data/clips")
    parser.add_argument("--rate", type=float, default=2.0, help="steady requests per second")
    parser.add_argument("--steady-s", type=float, default=240.0)
    parser.add_argument("--overload-rate", type=float, default=40.0, help="requests per second")
    parser.add_argument("--overload-s", type=float, default=30.0)
    parser.add_argument("--recovery-s", type=float, default=60.0)
    parser.add_argument("--request-timeout-s", type=float, default=REQUEST_TIMEOUT_S)
    parser.add_argument("--window-s", type=float, default=10.0)
    parser.add_argument("--memory-poll-s", type=float, default=5.0)
    parser.add_argument("--rss-growth-mib", type=float, default=200.0, help="stated bound")
    parser.add_argument("--fast-503-s", type=float, default=2.0, help="p95 bound of a 503")
    parser.add_argument("--keep-records", action="store_true", help="every request in the JSON")
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    results: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine_info(),
        "note": args.note,
    }
    results["args"].pop("api_key", None)
    stack = ServeStack(args.model_dir) if args.start else None
    try:
        if stack:
            stack.start()
            results["cold_start"] = stack.wait_healthy(START_TIMEOUT_S)
            url, root = stack.url, psutil.Process(stack.proc.pid)
        else:
            url, root = args.url, stack_root(args.url)
        results["url"] = url
        results.update(asyncio.run(run(args, url, root)))
    finally:
        if stack:
            results["stop"] = stack.stop()
    results["uptime_end"] = uptime_line()
    print(json.dumps(results["verdicts"], indent=2))
    print("memory:", json.dumps(results["memory"].get("growth_verdict")))
    write_results(results, "load", args.out)


if __name__ == "__main__":
    main()
