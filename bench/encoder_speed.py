"""Encoder speed: ONNX Runtime seconds per second of audio, across the serving knobs.

For every combination of
  precision  fp32 / int8 (the bundle's model files),
  batch      1 / 8 windows per ORT call,
  window     5 s / 10 s of audio,
  layout     unpadded (window-length features, as the default bundle serves them) or
             padded_30s (3000 mel frames, as PhoWhisper-style bundles with pad_to_30s do),
it times `OnnxEncoder.run_padded` (one ORT call; assembling the batch costs well under 1 %)
and reports wall seconds per second of *real* audio encoded and its inverse, "x real time".

Noisy machines: after one warm-up call per case, the repeats go round-robin over all cases,
so slow drift in background load hits every case alike, and the ratios that matter
(int8 speedup, 30 s padding slowdown, batching gain) are computed within this one run.

    .venv/bin/python -m bench.encoder_speed --model models/default --threads 2 --repeats 5

Writes bench/results/encoder_speed.json (git-ignored) and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench.common import machine_info as common_machine_info
from serve_app.audio import SAMPLE_RATE, load_audio_file
from serve_app.bundle import Bundle, load_bundle
from serve_app.encoder import EncoderOptions, OnnxEncoder
from serve_app.features import N_FRAMES, log_mel_spectrogram

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "default"
DEFAULT_OUT = ROOT / "bench" / "results" / "encoder_speed.json"
DEFAULT_AUDIO_DIR = ROOT / "data" / "corpus" / "audio"
LAYOUTS = ("unpadded", "padded_30s")
ESPEAK_SENTENCES = (
    "Hôm nay trời đẹp, chúng tôi đi dạo quanh hồ Hoàn Kiếm và uống cà phê sữa đá.",
    "Xin chào các bạn, đây là bản tin thời sự buổi sáng của đài phát thanh.",
    "Giá xăng dầu trong nước tiếp tục giảm nhẹ từ ba giờ chiều ngày hôm qua.",
    "Người dân thành phố Hồ Chí Minh đổ ra đường đón giao thừa rất đông vui.",
)


@dataclass
class Case:
    precision: str
    batch: int
    window_s: float
    layout: str
    mel_frames: int
    audio_s: float  # real audio in one call: batch * window_s
    times_s: list[float] = field(default_factory=list)
    warmup_s: float = 0.0

    @property
    def key(self) -> tuple[str, int, float, str]:
        return (self.precision, self.batch, self.window_s, self.layout)

    def summary(self) -> dict[str, object]:
        median, best = statistics.median(self.times_s), min(self.times_s)
        return {
            **asdict(self),
            "median_s": median,
            "min_s": best,
            "s_per_audio_s": median / self.audio_s,
            "s_per_audio_s_min": best / self.audio_s,
            "x_realtime": self.audio_s / median,
            "x_realtime_best": self.audio_s / best,
        }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="bundle directory")
    p.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per case (default 5)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--precisions", default="fp32,int8", help="comma-separated (default all)")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--windows", default="5,10", help="comma-separated window lengths, seconds")
    p.add_argument(
        "--layouts", default=",".join(LAYOUTS), help=f"comma-separated, of {', '.join(LAYOUTS)}"
    )
    p.add_argument(
        "--audio-dir",
        type=Path,
        default=DEFAULT_AUDIO_DIR,
        help="FLAC files to cut windows from; espeak-ng speech when there are none",
    )
    args = p.parse_args(argv)
    if args.threads < 0 or args.repeats < 1:
        p.error("--threads must be >= 0 and --repeats >= 1")
    args.precisions = [s for s in args.precisions.split(",") if s]
    args.batches = [int(s) for s in args.batches.split(",") if s]
    args.windows = [float(s) for s in args.windows.split(",") if s]
    args.layouts = [s for s in args.layouts.split(",") if s]
    if bad := set(args.layouts) - set(LAYOUTS):
        p.error(f"unknown layouts {sorted(bad)}")
    if any(w <= 0 or w > N_FRAMES / 100 for w in args.windows):
        p.error("window lengths must be in (0, 30] seconds")
    if any(b < 1 for b in args.batches):
        p.error("batch sizes must be >= 1")
    return args


# --- audio -------------------------------------------------------------------------------


def corpus_audio(audio_dir: Path, seconds: float) -> np.ndarray | None:
    """The first FLAC files of `audio_dir` (sorted) joined until `seconds` are reached."""
    if not audio_dir.is_dir():
        return None
    parts, total = [], 0
    for path in sorted(audio_dir.glob("*.flac")):
        x = load_audio_file(path)
        parts.append(x)
        total += x.size
        if total >= seconds * SAMPLE_RATE:
            return np.concatenate(parts)
    return None


def espeak_audio(seconds: float) -> np.ndarray:
    from modelbuild.synth_render import espeak_synth

    parts, total, i = [], 0, 0
    while total < seconds * SAMPLE_RATE:
        text = ESPEAK_SENTENCES[i % len(ESPEAK_SENTENCES)]
        x = espeak_synth(text, voice="vi", speed=140 + 10 * (i % 4), pitch=40 + 5 * (i % 5))
        parts.append(x)
        total += x.size
        i += 1
    return np.concatenate(parts)


def speech_source(audio_dir: Path, seconds: float) -> tuple[np.ndarray, str]:
    audio = corpus_audio(audio_dir, seconds)
    if audio is not None:
        return audio, f"corpus FLAC files from {audio_dir}"
    return espeak_audio(seconds), "espeak-ng (voice vi), synthesised on the fly"


def make_windows(audio: np.ndarray, n: int, window_s: float) -> list[np.ndarray]:
    """n distinct consecutive windows of `window_s` seconds."""
    size = round(window_s * SAMPLE_RATE)
    return [audio[i * size : (i + 1) * size] for i in range(n)]


# --- machine and bundle -------------------------------------------------------------------


def machine_info(threads: int) -> dict[str, object]:
    import onnxruntime as ort

    return {
        **common_machine_info(),
        "niceness": os.nice(0),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "ort_providers": ["CPUExecutionProvider"],
        "intra_op_threads": threads,
    }


def bundle_info(bundle: Bundle, precisions: Sequence[str]) -> dict[str, object]:
    sizes = {}
    for precision in precisions:
        path = bundle.model_path(precision)
        # External-data files (models over 2 GB) sit next to the .onnx with its stem.
        extra = [p for p in path.parent.glob(f"{path.name}.*") if p.is_file()]
        n_bytes = path.stat().st_size + sum(p.stat().st_size for p in extra)
        sizes[precision] = {"file": path.name, "bytes": n_bytes, "mib": round(n_bytes / 2**20, 1)}
    total = sum(p.stat().st_size for p in bundle.path.iterdir() if p.is_file())
    return {
        "path": str(bundle.path.resolve()),
        "name": bundle.config.name,
        "pad_to_30s": bundle.config.pad_to_30s,
        "n_mels": bundle.config.n_mels,
        "model_sizes": sizes,
        "bundle_dir_bytes": total,
        "quantization": bundle.config.provenance.get("quantization"),
    }


# --- timing -------------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace) -> dict[str, object]:
    bundle = load_bundle(args.model)
    missing = [p for p in args.precisions if p not in bundle.config.models]
    if missing:
        raise SystemExit(f"bundle {args.model} has no {missing} model")
    max_batch = max(args.batches)
    options = EncoderOptions(intra_op_threads=args.threads, max_batch=max_batch)
    machine = machine_info(args.threads)

    audio, source = speech_source(args.audio_dir, max_batch * sum(args.windows))
    features: dict[tuple[float, str], list[np.ndarray]] = {}
    offset = 0
    for window_s in args.windows:
        chunks = make_windows(audio[offset:], max_batch, window_s)
        offset += sum(c.size for c in chunks)
        for layout in args.layouts:
            pad = N_FRAMES if layout == "padded_30s" else None
            features[window_s, layout] = [
                log_mel_spectrogram(c, n_mels=bundle.config.n_mels, pad_to_frames=pad)
                for c in chunks
            ]

    encoders = {p: OnnxEncoder(bundle.model_path(p), options) for p in args.precisions}
    cases = [
        Case(
            precision,
            batch,
            window_s,
            layout,
            mel_frames=features[window_s, layout][0].shape[1],
            audio_s=batch * window_s,
        )
        for precision in args.precisions
        for batch in args.batches
        for window_s in args.windows
        for layout in args.layouts
    ]

    def call(case: Case) -> float:
        batch = features[case.window_s, case.layout][: case.batch]
        t0 = time.perf_counter()
        encoders[case.precision].run_padded(batch)
        return time.perf_counter() - t0

    t_start = time.perf_counter()
    print(f"{len(cases)} cases, 1 warm-up + {args.repeats} round-robin repeats each", flush=True)
    for case in cases:
        case.warmup_s = call(case)
    for r in range(args.repeats):
        for case in cases:
            case.times_s.append(call(case))
        elapsed = time.perf_counter() - t_start
        print(f"  repeat {r + 1}/{args.repeats} done ({elapsed:.0f} s)", flush=True)
    machine["loadavg_end"] = list(os.getloadavg())

    results = [c.summary() for c in cases]
    return {
        "benchmark": "encoder_speed",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "machine": machine,
        "bundle": bundle_info(bundle, args.precisions),
        "settings": {
            "threads": args.threads,
            "inter_op_threads": options.inter_op_threads,
            "repeats": args.repeats,
            "warmup_calls": 1,
            "order": "round-robin over cases, per repeat",
            "timed": "OnnxEncoder.run_padded: one ORT session.run (+ batch assembly)",
            "audio_source": source,
            "padded_30s": f"features of the same audio padded to {N_FRAMES} mel frames",
            "wall_s": round(time.perf_counter() - t_start, 1),
        },
        "results": results,
        "ratios": ratios({c.key: c for c in cases}),
    }


def ratios(by_key: dict[tuple[str, int, float, str], Case]) -> dict[str, list[dict[str, object]]]:
    """Within-run ratios of medians (and of minima): >1 means the first named is slower."""

    def pair(a: Case, b: Case, **labels: object) -> dict[str, object]:
        per_a = (statistics.median(a.times_s) / a.audio_s, min(a.times_s) / a.audio_s)
        per_b = (statistics.median(b.times_s) / b.audio_s, min(b.times_s) / b.audio_s)
        return {
            **labels,
            "ratio_median": per_a[0] / per_b[0],
            "ratio_min": per_a[1] / per_b[1],
        }

    out: dict[str, list[dict[str, object]]] = {
        "int8_speedup": [],  # fp32 time / int8 time
        "padding_slowdown": [],  # padded_30s time / unpadded time
        "batching_gain": [],  # batch-1 time per audio second / batch-N time per audio second
    }
    for (precision, batch, window_s, layout), case in by_key.items():
        if precision == "int8" and ("fp32", batch, window_s, layout) in by_key:
            fp32 = by_key["fp32", batch, window_s, layout]
            labels = {"batch": batch, "window_s": window_s, "layout": layout}
            out["int8_speedup"].append(pair(fp32, case, **labels))
        if layout == "padded_30s" and (precision, batch, window_s, "unpadded") in by_key:
            unpadded = by_key[precision, batch, window_s, "unpadded"]
            labels = {"precision": precision, "batch": batch, "window_s": window_s}
            out["padding_slowdown"].append(pair(case, unpadded, **labels))
        if batch > 1 and (precision, 1, window_s, layout) in by_key:
            single = by_key[precision, 1, window_s, layout]
            labels = {"precision": precision, "batch": batch, "window_s": window_s}
            out["batching_gain"].append(pair(single, case, **labels, layout=layout))
    return out


# --- report -------------------------------------------------------------------------------


def print_report(report: dict) -> None:
    m, b = report["machine"], report["bundle"]
    print()
    print(
        f"{m['cpu_model']}, nproc {m['nproc']}, onnxruntime {m['onnxruntime']}, "
        f"intra-op threads {m['intra_op_threads']}, "
        f"load avg {m['loadavg_start'][0]:.2f} -> {m['loadavg_end'][0]:.2f}"
    )
    sizes = ", ".join(f"{p} {s['mib']} MiB" for p, s in b["model_sizes"].items())
    print(f"bundle {b['name']} ({b['path']}): {sizes}")
    print(f"audio: {report['settings']['audio_source']}")
    print()
    header = (
        f"{'prec':<5} {'batch':>5} {'window':>6} {'layout':<10} {'frames':>6} "
        f"{'median ms':>10} {'min ms':>9} {'ms/audio-s':>10} {'x RT':>7} {'x RT best':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        print(
            f"{r['precision']:<5} {r['batch']:>5} {r['window_s']:>5g}s {r['layout']:<10} "
            f"{r['mel_frames']:>6} {1000 * r['median_s']:>10.1f} {1000 * r['min_s']:>9.1f} "
            f"{1000 * r['s_per_audio_s']:>10.1f} {r['x_realtime']:>7.1f} "
            f"{r['x_realtime_best']:>9.1f}"
        )
    titles = {
        "int8_speedup": "int8 speedup (fp32 time / int8 time)",
        "padding_slowdown": "30 s padding slowdown (padded time / unpadded time)",
        "batching_gain": "batching gain (batch-1 time per audio-s / batch-N time per audio-s)",
    }
    for name, rows in report["ratios"].items():
        if not rows:
            continue
        print(f"\n{titles[name]}:")
        for row in rows:
            labels = "  ".join(
                f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in row.items()
                if not k.startswith("ratio")
            )
            print(
                f"  {labels:<56} median {row['ratio_median']:5.2f}x   min {row['ratio_min']:5.2f}x"
            )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = run_benchmark(args)
    print_report(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
