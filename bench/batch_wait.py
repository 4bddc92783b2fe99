"""The Encoder's `batch_wait_timeout_s` over HTTP: latency and throughput per concurrency.

    python -m bench.batch_wait --waits 0.02,0.005,0 --levels 1,2,4,16

@serve.batch holds the first window of a batch for up to `batch_wait_timeout_s` while it
waits for more; with one request in flight that is pure added latency. Each wait gets its own
`serve run` of serve_config.yaml (only that value changed, bench/stack.py) and the same short
clips of bench/clips.py, sent closed-loop at each concurrency; the waits take turns twice
(a, b, c, a, b, c) so a slow minute of this shared machine does not land on one of them.
Prints a table and writes bench/results/batch_wait-<time>.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.clips import Clip, build_clips
from bench.common import CpuMeter, machine_info, run_load, write_results
from bench.http_vs_inprocess import http_caller
from bench.stack import SERVE_CONFIG, ServeStack

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 300.0


def config_with_wait(wait_s: float, out: Path) -> Path:
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    for app in config["applications"]:
        for deployment in app["deployments"]:
            if deployment["name"] == "Encoder":
                deployment["user_config"]["batch_wait_timeout_s"] = wait_s
    out.write_text(yaml.safe_dump(config))
    return out


def measure(
    wait_s: float, clips: list[Clip], args: argparse.Namespace, workdir: Path
) -> list[dict[str, Any]]:
    config = config_with_wait(wait_s, workdir / f"wait-{wait_s}.yaml")
    stack = ServeStack(args.model_dir, config=config)
    stack.start()
    rows = []
    try:
        stack.wait_healthy(START_TIMEOUT_S)
        wavs = [(c.name, c.wav_bytes()) for c in clips]
        limits = httpx.Limits(max_connections=max(args.levels) + 4)
        with httpx.Client(limits=limits, timeout=120) as client:
            call = http_caller(stack.url, None, client)
            run_load(call, wavs, 2, len(wavs))  # warm every replica's code paths
            for level in args.levels:
                meter = CpuMeter(lambda: [stack.proc.pid] if stack.proc else [])
                summary, _ = run_load(call, wavs, level, args.requests, args.min_seconds)
                summary["others_cpu"] = meter.stop()["others"]
                summary["wait_s"] = wait_s
                rows.append(summary)
                print(
                    f"  wait {wait_s * 1000:.0f} ms c={level}: "
                    f"{summary['audio_s_per_wall_s']:.1f} audio-s/s, "
                    f"p50 {summary['latency_p50_s'] * 1000:.0f} ms, "
                    f"others' CPU {summary['others_cpu']:.0%}",
                    flush=True,
                )
    finally:
        stack.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.batch_wait", description=__doc__)
    p.add_argument("--model-dir", type=Path, default=REPO / "models" / "default")
    p.add_argument("--waits", default="0.02,0.005,0", help="batch_wait_timeout_s values")
    p.add_argument("--levels", default="1,2,4,16", help="concurrencies")
    p.add_argument("--requests", type=int, default=32, help="at least, per point")
    p.add_argument("--min-seconds", type=float, default=10.0, help="at least, per point")
    p.add_argument("--rounds", type=int, default=2, help="times each wait is measured")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.levels = [int(x) for x in args.levels.split(",")]
    waits = [float(x) for x in args.waits.split(",")]
    clips = [c for c in build_clips({"short": 8, "medium": 0, "long": 0}) if c.kind == "short"]
    t0 = time.time()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="batch-wait-") as tmp:
        for _ in range(args.rounds):
            for wait in waits:
                rows += measure(wait, clips, args, Path(tmp))
    table = []
    print("\n| wait | concurrency | audio-s/s (median of rounds) | p50 latency | p95 latency |")
    print("| --- | --- | --- | --- | --- |")
    for wait in waits:
        for level in args.levels:
            points = [r for r in rows if r["wait_s"] == wait and r["concurrency"] == level]
            row = {
                "wait_s": wait,
                "concurrency": level,
                "audio_s_per_wall_s": statistics.median(r["audio_s_per_wall_s"] for r in points),
                "p50_ms": statistics.median(r["latency_p50_s"] * 1000 for r in points),
                "p95_ms": statistics.median(r["latency_p95_s"] * 1000 for r in points),
            }
            table.append(row)
            print(
                f"| {wait * 1000:.0f} ms | {level} | {row['audio_s_per_wall_s']:.1f} | "
                f"{row['p50_ms']:.0f} ms | {row['p95_ms']:.0f} ms |"
            )
    results = {
        "command": "python -m bench.batch_wait " + " ".join(argv or []),
        "machine": machine_info(),
        "seconds": round(time.time() - t0, 1),
        "points": rows,
        "table": table,
    }
    write_results(results, "batch_wait", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
