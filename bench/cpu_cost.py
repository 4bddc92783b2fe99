"""Where the CPU goes: CPU-seconds per audio-second of every process of the Serve stack under a
fixed HTTP load, next to the in-process transcriber's on the same clips.

Wall-clock throughput on a shared 2-core machine moves with whatever else runs; the CPU time
each process spends per transcribed second moves much less, and it says which process to
optimise. On a dedicated machine, throughput ~= cores / (CPU-s per audio-s), so the ratio
in-process cost / HTTP cost is the ceiling of the HTTP/in-process throughput ratio.

    python -m bench.cpu_cost                       # serve_config.yaml as committed
    python -m bench.cpu_cost --env RAY_SERVE_ENABLE_HA_PROXY=1 \
        --env RAY_SERVE_THROUGHPUT_OPTIMIZED=1     # Ray's high-throughput mode (HAProxy)

It starts its own `serve run` (bench/stack.py: free port, fresh Ray instance, stopped by
process group) and writes bench/results/cpu_cost-*.json.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
from pathlib import Path

import httpx
import psutil

from bench.common import machine_info, run_load, uptime_line, write_results
from bench.http_vs_inprocess import DEFAULT_CLIPS, http_caller, in_process_caller, load_clips
from bench.stack import SERVE_CONFIG, ServeStack, process_label

STARTUP_TIMEOUT_S = 300.0


def cpu_by_process(root_pid: int) -> dict[tuple[int, float], tuple[str, float]]:
    """(pid, start time) -> (label, user+system CPU seconds) for the tree under root_pid."""
    out: dict[tuple[int, float], tuple[str, float]] = {}
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for proc in procs:
        try:
            times = proc.cpu_times()
            label = process_label(proc.cmdline(), proc.name())
            out[proc.pid, proc.create_time()] = (label, times.user + times.system)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return out


def http_cost(stack: ServeStack, clips, concurrency: int, requests: int) -> dict:
    assert stack.proc is not None
    with httpx.Client(limits=httpx.Limits(max_connections=concurrency + 4)) as client:
        call = http_caller(stack.url, None, client)
        run_load(call, clips, 1, 2 * len(clips))  # warm-up: every clip once or twice
        before = cpu_by_process(stack.proc.pid)
        summary, _ = run_load(call, clips, concurrency, requests)
        after = cpu_by_process(stack.proc.pid)
    by_label: collections.Counter[str] = collections.Counter()
    for key, (label, cpu) in after.items():
        by_label[label] += cpu - before.get(key, (label, 0.0))[1]
    audio = summary["audio_s"]
    total = sum(by_label.values())
    return {
        **summary,
        "cpu_s": round(total, 2),
        "cpu_ms_per_audio_s": round(1000 * total / audio, 2),
        "processes": {
            label: {
                "cpu_s": round(cpu, 2),
                "ms_per_audio_s": round(1000 * cpu / audio, 2),
                "ms_per_request": round(1000 * cpu / summary["requests"], 2),
            }
            for label, cpu in by_label.most_common()
        },
    }


def in_process_cost(model_dir: Path, clips, concurrency: int, requests: int) -> dict:
    call = in_process_caller(model_dir, None, 0)
    run_load(call, clips, 1, 2 * len(clips))
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    summary, _ = run_load(call, clips, concurrency, requests)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {
        **summary,
        "cpu_s": round(cpu, 2),
        "cpu_ms_per_audio_s": round(1000 * cpu / summary["audio_s"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model-dir", type=Path, default=os.environ.get("ASR_MODEL_DIR", "models/default")
    )
    parser.add_argument("--clips", type=Path, default=DEFAULT_CLIPS)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=250)
    parser.add_argument(
        "--env", action="append", default=[], help="NAME=VALUE for the serve run process"
    )
    parser.add_argument("--config", type=Path, default=SERVE_CONFIG, help="a serve config to run")
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    clips = load_clips(args.clips)
    extra_env = dict(item.split("=", 1) for item in args.env)
    results: dict = {
        "machine": machine_info(),
        "load_at_start": uptime_line(),
        "concurrency": args.concurrency,
        "requests": args.requests,
        "serve_env": extra_env,
        "config": str(args.config),
        "note": args.note,
    }
    stack = ServeStack(args.model_dir, env=extra_env, config=args.config)
    try:
        stack.start()
        stack.wait_healthy(STARTUP_TIMEOUT_S)
        results["http"] = http_cost(stack, clips, args.concurrency, args.requests)
    finally:
        stack.stop()
    results["in_process"] = in_process_cost(args.model_dir, clips, args.concurrency, args.requests)
    results["load_at_end"] = uptime_line()
    http, local = results["http"], results["in_process"]
    results["efficiency_ratio"] = round(local["cpu_ms_per_audio_s"] / http["cpu_ms_per_audio_s"], 3)

    print(
        f"HTTP c={args.concurrency}: {http['ok']}/{http['requests']} ok, "
        f"{http['cpu_ms_per_audio_s']} CPU-ms per audio-s"
    )
    for label, row in list(http["processes"].items())[:12]:
        print(
            f"  {label:36s} {row['ms_per_audio_s']:6.1f} ms/audio-s "
            f"{row['ms_per_request']:6.1f} ms/request"
        )
    print(f"in-process c={args.concurrency}: {local['cpu_ms_per_audio_s']} CPU-ms per audio-s")
    print(
        f"in-process / HTTP CPU cost (the throughput-ratio ceiling): "
        f"{results['efficiency_ratio']}; {results['load_at_end']}"
    )
    write_results(results, "cpu_cost", args.out)


if __name__ == "__main__":
    main()
