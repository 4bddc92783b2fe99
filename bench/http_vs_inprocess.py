"""The same clips through (a) the in-process Transcriber and (b) HTTP against the running graph.

    make serve                                  # in another terminal (or serve run ...)
    .venv/bin/python -m bench.http_vs_inprocess [--concurrency 1,4,16] [--requests 64]
    .venv/bin/python -m bench.http_vs_inprocess --start --serve-status   # its own serve run

At each concurrency it sends `--requests` transcriptions (the clips in turn) from that many
threads and reports audio-seconds per wall-second, p50/p99 latency, and for HTTP the encoder
batch sizes (from the X-Encoder-Batch-Sizes header: one entry per encoded window). With
`--serve-status` it also reads `serve status` after each level and during an idle cool-down,
to show the per-stage autoscaler adding replicas and removing them again. `--start` runs
against its own `serve run serve_config.yaml` (bench/stack.py), stopped at the end. Results go to
bench/results/http_vs_inprocess-<time>.json (git-ignored).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from bench.common import (
    REPO,
    batch_histogram,
    parse_batch_sizes,
    run_load,
    write_results,
)
from bench.stack import ServeStack

DEFAULT_CLIPS = REPO / "tests" / "data" / "clips"
START_TIMEOUT_S = 300.0
STATUS_POLL_S = 5.0  # cool-down polling of `serve status`


def load_clips(clips_dir: Path) -> list[tuple[str, bytes]]:
    manifest = clips_dir / "manifest.jsonl"
    names = [json.loads(line)["audio"] for line in manifest.read_text().splitlines() if line]
    return [(name, (clips_dir / name).read_bytes()) for name in names]


def in_process_caller(model_dir: Path, precision: str | None, threads: int):
    from serve_app.encoder import EncoderOptions
    from serve_app.transcriber import Transcriber

    transcriber = Transcriber(model_dir, precision, EncoderOptions(intra_op_threads=threads))

    def call(item: tuple[str, bytes]):
        transcript = transcriber.transcribe(item[1])
        return True, transcript.duration, None

    return call


def http_caller(url: str, api_key: str | None, client: httpx.Client):
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}

    def call(item: tuple[str, bytes]):
        name, data = item
        response = client.post(
            f"{url}/transcribe", files={"file": (name, data)}, headers=headers, timeout=300
        )
        if response.status_code != 200:
            return False, 0.0, {"status": response.status_code, "body": response.text[:200]}
        sizes = response.headers.get("x-encoder-batch-sizes", "")
        return True, response.json()["duration"], parse_batch_sizes(sizes)

    return call


def serve_status() -> dict[str, int]:
    """Running replicas per deployment, from the `serve status` CLI."""
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
    serve = Path(sys.executable).parent / "serve"
    out = subprocess.run(
        [str(serve), "status"], capture_output=True, text=True, env=env, timeout=60
    )
    if out.returncode != 0:
        return {}
    apps = (yaml.safe_load(out.stdout) or {}).get("applications", {})
    return {
        f"{app}/{name}": d.get("replica_states", {}).get("RUNNING", 0)
        for app, details in apps.items()
        for name, d in details.get("deployments", {}).items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument(
        "--model-dir", type=Path, default=os.environ.get("ASR_MODEL_DIR", "models/default")
    )
    parser.add_argument("--precision", default=None)
    parser.add_argument("--clips", type=Path, default=DEFAULT_CLIPS)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--requests", type=int, default=64, help="at least, per level")
    parser.add_argument("--min-seconds", type=float, default=20.0, help="at least, per level")
    parser.add_argument("--threads", type=int, default=0, help="in-process ORT threads (0: all)")
    parser.add_argument(
        "--start", action="store_true", help="start `serve run serve_config.yaml` on a free port"
    )
    parser.add_argument("--serve-status", action="store_true")
    parser.add_argument("--cooldown-s", type=float, default=75.0)
    parser.add_argument("--note", default="", help="free text stored with the results")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    stack = ServeStack(args.model_dir) if args.start else None
    try:
        if stack is not None:
            stack.start()
            stack.wait_healthy(START_TIMEOUT_S)
            args.url = stack.url
        measure(args, api_key=None if stack else os.environ.get("ASR_API_KEY"))
    finally:
        if stack is not None:
            stack.stop()


def measure(args: argparse.Namespace, api_key: str | None) -> None:
    clips = load_clips(args.clips)
    levels = [int(c) for c in args.concurrency.split(",")]
    results: dict = {
        "clips": [name for name, _ in clips],
        "min_requests_per_level": args.requests,
        "min_seconds_per_level": args.min_seconds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average_at_start": os.getloadavg(),
        "note": args.note,
        "in_process": [],
        "http": [],
    }

    call = in_process_caller(args.model_dir, args.precision, args.threads)
    run_load(call, clips, 1, len(clips))  # warm-up
    for c in levels:
        row, _ = run_load(call, clips, c, args.requests, args.min_seconds)
        results["in_process"].append(row)
        print(
            f"in-process c={c:>2}: {row['audio_s_per_wall_s']:7.2f} audio-s/s  "
            f"p50 {row['latency_p50_s']:.3f} s  p99 {row['latency_p99_s']:.3f} s  "
            f"CPU {row['caller_cpu_s']:.1f} s"
        )

    with httpx.Client(limits=httpx.Limits(max_connections=max(levels) + 4)) as client:
        call = http_caller(args.url.rstrip("/"), api_key, client)
        run_load(call, clips, 1, len(clips))  # warm-up
        # `serve status` is a Python CLI that imports Ray (~1 s of CPU): polling it during a
        # level would steal CPU from the service it measures. So: once after each level
        # (the replicas the autoscaler added under that load), then every few seconds of
        # the idle cool-down (the replicas it removes).
        status: list[dict] = []
        t0 = time.monotonic()
        for c in levels:
            row, outcomes = run_load(call, clips, c, args.requests, args.min_seconds)
            extras = [o.extra for o in outcomes]
            row["errors"] = [e for e in extras if isinstance(e, dict)][:5]
            sizes = [s for e in extras if isinstance(e, list) for s in e]
            row["encoder_batches"] = batch_histogram(sizes)
            results["http"].append(row)
            print(
                f"http       c={c:>2}: {row['audio_s_per_wall_s']:7.2f} audio-s/s  "
                f"p50 {row['latency_p50_s']:.3f} s  p99 {row['latency_p99_s']:.3f} s  "
                f"ok {row['ok']}/{row['requests']}  client CPU {row['caller_cpu_s']:.1f} s  "
                f"batches {row['encoder_batches']['batches']}"
            )
            if args.serve_status:
                status.append({"after": f"c={c}", "replicas": serve_status()})
                print(f"  serve status after c={c}: {status[-1]['replicas']}")
        if args.serve_status:
            load_end = time.monotonic()
            while time.monotonic() - load_end < args.cooldown_s:
                time.sleep(STATUS_POLL_S)
                idle_s = round(time.monotonic() - load_end)
                status.append({"after": f"{idle_s} s idle", "replicas": serve_status()})
            results["serve_status"] = {"load_s": round(load_end - t0, 1), "samples": status}
            peak: collections.Counter[str] = collections.Counter()
            for sample in status:
                for name, n in sample["replicas"].items():
                    peak[name] = max(peak[name], n)
            final = status[-1]["replicas"] if status else {}
            print(f"replicas peak {dict(peak)}; {args.cooldown_s:.0f} s after: {final}")

    results["http_vs_in_process"] = {
        str(h["concurrency"]): round(h["audio_s_per_wall_s"] / i["audio_s_per_wall_s"], 3)
        for h, i in zip(results["http"], results["in_process"], strict=True)
    }
    print("HTTP / in-process throughput:", results["http_vs_in_process"])
    write_results(results, "http_vs_inprocess", args.out)


if __name__ == "__main__":
    main()
