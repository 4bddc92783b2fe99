"""Decoding cost next to the encoder's, and the Decoder's memory with the LM loaded.

    .venv/bin/python -m bench.decode_cost --model models/default --corpus data/corpus

On the clean test rows of the corpus (both text kinds; `--rows N` of them), in one process:

* the encoder's CPU time per audio-second (`OnnxEncoder.run`, process CPU time, so every
  ONNX Runtime thread counts), the bundle's precision;
* the decoder's CPU time per audio-second, greedy and beam at each `--widths` (the bundle's
  other settings), with CER/WER of each, so cost and accuracy are read together;
* the share of the encoder's CPU time that decoding adds (the budget is 15 % for beam);
* in a fresh subprocess each: the resident memory a Decoder replica adds for the bundle
  with beam search (KenLM + lexicon trie loaded) and with greedy only.

Prints a table; writes bench/results/decode_cost-<time>.json (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench.common import machine_info, write_results
from modelbuild.heldout import decode_encoded, encode_rows, split_rows
from serve_app.evaluation import evaluate
from serve_app.transcriber import Transcriber

BEAM_BUDGET = 0.15  # beam decoding may add at most this share of the encoder's CPU time
DEFAULT_WIDTHS = (8, 16, 32)

_MEMORY_PROBE = """
import gc, json, sys, psutil
from serve_app.bundle import load_bundle
from serve_app.transcriber import Decoder
bundle = load_bundle(sys.argv[1])
settings = bundle.config.decoder_settings.replace(kind=sys.argv[2])
gc.collect()
before = psutil.Process().memory_info().rss
decoder = Decoder.from_bundle(bundle, settings)
gc.collect()
print(json.dumps({"rss_added_mib": (psutil.Process().memory_info().rss - before) / 2**20}))
"""


def decoder_memory_mib(model: Path, kind: str) -> float:
    """RSS a fresh process gains by building the bundle's Decoder of `kind`."""
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(model), kind],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return round(json.loads(out.strip().splitlines()[-1])["rss_added_mib"], 1)


def measure(model: Path, corpus: Path, n_rows: int, widths: tuple[int, ...]) -> dict:
    transcriber = Transcriber(model)
    rows = [r for r in split_rows(corpus, "test") if r["condition"] == "clean"][:n_rows]
    if not rows:
        raise SystemExit(f"{corpus} has no clean test rows")
    transcriber.encode_prepared([transcriber.preprocessor(Path(rows[0]["path"]).read_bytes())])
    encoded = encode_rows(transcriber, rows)
    audio_s = encoded.audio_seconds
    encoder_ms = 1000 * encoded.encode_cpu_seconds / audio_s
    base = transcriber.bundle.config.decoder_settings
    variants = [("greedy", base.replace(kind="greedy"))]
    variants += [(f"beam{w}", base.replace(kind="beam", beam_width=w)) for w in widths]
    points = []
    refs = [r["text"] for r in rows]
    for name, settings in variants:
        transcriber.decoder.reconfigure(settings)
        decode_encoded(transcriber.decoder, encoded)  # warm-up: numba, KenLM pages
        hyps, seconds = decode_encoded(transcriber.decoder, encoded)
        result = evaluate(refs, hyps)
        decode_ms = 1000 * seconds / audio_s
        points.append({
            "decoder": name, "settings": settings.to_dict(),
            "decode_cpu_ms_per_audio_s": round(decode_ms, 3),
            "share_of_encoder": round(decode_ms / encoder_ms, 4),
            "cer": round(result.cer, 4), "wer": round(result.wer, 4),
        })  # fmt: skip
    return {
        "model": str(model),
        "precision": transcriber.precision,
        "rows": len(rows),
        "audio_seconds": round(audio_s, 1),
        "encoder_cpu_ms_per_audio_s": round(encoder_ms, 2),
        "points": points,
        "beam_budget_share": BEAM_BUDGET,
        "bundle_beam_settings": base.to_dict(),
        "decoder_memory_mib": {
            "beam": decoder_memory_mib(model, "beam"),
            "greedy": decoder_memory_mib(model, "greedy"),
        },
        "lm_file_mib": round((model / "lm.arpa").stat().st_size / 2**20, 1),
    }


def table(result: dict) -> str:
    lines = [
        f"encoder ({result['precision']}): {result['encoder_cpu_ms_per_audio_s']} CPU-ms per "
        f"audio-second over {result['audio_seconds']} s of clean test audio",
        "| decoder | CPU-ms / audio-s | share of encoder | CER | WER |",
        "| --- | --- | --- | --- | --- |",
    ]
    for p in result["points"]:
        lines.append(
            f"| {p['decoder']} | {p['decode_cpu_ms_per_audio_s']:.2f} | "
            f"{100 * p['share_of_encoder']:.1f}% | {100 * p['cer']:.2f}% | {100 * p['wer']:.1f}% |"
        )
    mem = result["decoder_memory_mib"]
    lines.append(
        f"Decoder replica memory added: beam {mem['beam']} MiB (LM file {result['lm_file_mib']} "
        f"MiB), greedy {mem['greedy']} MiB"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.decode_cost", description=__doc__)
    p.add_argument("--model", type=Path, default=Path("models/default"))
    p.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    p.add_argument("--rows", type=int, default=600, help="clean test rows to decode")
    p.add_argument("--widths", type=int, nargs="+", default=list(DEFAULT_WIDTHS))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    result = measure(args.model, args.corpus, args.rows, tuple(args.widths))
    result["machine"] = machine_info()
    result["command"] = "python -m bench.decode_cost " + " ".join(argv or sys.argv[1:])
    print(table(result))
    write_results(result, "decode_cost", args.out, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
