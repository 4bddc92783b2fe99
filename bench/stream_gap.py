"""The live API against the upload on the same audio: CER of each, over many recordings.

    .venv/bin/python -m bench.stream_gap --model models/default --groups 16

Each recording joins `--per-group` clean dev clips of the corpus (never the test split) with
0.8 s pauses, as tests/test_streaming_integration.py does with its committed clips, and is
quantised to 16-bit PCM once. In one process, the same in-process Transcriber transcribes it
twice: whole, as `POST /transcribe` does, and through a `StreamSession` (what `WS
/v1/stream` runs), fed 0.1 s frames as fast as it takes them, so the endpointer cuts it
into utterances at the pauses and each is encoded on its own with its left context. Prints
each recording's two CERs and the gap's mean, spread and largest value; writes
bench/results/stream_gap-<time>.json (or `--out`).
"""

from __future__ import annotations

import argparse
import asyncio
import random
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine_info, write_results
from modelbuild.encoder_cache import read_manifest
from serve_app.audio import SAMPLE_RATE, load_audio_file
from serve_app.evaluation import cer
from serve_app.streaming import StreamLimits, StreamParams, StreamSession
from serve_app.transcriber import Transcriber

GAP_S = 0.8  # the integration test's pause between clips
FRAME_S = 0.1


def recordings(corpus: Path, groups: int, per_group: int, seed: int) -> list[list[dict]]:
    rows = [r for r in read_manifest(corpus) if r["split"] == "dev" and r["condition"] == "clean"]
    rng = random.Random(seed)
    return [rng.sample(rows, per_group) for _ in range(groups)]


def pcm16(corpus: Path, rows: list[dict]) -> np.ndarray:
    gap = np.zeros(round(GAP_S * SAMPLE_RATE), np.float32)
    audio = np.concatenate([x for r in rows for x in (load_audio_file(corpus / r["audio"]), gap)])
    return np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)


async def streamed(transcriber: Transcriber, pcm: np.ndarray) -> str:
    async def transcribe(samples: np.ndarray, rate: int):
        return transcriber.transcribe_audio(samples)

    async def send(message: dict[str, Any]) -> None:
        pass

    session = StreamSession(StreamParams(), StreamLimits(), transcribe, send)
    step = round(FRAME_S * SAMPLE_RATE)
    for i in range(0, len(pcm), step):
        session.add_audio(pcm[i : i + step].tobytes())
        await asyncio.sleep(0)  # let the session's worker run, as between network frames
    return (await session.finish())["text"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stream_gap", description=__doc__)
    p.add_argument("--model", type=Path, default=Path("models/default"))
    p.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    p.add_argument("--groups", type=int, default=16)
    p.add_argument("--per-group", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    transcriber = Transcriber(args.model)
    rows_out, refs, uploads, streams = [], [], [], []
    for i, rows in enumerate(recordings(args.corpus, args.groups, args.per_group, args.seed)):
        pcm = pcm16(args.corpus, rows)
        ref = " ".join(r["text"] for r in rows)
        upload = transcriber.transcribe_audio(pcm.astype(np.float32) / 32768).text
        stream = asyncio.run(streamed(transcriber, pcm))
        c_up, c_st = cer([ref], [upload]), cer([ref], [stream])
        refs.append(ref), uploads.append(upload), streams.append(stream)
        rows_out.append({"ids": [r["id"] for r in rows], "upload_cer": c_up, "stream_cer": c_st})
        print(f"{i}: upload {c_up:.2%} stream {c_st:.2%}", flush=True)
    gaps = np.array([r["stream_cer"] - r["upload_cer"] for r in rows_out])
    summary = {
        "upload_cer": cer(refs, uploads),
        "stream_cer": cer(refs, streams),
        "gap_mean": float(gaps.mean()),
        "gap_sd": float(gaps.std()),
        "gap_max_abs": float(np.abs(gaps).max()),
        "over_1_point": int((np.abs(gaps) > 0.01).sum()),
    }
    print(
        f"{args.model}: {args.groups} recordings of {args.per_group} clean dev clips; all rows: "
        f"upload {summary['upload_cer']:.2%}, stream {summary['stream_cer']:.2%}; per recording "
        f"stream - upload {summary['gap_mean']:+.2%} (sd {summary['gap_sd']:.2%}, largest "
        f"{summary['gap_max_abs']:.2%}, {summary['over_1_point']} beyond 1 point)"
    )
    results = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
               "summary": summary, "recordings": rows_out}  # fmt: skip
    write_results(results, "stream_gap", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
