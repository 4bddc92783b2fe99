"""Helpers the benchmark scripts share: closed-loop load, percentiles, the machine record.

Kept free of Ray and of the model so the unit tests can import it cheaply.
"""

from __future__ import annotations

import collections
import json
import math
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")

# call(item) -> (ok, audio seconds, extra): one request of a load run.
Call = Callable[[Any], tuple[bool, float, Any]]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between order statistics, as
    numpy's default method computes it."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(values)
    position = q / 100 * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(latencies: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max/mean in seconds (None each when nothing succeeded)."""
    keys = ("latency_p50_s", "latency_p95_s", "latency_p99_s", "latency_max_s", "latency_mean_s")
    if not latencies:
        return dict.fromkeys(keys)
    values = [
        percentile(latencies, 50),
        percentile(latencies, 95),
        percentile(latencies, 99),
        max(latencies),
        sum(latencies) / len(latencies),
    ]
    return {k: round(v, 4) for k, v in zip(keys, values, strict=True)}


@dataclass(frozen=True)
class Outcome:
    ok: bool
    audio_s: float
    latency_s: float
    extra: Any
    item: Any


def run_load(
    call: Call,
    items: Sequence[Any],
    concurrency: int,
    n_requests: int,
    min_seconds: float = 0.0,
) -> tuple[dict[str, Any], list[Outcome]]:
    """Closed loop: `concurrency` threads each send the next request (the items in turn) as
    soon as their last one returned, until `n_requests` have been sent and `min_seconds`
    have passed. Throughput is the audio of the successful requests over the wall time from
    the first send to the last answer."""
    if concurrency < 1 or n_requests < 1 or not items:
        raise ValueError("need concurrency >= 1, n_requests >= 1 and some items")
    lock = threading.Lock()
    issued = 0
    outcomes: list[Outcome] = []
    t0 = time.perf_counter()

    def worker() -> None:
        nonlocal issued
        while True:
            with lock:
                if issued >= n_requests and time.perf_counter() - t0 >= min_seconds:
                    return
                item = items[issued % len(items)]
                issued += 1
            start = time.perf_counter()
            try:
                ok, audio_s, extra = call(item)
            except Exception as exc:  # a client-side failure is a failed request, not a crash
                ok, audio_s, extra = False, 0.0, {"exception": f"{type(exc).__name__}: {exc}"}
            outcome = Outcome(ok, audio_s, time.perf_counter() - start, extra, item)
            with lock:
                outcomes.append(outcome)

    cpu0 = time.process_time()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    summary = summarize(outcomes, concurrency, wall)
    # CPU of this process during the load: all the work in-process, the client's share over HTTP
    # (which the service's machine also pays when the client runs on it).
    summary["caller_cpu_s"] = round(time.process_time() - cpu0, 2)
    return summary, outcomes


def summarize(outcomes: Sequence[Outcome], concurrency: int, wall_s: float) -> dict[str, Any]:
    good = [o for o in outcomes if o.ok]
    audio = sum(o.audio_s for o in good)
    return {
        "concurrency": concurrency,
        "requests": len(outcomes),
        "ok": len(good),
        "failed": len(outcomes) - len(good),
        "wall_s": round(wall_s, 3),
        "audio_s": round(audio, 3),
        "audio_s_per_wall_s": round(audio / wall_s, 3) if wall_s > 0 else None,
        **latency_summary([o.latency_s for o in good]),
    }


def batch_histogram(window_sizes: Sequence[int]) -> dict[str, dict[int, int]]:
    """From one batch size per encoded window (the X-Encoder-Batch-Sizes entries) to the
    number of windows and of batches per batch size."""
    per_window = collections.Counter(window_sizes)
    # A batch of k windows shows up k times, once in each of its windows' responses.
    batches = {k: round(v / k) for k, v in sorted(per_window.items())}
    return {"windows_by_batch_size": dict(sorted(per_window.items())), "batches": batches}


def parse_batch_sizes(header: str) -> list[int]:
    return [int(s) for s in header.split(",") if s.strip()]


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())  # the first processor's entries
    except OSError:
        pass
    return info


def _mem_total_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.partition("=")[2].strip('"')
    except OSError:
        pass
    return platform.system()


def package_versions(names: Sequence[str]) -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, RAM, OS, load, library versions."""
    cpuinfo = _cpuinfo()
    flags = set(cpuinfo.get("flags", "").split())
    mem = _mem_total_bytes()
    return {
        "cpu_model": cpuinfo.get("model name") or platform.processor() or "unknown",
        "cpu_flags": {f: f in flags for f in CPU_FLAGS},
        "nproc": len(os.sched_getaffinity(0)),
        "os_cpu_count": os.cpu_count(),
        "mem_total_gib": round(mem / 2**30, 1) if mem else None,
        "os": _os_release(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "uptime_start": uptime_line(),
        "versions": package_versions(
            ["numpy", "onnxruntime", "ray", "ctranslate2", "faster-whisper", "httpx"]
        ),
    }


def uptime_line() -> str:
    """`uptime`'s figures from /proc: time up and the 1/5/15-minute load averages."""
    try:
        up = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        up = float("nan")
    one, five, fifteen = os.getloadavg()
    return f"up {up / 3600:.1f} h, load average: {one:.2f}, {five:.2f}, {fifteen:.2f}"


class CpuMeter:
    """How busy the machine was during an interval, and how much of that was not ours:
    machine-wide busy CPU time (from /proc/stat) minus the CPU time of our own processes
    (this one, plus the process trees under `roots`), as a share of wall time x cores.
    The `others` share is the noise other users' work added to a measurement."""

    def __init__(self, roots: Callable[[], Sequence[int]] = tuple) -> None:
        self.roots = roots
        self.start = self._now()

    @staticmethod
    def _machine_busy() -> float:
        import psutil

        t = psutil.cpu_times()
        return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)

    def _ours(self) -> dict[tuple[int, float], float]:
        import psutil

        out: dict[tuple[int, float], float] = {}
        procs = [psutil.Process()]
        for pid in self.roots():
            try:
                root = psutil.Process(pid)
                procs += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        for proc in procs:
            try:
                times = proc.cpu_times()
                out[proc.pid, proc.create_time()] = times.user + times.system
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
        return out

    def _now(self) -> tuple[float, float, dict[tuple[int, float], float]]:
        return time.monotonic(), self._machine_busy(), self._ours()

    def stop(self) -> dict[str, float]:
        t0, busy0, ours0 = self.start
        t1, busy1, ours1 = self._now()
        capacity = (t1 - t0) * (os.cpu_count() or 1)
        # CPU our processes used in the interval (a process born inside it counts in full).
        ours = sum(v - ours0.get(key, 0.0) for key, v in ours1.items())
        busy = busy1 - busy0
        if capacity <= 0:
            return {"machine_busy": 0.0, "ours": 0.0, "others": 0.0}
        return {
            "machine_busy": round(min(1.0, busy / capacity), 3),
            "ours": round(min(1.0, ours / capacity), 3),
            "others": round(min(1.0, max(0.0, busy - ours) / capacity), 3),
        }


def write_results(results: dict[str, Any], prefix: str, out: Path | None, **dump: Any) -> Path:
    """Write a script's results as JSON to `out`, or bench/results/<prefix>-<time>.json, and
    say where. `dump` goes to json.dumps (e.g. default=str, ensure_ascii=False)."""
    out = out or RESULTS / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, **dump) + "\n")
    print(f"wrote {out}")
    return out
