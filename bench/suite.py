"""The benchmark suite, one command: `python -m bench.suite` (or `make bench`).

Builds the short (3-5 s), medium (15 s) and long (2 min) clips (bench/clips.py), then measures
throughput (audio-seconds per wall-second) and latency p50/p95/p99 at each concurrency for
each clip kind through

    onnx         the bare ONNX session (OnnxEncoder.run on precomputed features): ceiling 1
    in_process   serve_app.transcriber.Transcriber from threads: ceiling 2
    faster_whisper  the same Whisper-base weights in faster-whisper (int8, greedy, 2 threads)
    http         `serve run serve_config.yaml` started by this script on a free port:
                 cold start to the first transcript, the encoder batch sizes it reports
                 (X-Encoder-Batch-Sizes), the memory of every process of the stack

and CER of the service and of faster-whisper against the clips' references. Everything is
closed-loop: `c` threads each send the next request when their last one returned; a point
sends max(c, base) requests (base per kind: --requests short,medium,long). Writes
bench/results/suite-<time>.json, PNG plots and the JSON behind them in bench/report/, and
regenerates BENCHMARKS.md from that JSON.

    python -m bench.suite                                # everything (~20 min on 2 cores)
    python -m bench.suite --quick                        # a smoke run (~3 min)
    python -m bench.suite --levels 1,4 --kinds short --skip fw,onnx
    python -m bench.suite --report-only bench/report/suite.json   # re-render BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.clips import DEFAULT_COUNTS, Clip, build_clips
from bench.common import (
    REPO,
    CpuMeter,
    Outcome,
    batch_histogram,
    machine_info,
    run_load,
    uptime_line,
    write_results,
)

PATHS = ("onnx", "in_process", "faster_whisper", "http")
KINDS = ("short", "medium", "long")
DEFAULT_LEVELS = (1, 2, 4, 8, 16, 32)
DEFAULT_REQUESTS = {"short": 32, "medium": 16, "long": 4}
QUICK = {"levels": "1,4", "requests": "8,4,1", "clips": "4,2,1", "kinds": "short,medium"}
DEFAULT_REPORT_DIR = REPO / "bench" / "report"
DEFAULT_MARKDOWN = REPO / "BENCHMARKS.md"
COLD_START_TIMEOUT_S = 300.0
HTTP_TIMEOUT_S = 600.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, default=REPO / "models" / "default")
    p.add_argument("--levels", default=",".join(map(str, DEFAULT_LEVELS)), help="concurrencies")
    p.add_argument("--kinds", default=",".join(KINDS), help="clip kinds to measure")
    p.add_argument(
        "--requests",
        default=",".join(str(DEFAULT_REQUESTS[k]) for k in KINDS),
        help="base requests per point for short,medium,long (a point sends max(c, base))",
    )
    p.add_argument(
        "--clips",
        default=",".join(str(DEFAULT_COUNTS[k]) for k in KINDS),
        help="distinct clips of each kind, short,medium,long",
    )
    p.add_argument("--skip", default="", help=f"comma-separated, of {', '.join(PATHS)}")
    p.add_argument("--threads", type=int, default=2, help="ORT threads of the ceilings")
    p.add_argument("--fw-threads", type=int, default=2, help="faster-whisper cpu_threads")
    p.add_argument(
        "--fw-variants",
        default="greedy,greedy_fallback",
        help="faster-whisper decodings: greedy (temperature 0), greedy_fallback; the first "
        "one is compared in the ratios",
    )
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    p.add_argument("--report-dir", type=Path, default=DEFAULT_REPORT_DIR)
    p.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN)
    p.add_argument("--out", type=Path, default=None, help="results JSON (default: timestamped)")
    p.add_argument("--note", default="", help="free text stored with the results")
    p.add_argument("--report-only", type=Path, default=None, help="re-render from this JSON")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
    args.levels = sorted({int(x) for x in args.levels.split(",") if x})
    args.kinds = [k for k in args.kinds.split(",") if k]
    args.skip = {s for s in args.skip.split(",") if s}
    args.fw_variants = [v for v in args.fw_variants.split(",") if v]
    if not args.fw_variants or set(args.fw_variants) - {"greedy", "greedy_fallback"}:
        p.error("--fw-variants: one or both of greedy, greedy_fallback")
    args.requests = dict(zip(KINDS, (int(x) for x in args.requests.split(",")), strict=True))
    args.clips = dict(zip(KINDS, (int(x) for x in args.clips.split(",")), strict=True))
    if bad := set(args.kinds) - set(KINDS):
        p.error(f"unknown kinds {sorted(bad)}")
    if bad := args.skip - set(PATHS):
        p.error(f"unknown paths in --skip: {sorted(bad)}")
    if not args.levels or min(args.levels) < 1 or min(args.requests.values()) < 1:
        p.error("levels and requests must be >= 1")
    for kind in KINDS:  # a kind that is not measured needs no clips
        if kind not in args.kinds:
            args.clips[kind] = 0
    return args


def requests_for(concurrency: int, base: int) -> int:
    """Requests sent at one point: every thread sends at least one, and at least `base`."""
    return max(concurrency, base)


# --- accuracy -------------------------------------------------------------------------------


def accuracy(clips: Sequence[Clip], hypotheses: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Corpus CER/WER per clip kind over the clips that have a hypothesis."""
    from serve_app.evaluation import cer, wer

    out: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        pairs = [(c.text, hypotheses[c.name]) for c in clips if c.kind == kind]
        pairs = [(r, h) for r, h in pairs if h is not None]
        if pairs:
            refs, hyps = zip(*pairs, strict=True)
            out[kind] = {
                "cer": round(cer(refs, hyps), 4),
                "wer": round(wer(refs, hyps), 4),
                "clips": len(pairs),
            }
    return out


def first_texts(outcomes: Sequence[Outcome], key: Callable[[Any], str | None]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for o in outcomes:
        if o.ok:
            text = key(o.extra)
            if text is not None:
                texts.setdefault(o.item.name, text)
    return texts


# --- the measured paths ---------------------------------------------------------------------


def sweep(
    name: str,
    call: Callable[[Clip], tuple[bool, float, Any]],
    by_kind: dict[str, list[Clip]],
    args: argparse.Namespace,
    row_extras: Callable[[list[Outcome]], dict[str, Any]] | None = None,
    on_point: Callable[[str, int], None] | None = None,
    roots: Callable[[], Sequence[int]] = tuple,
) -> tuple[dict[str, list[dict[str, Any]]], list[Outcome]]:
    """Every kind at every concurrency level; returns rows per kind and all outcomes."""
    rows: dict[str, list[dict[str, Any]]] = {}
    everything: list[Outcome] = []
    for kind in args.kinds:
        clips = by_kind[kind]
        run_load(call, clips[:1], 1, 1)  # warm-up: first-call costs stay out of the figures
        rows[kind] = []
        for c in args.levels:
            if on_point:
                on_point(kind, c)
            n = requests_for(c, args.requests[kind])
            meter = CpuMeter(roots)
            row, outcomes = run_load(call, clips, c, n)
            row["cpu"] = meter.stop()
            row["loadavg_1m"] = round(os.getloadavg()[0], 2)
            if row_extras:
                row.update(row_extras(outcomes))
            rows[kind].append(row)
            everything += outcomes
            p50, p99 = row["latency_p50_s"], row["latency_p99_s"]
            print(
                f"  {name:<11} {kind:<6} c={c:>2}: {row['audio_s_per_wall_s'] or 0:7.2f} audio-s/s"
                f"  p50 {p50 or float('nan'):6.2f} s  p99 {p99 or float('nan'):6.2f} s"
                f"  ok {row['ok']}/{row['requests']}"
                f"  others {100 * row['cpu']['others']:3.0f}% CPU",
                flush=True,
            )
    return rows, everything


def run_onnx(by_kind: dict[str, list[Clip]], args: argparse.Namespace) -> dict[str, Any]:
    from serve_app.bundle import load_bundle
    from serve_app.encoder import EncoderOptions, OnnxEncoder
    from serve_app.transcriber import Preprocessor

    bundle = load_bundle(args.model_dir)
    precision = bundle.config.default_precision
    encoder = OnnxEncoder(
        bundle.model_path(precision), EncoderOptions(intra_op_threads=args.threads)
    )
    pre = Preprocessor(bundle.config)
    features = {
        clip.name: [
            w.features for w in pre.from_audio(clip.audio).windows if w.features is not None
        ]
        for clips in by_kind.values()
        for clip in clips
    }

    def call(clip: Clip) -> tuple[bool, float, Any]:
        encoder.run(features[clip.name])
        return True, clip.duration_s, None

    rows, _ = sweep("onnx", call, by_kind, args)
    return {"precision": precision, "threads": args.threads, "rows": rows}


def run_in_process(by_kind: dict[str, list[Clip]], args: argparse.Namespace) -> dict[str, Any]:
    from serve_app.encoder import EncoderOptions
    from serve_app.transcriber import Transcriber

    transcriber = Transcriber(args.model_dir, None, EncoderOptions(intra_op_threads=args.threads))
    wavs = {c.name: c.wav_bytes() for clips in by_kind.values() for c in clips}

    def call(clip: Clip) -> tuple[bool, float, Any]:
        transcript = transcriber.transcribe(wavs[clip.name])
        return True, transcript.duration, transcript.text

    rows, outcomes = sweep("in_process", call, by_kind, args)
    return {
        "precision": transcriber.precision,
        "threads": args.threads,
        "rows": rows,
        "transcripts": first_texts(outcomes, lambda text: text),
    }


def run_faster_whisper(by_kind: dict[str, list[Clip]], args: argparse.Namespace) -> dict[str, Any]:
    """Each clip once, one after another (a 2-thread faster-whisper is one user's engine),
    for each decoding variant: strict greedy first (the figures the ratios use), then greedy
    with faster-whisper's temperature fallback."""
    from dataclasses import replace

    from bench.fw import FasterWhisper, FwSettings

    t0 = time.perf_counter()
    fw = FasterWhisper(settings=FwSettings(cpu_threads=args.fw_threads))
    load_s = time.perf_counter() - t0
    variants = {"greedy": fw.settings, "greedy_fallback": replace(fw.settings, fallback=True)}
    out: dict[str, Any] = {
        "model_dir": str(fw.path.relative_to(REPO) if fw.path.is_relative_to(REPO) else fw.path),
        "load_s": round(load_s, 2),
        "variants": {},
    }
    for variant in args.fw_variants:
        settings = variants[variant]
        texts: dict[str, str] = {}

        def call(clip: Clip, settings: FwSettings = settings) -> tuple[bool, float, Any]:
            return True, clip.duration_s, fw.transcribe(clip.wav_bytes(), settings)

        rows: dict[str, dict[str, Any]] = {}
        for kind in args.kinds:
            clips = by_kind[kind]
            fw.transcribe(clips[0].wav_bytes(), settings)  # warm-up
            meter = CpuMeter()
            row, outcomes = run_load(call, clips, 1, len(clips))
            row["cpu"] = meter.stop()
            rows[kind] = row
            texts.update(first_texts(outcomes, lambda text: text))
            print(
                f"  fw {variant:<15} {kind:<6} c= 1: {row['audio_s_per_wall_s']:7.2f} audio-s/s"
                f"  p50 {row['latency_p50_s']:6.2f} s",
                flush=True,
            )
        out["variants"][variant] = {
            "settings": settings.describe(),
            "rows": rows,
            "transcripts": texts,
        }
    first = out["variants"][args.fw_variants[0]]
    out.update(settings=first["settings"], rows=first["rows"], transcripts=first["transcripts"])
    out["primary_variant"] = args.fw_variants[0]
    return out


def run_http(by_kind: dict[str, list[Clip]], args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from bench.cold_start import MilestoneFollower
    from bench.stack import MemorySampler, ServeStack, memory_summary

    wavs = {c.name: c.wav_bytes() for clips in by_kind.values() for c in clips}
    probe = next(iter(by_kind.values()))[0]
    stack = ServeStack(args.model_dir)
    result: dict[str, Any] = {}
    t0 = time.monotonic()
    stack.start()
    follower = MilestoneFollower(stack, t0).start()
    try:
        url = stack.url
        print(f"  serve run on {url}; waiting for the first transcript", flush=True)
        result["cold_start"] = stack.wait_first_answer(
            lambda client: client.post(
                f"{url}/transcribe", files={"file": (f"{probe.name}.wav", wavs[probe.name])}
            ),
            COLD_START_TIMEOUT_S,
        )
        time.sleep(0.5)  # the log's last lines
        result["cold_start"]["phases"] = follower.stop()
        result["cold_start"]["serve_bin"] = str(stack.serve_bin)
        print(f"  cold start: {result['cold_start']}", flush=True)
        idle = MemorySampler(stack.proc.pid, "idle")
        idle.start()
        time.sleep(3)
        idle_samples = idle.stop()
        stack.remember(idle_samples)
        result["memory_idle"] = memory_summary(idle_samples)

        limits = httpx.Limits(max_connections=max(args.levels) + 4)
        with httpx.Client(limits=limits, timeout=HTTP_TIMEOUT_S) as client:

            def call(clip: Clip) -> tuple[bool, float, Any]:
                response = client.post(
                    f"{url}/transcribe", files={"file": (f"{clip.name}.wav", wavs[clip.name])}
                )
                if response.status_code != 200:
                    return False, 0.0, {"status": response.status_code, "body": response.text[:200]}
                body = response.json()
                sizes = response.headers.get("x-encoder-batch-sizes", "")
                return True, body["duration"], {"text": body["text"], "sizes": sizes}

            sampler = MemorySampler(stack.proc.pid, "load")
            marks: list[tuple[str, int, float]] = []
            sampler.start()
            try:
                rows, outcomes = sweep(
                    "http",
                    call,
                    by_kind,
                    args,
                    row_extras=http_row_extras,
                    on_point=lambda kind, c: marks.append((kind, c, time.monotonic() - sampler.t0)),
                    roots=lambda: [stack.proc.pid],
                )
            finally:
                samples = sampler.stop()
        stack.remember(samples)
        result["memory_load"] = memory_summary(samples)
        result["replicas"] = replicas_per_point(samples, marks)
        for kind, kind_rows in rows.items():
            for row in kind_rows:
                row["replicas_peak"] = result["replicas"].get(f"{kind}/{row['concurrency']}", {})
        result["rows"] = rows
        result["transcripts"] = first_texts(
            outcomes, lambda e: e.get("text") if isinstance(e, dict) else None
        )
        result["url"] = url
    finally:
        follower.stop()  # no-op after the first stop
        result["stop"] = stack.stop()
    return result


def http_row_extras(outcomes: list[Outcome]) -> dict[str, Any]:
    from bench.common import parse_batch_sizes

    sizes = [
        s
        for o in outcomes
        if o.ok and isinstance(o.extra, dict)
        for s in parse_batch_sizes(o.extra["sizes"])
    ]
    errors = [o.extra for o in outcomes if not o.ok][:5]
    return {"encoder_batches": batch_histogram(sizes), "errors": errors}


def replicas_per_point(
    samples: list, marks: list[tuple[str, int, float]]
) -> dict[str, dict[str, int]]:
    """Peak live replicas per deployment while each (kind, concurrency) point ran."""
    out: dict[str, dict[str, int]] = {}
    ends = [m[2] for m in marks[1:]] + [float("inf")]
    for (kind, c, start), end in zip(marks, ends, strict=True):
        peak: dict[str, int] = {}
        for sample in samples:
            if start <= sample.t_s < end:
                counts: dict[str, int] = {}
                for row in sample.processes.values():
                    label = row["label"]
                    if label.startswith("ray::ServeReplica:"):
                        name = label.split(":")[-1].split(".")[0]
                        counts[name] = counts.get(name, 0) + 1
                for name, n in counts.items():
                    peak[name] = max(peak.get(name, 0), n)
        out[f"{kind}/{c}"] = peak
    return out


# --- ratios -----------------------------------------------------------------------------------


def best(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    rows = [r for r in rows if r.get("audio_s_per_wall_s")]
    return max(rows, key=lambda r: r["audio_s_per_wall_s"]) if rows else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def compute_ratios(results: dict[str, Any]) -> dict[str, Any]:
    """HTTP / in-process throughput (per concurrency and best over best) and this service
    against faster-whisper (speed and CER) per clip kind."""
    paths = results["paths"]
    http = paths.get("http", {}).get("rows", {})
    inproc = paths.get("in_process", {}).get("rows", {})
    onnx = paths.get("onnx", {}).get("rows", {})
    fw = paths.get("faster_whisper", {}).get("rows", {})
    acc = results.get("accuracy", {})
    out: dict[str, Any] = {
        "http_over_in_process": {},
        "in_process_over_onnx": {},
        "http_best_over_in_process_best": {},
        "in_process_best_over_onnx_best": {},
        "service_vs_faster_whisper": {},
    }
    for kind in KINDS:
        h, i, o = http.get(kind, []), inproc.get(kind, []), onnx.get(kind, [])
        by_c = {r["concurrency"]: r for r in i}
        per_c = {
            str(r["concurrency"]): ratio(
                r["audio_s_per_wall_s"], by_c[r["concurrency"]]["audio_s_per_wall_s"]
            )
            for r in h
            if r["concurrency"] in by_c
        }
        if per_c:
            out["http_over_in_process"][kind] = per_c
        onnx_by_c = {r["concurrency"]: r for r in o}
        per_c = {
            str(r["concurrency"]): ratio(
                r["audio_s_per_wall_s"], onnx_by_c[r["concurrency"]]["audio_s_per_wall_s"]
            )
            for r in i
            if r["concurrency"] in onnx_by_c
        }
        if per_c:
            out["in_process_over_onnx"][kind] = per_c
        hb, ib, ob = best(h), best(i), best(o)
        if hb and ib:
            out["http_best_over_in_process_best"][kind] = ratio(
                hb["audio_s_per_wall_s"], ib["audio_s_per_wall_s"]
            )
        if ib and ob:
            out["in_process_best_over_onnx_best"][kind] = ratio(
                ib["audio_s_per_wall_s"], ob["audio_s_per_wall_s"]
            )
        if kind in fw:
            f = fw[kind]["audio_s_per_wall_s"]
            i1 = by_c.get(1, {}).get("audio_s_per_wall_s")
            h1 = next((r["audio_s_per_wall_s"] for r in h if r["concurrency"] == 1), None)
            row = {
                "faster_whisper_audio_s_per_wall_s": f,
                "in_process_c1_over_fw": ratio(i1, f),
                "http_c1_over_fw": ratio(h1, f),
                "http_best_over_fw": ratio(hb["audio_s_per_wall_s"], f) if hb else None,
                "cer_service": (acc.get("service") or acc.get("in_process") or {})
                .get(kind, {})
                .get("cer"),
                "cer_faster_whisper": acc.get("faster_whisper", {}).get(kind, {}).get("cer"),
                "cer_faster_whisper_fallback": acc.get("faster_whisper_greedy_fallback", {})
                .get(kind, {})
                .get("cer"),
            }
            out["service_vs_faster_whisper"][kind] = row
    return out


# --- main -------------------------------------------------------------------------------------


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    results: dict[str, Any] = {
        "benchmark": "suite",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": ["python", "-m", "bench.suite", *sys.argv[1:]],
        "note": args.note,
        "machine": machine_info(),
        "settings": {
            "levels": args.levels,
            "kinds": args.kinds,
            "base_requests": args.requests,
            "requests_rule": "max(concurrency, base)",
            "clips_per_kind": args.clips,
            "ceiling_ort_threads": args.threads,
            "model_dir": str(args.model_dir),
            "serve_config": "serve_config.yaml (port and model_dir replaced)",
        },
        "paths": {},
    }
    print(f"machine: {results['machine']['cpu_model']}, {uptime_line()}", flush=True)
    t0 = time.monotonic()
    clips = build_clips({k: args.clips[k] for k in KINDS})
    by_kind = {k: [c for c in clips if c.kind == k] for k in args.kinds}
    results["clips"] = [
        {"name": c.name, "kind": c.kind, "duration_s": round(c.duration_s, 3), "text": c.text}
        for c in clips
    ]
    results["settings"]["clip_build_s"] = round(time.monotonic() - t0, 1)
    print(f"{len(clips)} clips built in {results['settings']['clip_build_s']} s", flush=True)

    runners = {
        "onnx": run_onnx,
        "in_process": run_in_process,
        "faster_whisper": run_faster_whisper,
        "http": run_http,
    }
    for name, runner in runners.items():
        if name in args.skip:
            continue
        print(f"{name}:", flush=True)
        t0 = time.monotonic()
        results["paths"][name] = runner(by_kind, args)
        results["paths"][name]["took_s"] = round(time.monotonic() - t0, 1)

    hyps = {
        "service": results["paths"].get("http", {}).get("transcripts"),
        "in_process": results["paths"].get("in_process", {}).get("transcripts"),
        "faster_whisper": results["paths"].get("faster_whisper", {}).get("transcripts"),
    }
    for variant, data in results["paths"].get("faster_whisper", {}).get("variants", {}).items():
        hyps[f"faster_whisper_{variant}"] = data["transcripts"]
    results["accuracy"] = {
        system: accuracy(clips, {c.name: texts.get(c.name) for c in clips})
        for system, texts in hyps.items()
        if texts
    }
    if hyps["service"] and hyps["in_process"]:
        common = set(hyps["service"]) & set(hyps["in_process"])
        same = sum(hyps["service"][n] == hyps["in_process"][n] for n in common)
        results["accuracy"]["http_equals_in_process"] = {"same": same, "compared": len(common)}
    results["ratios"] = compute_ratios(results)
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["machine"]["uptime_end"] = uptime_line()
    results["settings"]["wall_s"] = round(time.monotonic() - started, 1)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from bench.report import write_report

    if args.report_only:
        results = json.loads(args.report_only.read_text())
    else:
        results = run_suite(args)
        write_results(results, "suite", args.out, ensure_ascii=False)
    args.report_dir.mkdir(parents=True, exist_ok=True)
    data = args.report_dir / "suite.json"
    if args.report_only is None or args.report_only.resolve() != data.resolve():
        data.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    write_report(results, args.markdown, args.report_dir)
    print(f"wrote {args.markdown} and plots in {args.report_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
