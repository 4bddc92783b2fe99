"""What one hop of the Serve graph costs: CPU time of a DeploymentHandle call between two
replicas, on the caller and on the callee, with the replicas' settings from
serve_config.yaml (throughput mode: Serve's gRPC data plane, user code on the event loop).

    python -m bench.hop_cost [--payload-kb 64] [--calls 1600] [--per-call 1 8]

Every upload crosses four such hops (proxy -> Ingress, Ingress -> Preprocessor, -> Encoder
per window, -> Decoder) plus the Ingress' calls back to the proxy for the request body, and
each costs CPU on both ends whatever the stage does. For 3-5 s clips on 2 cores that fixed
cost is what holds HTTP below the in-process transcriber (README, "Where the CPU goes").
`--per-call 8` sends 8 items as one list per call: the share a batched hop would save.

The callee echoes its argument (a sync method, as the stages' are), so the figures are the
hop alone. The script starts its own local Ray instance (temporary directory, no dashboard)
and shuts it down again; writes bench/results/hop_cost-<time>.json (or `--out`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench.common import machine_info, uptime_line, write_results
from bench.stack import SERVE_CONFIG

CONCURRENCY = 8  # calls in flight from the caller, like the Ingress under load


def replica_env(config: Path = SERVE_CONFIG) -> dict[str, str]:
    """The env_vars serve_config.yaml gives the app's replicas."""
    app = yaml.safe_load(config.read_text())["applications"][0]
    return {k: str(v) for k, v in app.get("runtime_env", {}).get("env_vars", {}).items()}


def measure(
    payload_kb: int, calls: int, per_call: list[int], env: dict[str, str]
) -> dict[str, Any]:
    """CPU per item on both ends, replicas started with `env`."""
    import ray
    from ray import serve

    @serve.deployment(logging_config={"enable_access_log": False}, max_ongoing_requests=64)
    class Callee:
        def __call__(self, item: bytes) -> bytes:
            return item

        def many(self, items: list[bytes]) -> list[bytes]:
            return list(items)

        def pid(self) -> int:
            return os.getpid()

    @serve.deployment(logging_config={"enable_access_log": False})
    class Caller:
        def __init__(self, callee: Any) -> None:
            self.callee = callee

        async def pids(self) -> tuple[int, int]:
            return os.getpid(), await self.callee.pid.remote()

        async def latency_ms(self, n: int) -> float:
            item = b"x" * (payload_kb * 1024)
            times = []
            for _ in range(n):
                t = time.perf_counter()
                await self.callee.remote(item)
                times.append(time.perf_counter() - t)
            return 1000 * statistics.median(times)

        async def run(self, n_calls: int, size: int) -> None:
            item = b"x" * (payload_kb * 1024)

            async def worker() -> None:
                for _ in range(n_calls // CONCURRENCY):
                    if size == 1:
                        await self.callee.remote(item)
                    else:
                        await self.callee.many.remote([item] * size)

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    tmp = tempfile.mkdtemp(prefix="hop-cost-", dir="/tmp")
    ray.init(
        address="local",
        include_dashboard=False,
        _temp_dir=tmp,
        runtime_env={"env_vars": env},
        log_to_driver=False,
    )
    try:
        handle = serve.run(Caller.bind(Callee.bind()), name="hop_cost", route_prefix=None)
        procs = [psutil.Process(pid) for pid in handle.pids.remote().result()]

        def cpu() -> list[float]:
            return [p.cpu_times().user + p.cpu_times().system for p in procs]

        handle.run.remote(CONCURRENCY * 20, 1).result()  # warm-up
        rows = []
        for size in per_call:
            n_calls = max(CONCURRENCY, calls // size)
            before, t0 = cpu(), time.perf_counter()
            handle.run.remote(n_calls, size).result()
            wall, after = time.perf_counter() - t0, cpu()
            items = (n_calls // CONCURRENCY) * CONCURRENCY * size
            caller, callee = (1000 * (a - b) / items for a, b in zip(after, before, strict=True))
            rows.append(
                {
                    "items_per_call": size,
                    "items": items,
                    "wall_s": round(wall, 3),
                    "caller_cpu_ms_per_item": round(caller, 3),
                    "callee_cpu_ms_per_item": round(callee, 3),
                    "both_cpu_ms_per_item": round(caller + callee, 3),
                }
            )
        return {"rows": rows, "latency_ms_c1": round(handle.latency_ms.remote(200).result(), 3)}
    finally:
        serve.shutdown()
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payload-kb", type=int, default=64, help="bytes per item, in KiB")
    parser.add_argument("--calls", type=int, default=1600, help="items per measurement")
    parser.add_argument("--per-call", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    env = replica_env()
    results: dict[str, Any] = {
        "machine": machine_info(),
        "load_at_start": uptime_line(),
        "payload_kb": args.payload_kb,
        "concurrency": CONCURRENCY,
        "replica_env": env,
    }
    results.update(measure(args.payload_kb, args.calls, args.per_call, env))
    results["load_at_end"] = uptime_line()
    print(f"one call, concurrency 1: {results['latency_ms_c1']} ms (p50)")
    print("| items per call | CPU-ms per item: caller | callee | both |")
    for row in results["rows"]:
        print(
            f"| {row['items_per_call']} | {row['caller_cpu_ms_per_item']} | "
            f"{row['callee_cpu_ms_per_item']} | {row['both_cpu_ms_per_item']} |"
        )
    write_results(results, "hop_cost", args.out)


if __name__ == "__main__":
    main()
