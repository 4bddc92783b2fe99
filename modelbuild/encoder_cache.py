"""The encoder cache `fit` trains on: the frozen Whisper encoder run once over the corpus,
every layer a head may read kept LayerNorm-ed in fp16, one memory-mapped array per split
(`python -m modelbuild.train encode`), and `CachedSplit`, its reader."""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from modelbuild.model import WhisperEncoder
from modelbuild.weights import load_whisper_base_encoder
from serve_app.features import ENCODER_FRAMES_PER_SECOND, log_mel_spectrogram

ENCODE_BATCH_FRAMES = 24_000  # mel frames per encoder batch (~4 min of audio)
CACHE_LAYERS = (1, 2, 3, 4, 5, 6)  # what `encode` keeps: room for a wider mix


def read_manifest(corpus: Path) -> list[dict]:
    """A synthetic corpus's rows (`corpus/manifest.jsonl`, one JSON object per line)."""
    lines = (corpus / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r]


def _mel(path: Path) -> np.ndarray:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=False)
    if rate != 16000 or audio.ndim != 1:
        raise ValueError(f"{path}: corpus audio must be 16 kHz mono")
    return log_mel_spectrogram(audio)


@torch.no_grad()
def encode_split(
    encoder: WhisperEncoder, corpus: Path, rows: list[dict], out: Path, layers: tuple[int, ...]
) -> None:
    """Cache `layers` of the encoder for every row: out.f16 [frames, len(layers), d] + index."""
    d = encoder.dims.d_model
    by_len: dict[int, list[int]] = defaultdict(list)
    n_frames = []
    for i, row in enumerate(rows):
        # 0.5 s padding in the corpus makes mel lengths multiples of 50 (even).
        info = sf.info(str(corpus / row["audio"]))
        n_mel = info.frames // 160
        n_frames.append(n_mel // 2)
        by_len[n_mel].append(i)
    offsets = np.concatenate([[0], np.cumsum(n_frames)]).astype(np.int64)
    cache = np.lib.format.open_memmap(
        str(out) + ".npy", mode="w+", dtype=np.float16, shape=(int(offsets[-1]), len(layers), d)
    )
    done, t0 = 0, time.time()
    for n_mel, idxs in sorted(by_len.items()):
        per_batch = max(1, ENCODE_BATCH_FRAMES // n_mel)
        for b in range(0, len(idxs), per_batch):
            chunk = idxs[b : b + per_batch]
            feats = np.stack([_mel(corpus / rows[i]["audio"])[:, :n_mel] for i in chunk])
            x = torch.from_numpy(feats)
            outs, _ = encoder(x, torch.full((len(chunk),), n_mel))
            stacked = torch.stack([F.layer_norm(outs[k - 1], (d,)) for k in layers], dim=2)
            stacked = stacked.to(torch.float16).numpy()
            for j, i in enumerate(chunk):
                cache[offsets[i] : offsets[i + 1]] = stacked[j]
            done += len(chunk)
        print(f"  encoded {done}/{len(rows)} clips ({time.time() - t0:.0f} s)", flush=True)
    cache.flush()
    index = [
        {
            "offset": int(offsets[i]),
            "frames": n_frames[i],
            "text": r["text"],
            "condition": r.get("condition", r.get("aug", "")),
            "voice": r.get("voice", ""),
            "text_kind": r.get("text_kind", ""),
        }
        for i, r in enumerate(rows)
    ]
    Path(str(out) + ".index.json").write_text(json.dumps({"layers": list(layers), "rows": index}))


def encode_corpus(
    corpus: Path,
    cache_dir: Path,
    layers: tuple[int, ...],
    threads: int,
    splits: tuple[str, ...] = ("train", "dev"),
) -> None:
    torch.set_num_threads(threads)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if (corpus / "recipe.json").exists():  # which corpus this cache holds, for fit's manifest
        shutil.copyfile(corpus / "recipe.json", cache_dir / CORPUS_RECIPE)
    rows = read_manifest(corpus)
    encoder = load_whisper_base_encoder()
    for split in splits:
        out = cache_dir / split
        if Path(str(out) + ".index.json").exists():
            print(f"cache {out} exists, skipping")
            continue
        split_rows = [r for r in rows if r["split"] == split]
        print(f"encoding {len(split_rows)} {split} clips", flush=True)
        encode_split(encoder, corpus, split_rows, out, layers)


_SPREAD = (math.sqrt(5) - 1) / 2  # golden ratio: i * _SPREAD mod 1 spreads a subset evenly


class CachedSplit:
    def __init__(self, cache_dir: Path, split: str, fraction: float = 1.0) -> None:
        """`fraction` < 1 keeps an evenly spread, deterministic share of the rows."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        meta = json.loads((cache_dir / f"{split}.index.json").read_text())
        self.layers = tuple(meta["layers"])
        self.rows = [r for i, r in enumerate(meta["rows"]) if (i * _SPREAD) % 1.0 < fraction]
        self.data = np.load(cache_dir / f"{split}.npy", mmap_mode="r")

    @staticmethod
    def trains(cache_dirs: list[Path], fraction: float = 1.0) -> CachedSplit:
        """The first cache's train split, followed by the others' (supplementary
        training-only corpora: `fit --extra-train`)."""
        parts = [CachedSplit(d, "train", fraction) for d in cache_dirs]
        return parts[0] if len(parts) == 1 else ConcatSplit(parts)

    @property
    def hours(self) -> float:
        return sum(r["frames"] for r in self.rows) / ENCODER_FRAMES_PER_SECOND / 3600

    def batches(self, batch_frames: int, rng: random.Random) -> list[list[int]]:
        by_len: dict[int, list[int]] = defaultdict(list)
        for i, r in enumerate(self.rows):
            by_len[r["frames"]].append(i)
        batches = []
        for n, idxs in by_len.items():
            rng.shuffle(idxs)
            per = max(1, batch_frames // n)
            batches += [idxs[b : b + per] for b in range(0, len(idxs), per)]
        rng.shuffle(batches)
        return batches

    def block(self, i: int) -> np.ndarray:
        """Row i's cached frames, [T, L, d]."""
        row = self.rows[i]
        return self.data[row["offset"] : row["offset"] + row["frames"]]

    def features(self, idxs: list[int], layer_pos: list[int]) -> list[torch.Tensor]:
        blocks = np.stack([self.block(i) for i in idxs])  # [B, T, L, d]
        x = torch.from_numpy(blocks[:, :, layer_pos].astype(np.float32))
        return list(x.unbind(dim=2))


class ConcatSplit(CachedSplit):
    """Several caches' splits trained on as one (e.g. the main corpus's train split and a
    supplementary training-only corpus's): rows in order, features read from the array each
    row came from. All parts must cache the same layers."""

    def __init__(self, parts: list[CachedSplit]) -> None:  # one array per part: no super()
        if not parts:
            raise ValueError("ConcatSplit needs at least one part")
        if len({p.layers for p in parts}) != 1:
            raise ValueError(f"the caches hold different layers: {[p.layers for p in parts]}")
        self.layers = parts[0].layers
        self.data = parts[0].data  # shape[-1] (d_model) is what callers read from it
        self.rows = [r for p in parts for r in p.rows]
        self._where = [(p, i) for p in parts for i in range(len(p.rows))]

    def block(self, i: int) -> np.ndarray:
        part, j = self._where[i]
        return part.block(j)


CORPUS_RECIPE = "corpus-recipe.json"  # `encode_corpus` copies the corpus's recipe.json here


def cache_corpus(cache_dir: Path) -> dict:
    """Which corpus a cache holds: its command, counts and parameters (for manifests)."""
    path = cache_dir / CORPUS_RECIPE
    recipe = json.loads(path.read_text()) if path.exists() else {}
    return {"cache": str(cache_dir), "command": recipe.get("command"),
            "counts": recipe.get("counts"), "params": recipe.get("params")}  # fmt: skip
