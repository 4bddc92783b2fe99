"""INT8 that batches: windows per ORT call vs throughput, for each graph and window length.

Graphs: the bundle's fp32 model; INT8 with one activation scale per frame
(modelbuild/rowquant.py: batch-invariant), every MatMul (`matmul-per-frame`, the default
recipe) or all but the FFN output and head ones (`matmul-per-frame-keep-fc2`); INT8 from
ONNX Runtime's `quantize_dynamic` (`matmul-per-channel-keep-fc2`, the previous default:
one scale per call, so the service ran it one window per call). The INT8 graphs are made
here from the bundle's fp32 model, so they differ only in the recipe.

Plans: one window per ORT call, and batched (up to 8 windows per call within a padded
frame budget, `--budgets`). Each case encodes `--windows` windows of one length with
`OnnxEncoder` set up as the Encoder replica is in serve_config.yaml (one intra-op thread
per call, two calls in flight): audio-seconds per wall-second, best of `--repeats`, the
cases taken round-robin so drift in background load hits them alike.

    .venv/bin/python -m bench.int8_batching --model models/default

Writes bench/results/int8_batching-<time>.json and prints a table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.common import machine_info, write_results
from serve_app.audio import load_audio_file
from serve_app.bundle import load_bundle
from serve_app.encoder import EncoderOptions, OnnxEncoder
from serve_app.features import log_mel_spectrogram

ROOT = Path(__file__).resolve().parent.parent
CLIPS = ROOT / "tests" / "data" / "clips"
FRAMES_PER_S = 100


def speech_windows(seconds: float, count: int) -> list[np.ndarray]:
    """`count` log-mel windows of `seconds` each, cut from the committed speech clips."""
    speech = [
        p
        for p in sorted(CLIPS.iterdir())
        if p.suffix in (".wav", ".flac", ".ogg", ".mp3") and p.stem not in ("noise", "silence")
    ]
    audio = np.concatenate([load_audio_file(p) for p in speech])
    n = int(seconds * 16000)
    while len(audio) < n * count:
        audio = np.concatenate([audio, audio])
    frames = int(seconds * FRAMES_PER_S) // 2 * 2
    return [log_mel_spectrogram(audio[i * n : (i + 1) * n])[:, :frames] for i in range(count)]


def build_graphs(bundle_dir: Path, work: Path) -> dict[str, Path]:
    from modelbuild.quant import RECIPES, quantize_int8

    fp32 = load_bundle(bundle_dir).model_path("fp32")
    graphs = {"fp32": fp32}
    for label, recipe in (
        ("int8 per-frame", "matmul-per-frame"),
        ("int8 per-frame keep-fc2", "matmul-per-frame-keep-fc2"),
        ("int8 per-tensor (quantize_dynamic)", "matmul-per-channel-keep-fc2"),
    ):
        out = work / f"{recipe}.onnx"
        quantize_int8(fp32, out, RECIPES[recipe])
        graphs[label] = out
    return graphs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.int8_batching")
    p.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    p.add_argument("--seconds", type=float, nargs="+", default=[1, 2, 4, 15, 30])
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--budgets", type=int, nargs="+", default=[800, 1600])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        graphs = build_graphs(args.model, Path(tmp))
        base = EncoderOptions(intra_op_threads=1, parallel_runs=2, max_batch=1)
        encoders = {label: OnnxEncoder(path, base) for label, path in graphs.items()}
        plans = {"one per call": base} | {
            f"batched <= {b} frames": replace(base, max_batch=8, max_batch_frames=b)
            for b in args.budgets
        }
        inputs = {s: speech_windows(s, args.windows) for s in args.seconds}
        best: dict[tuple[str, str, float], float] = {}
        for _ in range(args.repeats):
            for seconds, windows in inputs.items():
                for label, encoder in encoders.items():
                    for plan, options in plans.items():
                        if plan != "one per call" and not encoder.batch_invariant:
                            continue  # the service never batches these graphs
                        encoder.options = options
                        t0 = time.perf_counter()
                        encoder.run(windows)
                        rate = seconds * len(windows) / (time.perf_counter() - t0)
                        key = (label, plan, seconds)
                        best[key] = max(best.get(key, 0.0), rate)

    rows = []
    for (label, plan, seconds), rate in best.items():
        one = best[(label, "one per call", seconds)]
        rows.append(
            {
                "graph": label,
                "plan": plan,
                "window_s": seconds,
                "audio_s_per_s": round(rate, 1),
                "vs_one_per_call": round(rate / one, 3),
                "vs_per_tensor_one_per_call": round(
                    rate / best[("int8 per-tensor (quantize_dynamic)", "one per call", seconds)], 3
                ),
            }
        )
    rows.sort(key=lambda r: (r["window_s"], r["graph"], r["plan"]))
    print(f"{'window':>7} {'graph':36} {'plan':22} {'audio-s/s':>9} {'x one':>6} {'x old':>6}")
    for r in rows:
        print(
            f"{r['window_s']:>6}s {r['graph']:36} {r['plan']:22} {r['audio_s_per_s']:>9} "
            f"{r['vs_one_per_call']:>6} {r['vs_per_tensor_one_per_call']:>6}"
        )
    write_results(
        {"machine": machine_info(), "args": vars(args), "rows": rows},
        "int8_batching",
        args.out,
        default=str,
    )


if __name__ == "__main__":
    main()
