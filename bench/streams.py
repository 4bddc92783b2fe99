"""Concurrent live streams: how many streams at 1x real time keep partials under 1 s, and
what a stream-second costs in CPU next to an uploaded audio-second.

    python -m bench.streams --levels 1,2,4,8 --seconds 30      # its own `serve run`
    python -m bench.streams --url http://127.0.0.1:8000         # a running service

For each level N, N clients (threads, the `vi-asr stream` client) each stream the test clips
joined with pauses (tests/data/clips, ~22 s, looped to `--seconds`) at real time. A partial's
latency is when it arrives minus when the newest audio it has heard (its `end`) was sent:
the caption delay a viewer sees. Per level: partial latency p50/p95/max, partials and finals
per stream, errors, and (with its own stack) the CPU-seconds of every Serve process per
stream-second. Then the same audio uploaded (POST /transcribe, concurrency 4) for the CPU
per audio-second of an upload. Prints a table, the largest N with p95 <= `--target-s`, and
writes bench/results/streams-<time>.json.
"""

from __future__ import annotations

import argparse
import collections
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from bench.common import machine_info, percentile, uptime_line, write_results
from bench.cpu_cost import cpu_by_process
from bench.stack import ServeStack
from serve_app.audio import SAMPLE_RATE, load_audio_file
from serve_app.stream_client import StreamFailed, stream_audio

CLIPS = Path(__file__).resolve().parent.parent / "tests" / "data" / "clips"
SPEECH = ("north_16k.wav", "central_44k_stereo.flac", "south_48k.ogg", "north_f2_22k.mp3",
          "south_m3_8k.wav")  # fmt: skip
GAP_S = 0.8
STARTUP_TIMEOUT_S = 300.0
UPLOAD_CONCURRENCY = 4


def speech(seconds: float) -> np.ndarray:
    gap = np.zeros(round(GAP_S * SAMPLE_RATE), np.float32)
    one = np.concatenate([p for name in SPEECH for p in (load_audio_file(CLIPS / name), gap)])
    reps = int(np.ceil(seconds * SAMPLE_RATE / len(one)))
    return np.tile(one, reps)[: round(seconds * SAMPLE_RATE)]


def one_stream(url: str, audio: np.ndarray) -> dict:
    start: list[float] = []
    latencies, finals, partials = [], 0, 0

    def note(message: dict) -> None:
        nonlocal finals, partials
        if message["type"] == "partial" and start:
            partials += 1
            latencies.append(time.monotonic() - (start[0] + message["end"]))
        elif message["type"] == "final":
            finals += 1

    try:
        stream_audio(audio, url, rate=1.0, on_message=note, on_start=start.append)
        error = None
    except (StreamFailed, OSError) as exc:
        error = str(exc)[:200]
    return {"latencies": latencies, "partials": partials, "finals": finals, "error": error}


def level(url: str, audio: np.ndarray, n: int, stack: ServeStack | None) -> dict:
    before = cpu_by_process(stack.proc.pid) if stack and stack.proc else {}
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(lambda _: one_stream(url, audio), range(n)))
    wall = time.monotonic() - t0
    latencies = [x for r in results for x in r["latencies"]]
    row = {
        "streams": n,
        "stream_seconds": round(n * len(audio) / SAMPLE_RATE, 1),
        "wall_s": round(wall, 1),
        "errors": [r["error"] for r in results if r["error"]],
        "partials_per_stream": round(sum(r["partials"] for r in results) / n, 1),
        "finals_per_stream": round(sum(r["finals"] for r in results) / n, 1),
        "partial_latency_p50_s": round(percentile(latencies, 50), 3) if latencies else None,
        "partial_latency_p95_s": round(percentile(latencies, 95), 3) if latencies else None,
        "partial_latency_max_s": round(max(latencies), 3) if latencies else None,
    }
    if stack and stack.proc:
        row["cpu_ms_per_stream_s"] = round(
            1000 * _cpu_since(stack, before) / row["stream_seconds"], 2
        )
    return row


def _cpu_since(stack: ServeStack, before: dict) -> float:
    assert stack.proc is not None
    after = cpu_by_process(stack.proc.pid)
    return sum(cpu - before.get(key, (label, 0.0))[1] for key, (label, cpu) in after.items())


def upload_cost(url: str, audio: np.ndarray, stack: ServeStack, requests: int) -> dict:
    buffer = io.BytesIO()
    sf.write(buffer, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    data = buffer.getvalue()
    statuses: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    def post(_: int) -> None:
        response = httpx.post(f"{url}/transcribe", files={"file": ("a.wav", data)}, timeout=600)
        with lock:
            statuses[response.status_code] += 1

    post(0)  # warm-up
    before = cpu_by_process(stack.proc.pid)  # type: ignore[union-attr]
    with ThreadPoolExecutor(max_workers=UPLOAD_CONCURRENCY) as pool:
        list(pool.map(post, range(requests)))
    audio_s = requests * len(audio) / SAMPLE_RATE
    return {
        "requests": requests,
        "statuses": dict(statuses),
        "audio_seconds": round(audio_s, 1),
        "cpu_ms_per_audio_s": round(1000 * _cpu_since(stack, before) / audio_s, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__)
    p.add_argument("--url", default=None, help="a running service (default: start one)")
    p.add_argument("--model-dir", type=Path, default=Path("models/default"))
    p.add_argument("--levels", default="1,2,4,8")
    p.add_argument("--seconds", type=float, default=30.0, help="audio per stream")
    p.add_argument("--uploads", type=int, default=8, help="uploads for the CPU comparison")
    p.add_argument("--target-s", type=float, default=1.0, help="p95 partial latency target")
    p.add_argument("--note", default="")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    audio = speech(args.seconds)
    stack = None if args.url else ServeStack(args.model_dir)
    results: dict = {"machine": machine_info(), "load_at_start": uptime_line(), "note": args.note}
    try:
        if stack:
            stack.start()
            stack.wait_healthy(STARTUP_TIMEOUT_S)
        url = args.url or stack.url  # type: ignore[union-attr]
        one_stream(url, audio[: 3 * SAMPLE_RATE])  # warm-up
        rows = []
        for n in (int(x) for x in args.levels.split(",")):
            rows.append(level(url, audio, n, stack))
            print(rows[-1], flush=True)
        results["levels"] = rows
        if stack:
            results["upload"] = upload_cost(url, audio, stack, args.uploads)
    finally:
        if stack:
            stack.stop()
    results["load_at_end"] = uptime_line()
    within = [r["streams"] for r in rows
              if r["partial_latency_p95_s"] is not None and not r["errors"]
              and r["partial_latency_p95_s"] <= args.target_s]  # fmt: skip
    results["max_streams_within_target"] = max(within, default=0)
    print("| streams | p50 s | p95 s | max s | partials | finals | CPU-ms/stream-s | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['streams']} | {r['partial_latency_p50_s']} | {r['partial_latency_p95_s']} | "
            f"{r['partial_latency_max_s']} | {r['partials_per_stream']} | "
            f"{r['finals_per_stream']} | {r.get('cpu_ms_per_stream_s', '')} | {len(r['errors'])} |"
        )
    if "upload" in results:
        print(f"upload: {results['upload']['cpu_ms_per_audio_s']} CPU-ms per audio-second")
    print(f"largest N with p95 partial latency <= {args.target_s} s: "
          f"{results['max_streams_within_target']}")  # fmt: skip
    write_results(results, "streams", args.out, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
