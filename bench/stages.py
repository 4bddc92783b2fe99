"""Where the in-process path spends its time, one clip at a time (concurrency 1).

    .venv/bin/python -m bench.stages --model models/default [--repeats 3]

For the benchmark's short, medium and long clips (`bench/clips.py`): wall time per clip of
the whole `Transcriber.transcribe` (decode, log-mel, encoder, CTC decoding) next to the bare
encoder (`OnnxEncoder.run` on the same precomputed features, the same session), and of each
stage alone: preprocessing, encoder, greedy and beam decoding. The ratio bare / in-process
is the share of the time the encoder's own work takes; the rest is what the path adds.
Stages are timed in rounds (all of one, then the next), repeated, best round kept: these
machines are shared. Prints a table; writes bench/results/stages-<time>.json (or `--out`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from bench.clips import build_clips
from bench.common import machine_info, write_results
from serve_app.transcriber import Transcriber

COUNTS = {"short": 8, "medium": 2, "long": 1}


def best_round(fn: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of `repeats` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(transcriber: Transcriber, datas: list[bytes], repeats: int) -> dict[str, float]:
    decoder = transcriber.decoder
    beam, greedy = decoder.settings.replace(kind="beam"), decoder.settings.replace(kind="greedy")
    prepared = [transcriber.preprocessor(d) for d in datas]
    encoded = [transcriber.encode_prepared([p])[0] for p in prepared]
    features = [[w.features for w in p.windows if w.features is not None] for p in prepared]
    encoder = transcriber.encoder

    def transcribe_all() -> None:
        for d in datas:
            transcriber.transcribe(d)

    def decode_all() -> None:
        for p, lp in zip(prepared, encoded, strict=True):
            decoder(p, lp)

    n = len(datas)
    per_clip = {}
    preprocess = transcriber.preprocessor
    per_clip["preprocess"] = best_round(lambda: [preprocess(d) for d in datas], repeats)
    per_clip["encoder_bare"] = best_round(lambda: [encoder.run(f) for f in features], repeats)
    decoder.reconfigure(greedy)
    per_clip["decode_greedy"] = best_round(decode_all, repeats)
    per_clip["in_process_greedy"] = best_round(transcribe_all, repeats)
    decoder.reconfigure(beam)
    per_clip["decode_beam"] = best_round(decode_all, repeats)
    per_clip["in_process_beam"] = best_round(transcribe_all, repeats)
    return {k: round(1000 * v / n, 2) for k, v in per_clip.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__)
    p.add_argument("--model", type=Path, default=Path("models/default"))
    p.add_argument("--precision", default=None, help="fp32 | int8 (default: the bundle's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--note", default="")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    transcriber = Transcriber(args.model, precision=args.precision)
    clips = build_clips(COUNTS)
    rows = []
    for kind in COUNTS:
        datas = [c.wav_bytes() for c in clips if c.kind == kind]
        for d in datas:  # warm-up: first runs allocate
            transcriber.transcribe(d)
        ms = measure(transcriber, datas, args.repeats)
        audio_s = sum(c.duration_s for c in clips if c.kind == kind) / len(datas)
        row = {"kind": kind, "clips": len(datas), "audio_s_per_clip": round(audio_s, 2),
               "ms_per_clip": ms}  # fmt: skip
        for d in ("greedy", "beam"):
            row[f"bare_over_in_process_{d}"] = round(ms["encoder_bare"] / ms[f"in_process_{d}"], 3)
        rows.append(row)
    head = ["clips", "audio s", "preprocess", "encoder (bare)", "greedy", "beam",
            "in-process greedy", "in-process beam", "bare / in-proc. greedy", "beam"]  # fmt: skip
    print("ms per clip, concurrency 1, precision", transcriber.precision)
    print("| " + " | ".join(head) + " |\n|" + " --- |" * len(head))
    for r in rows:
        m = r["ms_per_clip"]
        cells = [r["kind"], r["audio_s_per_clip"], m["preprocess"], m["encoder_bare"],
                 m["decode_greedy"], m["decode_beam"], m["in_process_greedy"],
                 m["in_process_beam"], r["bare_over_in_process_greedy"],
                 r["bare_over_in_process_beam"]]  # fmt: skip
        print("| " + " | ".join(str(c) for c in cells) + " |")
    results = {"machine": machine_info(), "precision": transcriber.precision,
               "model": str(args.model), "repeats": args.repeats, "note": args.note,
               "rows": rows}  # fmt: skip
    write_results(results, "stages", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
