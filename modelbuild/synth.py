"""Synthetic Vietnamese speech corpus spoken offline by espeak-ng, with augmentation.

Usage::

    python -m modelbuild.synth --out data/corpus --n-train 12000 --n-test 300 \\
        --n-dev 300 --seed 1234 --workers 2 [--skip-train-audio]

Layout of ``OUT``:

* ``audio/NNNNNN.flac``: 16 kHz mono int16 FLAC, one per manifest row.
* ``manifest.jsonl``: one JSON object per row (see :func:`build_corpus`).
* ``recipe.json``: every generation parameter, counts, hours and timings.

Training rows (``split == "train"``) are spoken by a random dialect voice (``vi``,
``vi-vn-x-central``, ``vi-vn-x-south``) + espeak variant, speed, pitch and word gap, then
augmented at random (:data:`AUG_WEIGHTS`, signal operations in
:mod:`modelbuild.augment`): ``clean`` (about 25 %), ``noise`` (white/pink, SNR
10-30 dB), ``colored_noise`` (pink/brown, 0-20 dB), ``gain`` (-12..+6 dB, clip-safe), ``8k``
(band limit through 8 kHz), ``telephone`` (300-3400 Hz, 8 kHz mu-law), ``mp3`` and ``ogg``
(Vorbis) round trips, ``reverb`` (synthetic room, RT60 0.2-1.0 s), ``babble`` (1-3 other
espeak-ng talkers with other voices saying other training sentences, 0-20 dB), ``speed``
(Kaldi-style speed perturbation 0.8-1.25), ``quiet`` (-30..-20 dB) and ``clipped`` (hard
clipping at 0.1-0.5 of the peak, level restored).  A fifth of the other augmented rows are
also speed perturbed (``aug_params["speed_factor"]``).  Independently of the augmentation,
half the rows get 0.1-0.6 s of extra leading and/or trailing silence (``lead_s``/``trail_s``).
About 3 % extra training rows are "empty": digital silence (``aug == "silence"``) or pure
noise (``aug == "noise"``) with text ``""``, so the model learns to emit nothing for them.

Test rows (``split == "test"``): every test sentence is spoken once (dialect cycling over the
three voices) and stored under every :data:`TEST_CONDITIONS` value -- ``clean``, ``8k``,
``mp3`` (fixed bitrate), ``noise`` (white noise, SNR 15 dB), ``reverb`` (RT60 drawn per
utterance in 0.3-0.9 s), ``babble`` (2 talkers, 8 dB), ``tempo_slow``/``tempo_fast`` (speed
0.8/1.25), ``pink`` (pink noise, 10 dB), ``telephone``, ``quiet`` (-25 dB) and ``clipped``
(at 0.3 of the peak) -- that share ``utt``.  The first four are the same samples as in
recipe version 2 for the same seed.  Durations are equal except for the tempo conditions
and ``reverb`` (which keeps up to 0.3 s of tail).  Dev rows (``split == "dev"``, for tuning
decoders; tuning on test is not allowed) are built the same way from ``--n-dev`` sentences of
a third seed, disjoint from train and test.

``--skip-train-audio`` plans everything as usual (the test and dev sentences and row ids are
those of a full run) but writes only the test and dev rows.

Every clip is padded with silence at the end to a multiple of 0.5 s (the padding is added
before noise/codec augmentation, so noisy clips are noisy to the end).  All randomness is
derived from ``--seed`` per row, so the output does not depend on ``--workers``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from modelbuild import augment as A
from modelbuild import running_text
from modelbuild import synth_plan as P
from modelbuild import text as textgen
from modelbuild.synth_plan import (
    DEFAULT_N_DEV,
    DEFAULT_NATURAL,
    RECIPE_VERSION,
    TEST_CONDITIONS,
    plan_corpus,
)
from modelbuild.synth_render import (
    _render_worker,
    available_variants,
    corpus_stats,
    espeak_version,
)

# --------------------------------------------------------------------------- driver


def corpus_params(
    n_train: int,
    n_test: int,
    seed: int,
    min_words: int = 4,
    max_words: int = 14,
    n_dev: int = 0,
    skip_train_audio: bool = False,
    natural: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Everything that determines the corpus content (compared for idempotency).
    ``natural``: how many natural sentences (modelbuild/running_text.py) each
    split gets on top of the composed ones ({"train": n, "test": n, "dev": n})."""
    natural = natural or {"train": 0, "test": 0, "dev": 0}
    return {
        "recipe_version": P.RECIPE_VERSION,
        "n_train": n_train,
        "n_test": n_test,
        "n_dev": n_dev,
        "skip_train_audio": skip_train_audio,
        "seed": seed,
        "test_seed": seed + textgen.TEST_SEED_OFFSET,
        "dev_seed": seed + textgen.DEV_SEED_OFFSET,
        "min_words": min_words,
        "max_words": max_words,
        "text": {
            "wordfreq_top_n": textgen.WORDFREQ_TOP_N,
            "wordfreq_flatten": textgen.WORDFREQ_FLATTEN,
            "composed_fraction": textgen.COMPOSED_FRACTION,
            "license_note": "wordfreq: code Apache-2.0, data CC-BY-SA 4.0",
        },
        "natural": {
            **natural,
            "seed_offset": running_text.NATURAL_SEED_OFFSET,
            "syllables": [running_text.SPEECH_MIN_SYLLABLES, running_text.SPEECH_MAX_SYLLABLES],
            "sources": running_text.sources_summary() if any(natural.values()) else [],
        },
        "espeak": espeak_version(),
        "dialects": list(P.DIALECTS),
        "variants": list(available_variants()),
        "speed_range": list(P.SPEED_RANGE),
        "pitch_range": list(P.PITCH_RANGE),
        "gap_prob": P.GAP_PROB,
        "gap_range": list(P.GAP_RANGE),
        "sample_rate": P.SAMPLE_RATE,
        "pad_multiple_s": P.PAD_MULTIPLE_S,
        "aug_weights": P.AUG_WEIGHTS,
        "snr_range_db": list(P.SNR_RANGE_DB),
        "gain_range_db": list(P.GAIN_RANGE_DB),
        "codec_level_range": list(P.CODEC_LEVEL_RANGE),
        "speed_factor_range": list(P.SPEED_FACTOR_RANGE),
        "speed_combine_prob": P.SPEED_COMBINE_PROB,
        "rt60_range_s": list(P.RT60_RANGE_S),
        "drr_range_db": list(P.DRR_RANGE_DB),
        "reverb_max_tail_s": A.REVERB_MAX_TAIL_S,
        "babble_snr_range_db": list(P.BABBLE_SNR_RANGE_DB),
        "babble_talkers": list(P.BABBLE_TALKERS),
        "colored_noise_snr_range_db": list(P.COLORED_NOISE_SNR_RANGE_DB),
        "colored_noise_kinds": list(P.COLORED_NOISE_KINDS),
        "brown_corner_hz": A.BROWN_CORNER_HZ,
        "quiet_range_db": list(P.QUIET_RANGE_DB),
        "clip_level_range": list(P.CLIP_LEVEL_RANGE),
        "telephone_band_hz": list(A.TELEPHONE_BAND_HZ),
        "silence_prob": P.SILENCE_PROB,
        "silence_range_s": list(P.SILENCE_RANGE_S),
        "empty_fraction": P.EMPTY_FRACTION,
        "empty_duration_range_s": list(P.EMPTY_DURATION_RANGE_S),
        "empty_noise_dbfs": list(P.EMPTY_NOISE_DBFS),
        "test_conditions": list(TEST_CONDITIONS),
        "test_snr_db": P.TEST_SNR_DB,
        "test_mp3_level": P.TEST_MP3_LEVEL,
        "test_speed_range": list(P.TEST_SPEED_RANGE),
        "test_rt60_range_s": list(P.TEST_RT60_RANGE_S),
        "test_babble_talkers": P.TEST_BABBLE_TALKERS,
        "test_babble_snr_db": P.TEST_BABBLE_SNR_DB,
        "test_tempo": P.TEST_TEMPO,
        "test_pink_snr_db": P.TEST_PINK_SNR_DB,
        "test_quiet_db": P.TEST_QUIET_DB,
        "test_clip_level": P.TEST_CLIP_LEVEL,
    }


def _run_jobs(
    jobs: Sequence[dict[str, Any]], out: Path, workers: int, progress: bool
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    args = [(j, str(out)) for j in jobs]
    t0 = time.monotonic()

    def collect(results: Iterable[list[dict[str, Any]]]) -> None:
        for k, r in enumerate(results, 1):
            rows.extend(r)
            if progress and (k % 1000 == 0 or k == len(jobs)):
                el = time.monotonic() - t0
                print(f"  {k}/{len(jobs)} jobs, {el:.0f} s", file=sys.stderr, flush=True)

    if workers <= 1:
        collect(_render_worker(a) for a in args)
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            collect(pool.imap_unordered(_render_worker, args, chunksize=8))
    rows.sort(key=lambda r: r["id"])
    return rows


def build_corpus(
    out: str | os.PathLike[str],
    n_train: int,
    n_test: int,
    seed: int,
    workers: int = 2,
    min_words: int = 4,
    max_words: int = 14,
    force: bool = False,
    progress: bool = False,
    command: str | None = None,
    n_dev: int = 0,
    skip_train_audio: bool = False,
    natural: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Generate the corpus into ``out`` and return the recipe.

    ``n_dev`` dev sentences (a third seed, disjoint from train and test) are rendered like
    the test ones.  ``natural`` adds natural sentences per split (``{"train": n, "test": n,
    "dev": n}``, from :mod:`running_text`, split by document) after the composed ones, so
    the composed rows keep their random streams.  ``skip_train_audio`` computes the same
    text split and plan (same test/dev sentences, voices and row ids as a full run) but
    writes only the test and dev rows.

    Idempotent: when ``out/manifest.jsonl`` exists and ``out/recipe.json`` has the same
    ``params``, nothing is regenerated and the stored recipe is returned (``skipped``).

    Manifest rows: ``id, audio, text, split, voice, dialect, variant, speed, pitch, gap,
    aug, aug_params, empty, speech_duration, lead_s, trail_s, duration, text_kind``
    (composed | natural | empty) plus, for test and
    dev rows, ``condition`` (one of TEST_CONDITIONS) and ``utt`` (shared by the conditions
    of one utterance).  ``aug`` is one of AUG_WEIGHTS (for test/dev rows the kind behind the
    condition, e.g. ``speed`` for ``tempo_slow``), or silence|noise for empty rows.
    ``aug_params`` holds the drawn parameters: ``snr_db``, ``color``, ``gain_db``, ``level``,
    ``rt60_s``/``drr_db``, ``n_talkers``/``talker_voices``/``talker_texts``,
    ``speed_factor`` (also on rows combined with speed perturbation), ``clip_level``.
    ``speed`` is the espeak-ng rate (words per minute), not the perturbation factor.
    """
    out = Path(out)
    params = corpus_params(
        n_train, n_test, seed, min_words, max_words, n_dev, skip_train_audio, natural
    )
    manifest = out / "manifest.jsonl"
    recipe_path = out / "recipe.json"
    if not force and manifest.exists() and recipe_path.exists():
        try:
            old = json.loads(recipe_path.read_text())
        except json.JSONDecodeError:
            old = {}
        if old.get("params") == params:
            old["skipped"] = True
            return old

    t0 = time.monotonic()
    split = textgen.split_train_test(
        n_train, n_test, seed, params["test_seed"], min_words, max_words,
        n_dev=n_dev, dev_seed=params["dev_seed"],
    )  # fmt: skip
    nat = params["natural"]
    extra = (
        running_text.natural_split(nat["train"], nat["test"], nat["dev"], seed)
        if any(nat[k] for k in ("train", "test", "dev"))
        else {"train": [], "test": [], "dev": []}
    )
    t_text = time.monotonic() - t0
    jobs = plan_corpus(
        [*split.train, *extra["train"]],
        [*split.test, *extra["test"]],
        seed,
        params["variants"],
        [*split.dev, *extra["dev"]],
        frozenset(s for v in extra.values() for s in v),
    )
    if skip_train_audio:
        jobs = [j for j in jobs if j["kind"] == "eval"]

    for stale in (manifest, recipe_path):
        stale.unlink(missing_ok=True)
    audio_dir = out / "audio"
    if audio_dir.exists():
        shutil.rmtree(audio_dir)
    audio_dir.mkdir(parents=True)

    t1 = time.monotonic()
    rows = _run_jobs(jobs, out, workers, progress)
    t_audio = time.monotonic() - t1

    tmp = manifest.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(manifest)

    recipe = {
        "params": params,
        "text_split": split.summary(),
        "counts": corpus_stats(rows),
        "timing_s": {
            "text": round(t_text, 2),
            "audio": round(t_audio, 2),
            "total": round(time.monotonic() - t0, 2),
            "workers": workers,
            "cpu_count": os.cpu_count(),
        },
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
    }
    tmp = recipe_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(recipe, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(recipe_path)
    recipe["skipped"] = False
    return recipe


OOD_SEED_OFFSET = 31_337  # the out-of-domain test set's voices and noise use seed + this


def build_ood_corpus(
    out: str | os.PathLike[str], n: int, seed: int, workers: int = 2, progress: bool = False
) -> dict[str, Any]:
    """A test-only corpus of ``n`` out-of-domain natural sentences
    (:func:`running_text.ood_clauses`, text the LM never reads), rendered under every
    TEST_CONDITIONS value like the main test split (``text_kind: ood``). Scoring only."""
    out = Path(out)
    sentences = running_text.ood_sample(n, seed)
    _, source = running_text.ood_clauses()
    params = {"recipe_version": RECIPE_VERSION, "ood": n, "seed": seed,
              "seed_offset": OOD_SEED_OFFSET, "source": source.__dict__,
              "espeak": espeak_version(), "variants": list(available_variants()),
              "test_conditions": list(TEST_CONDITIONS)}  # fmt: skip
    recipe_path = out / "recipe.json"
    if recipe_path.exists() and json.loads(recipe_path.read_text()).get("params") == params:
        return {**json.loads(recipe_path.read_text()), "skipped": True}
    jobs = plan_corpus([], sentences, seed + OOD_SEED_OFFSET, params["variants"])
    for job in jobs:
        job["text_kind"] = "ood"
    if (out / "audio").exists():
        shutil.rmtree(out / "audio")
    (out / "audio").mkdir(parents=True)
    t0 = time.monotonic()
    rows = _run_jobs(jobs, out, workers, progress)
    with (out / "manifest.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    recipe = {"params": params, "counts": corpus_stats(rows),
              "timing_s": {"total": round(time.monotonic() - t0, 2)}}  # fmt: skip
    recipe_path.write_text(json.dumps(recipe, ensure_ascii=False, indent=2) + "\n")
    return {**recipe, "skipped": False}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m modelbuild.synth",
        description="Generate the synthetic Vietnamese espeak-ng speech corpus.",
    )
    ap.add_argument("--out", required=True, help="output folder (e.g. data/corpus)")
    ap.add_argument("--n-train", type=int, default=12000, help="composed training sentences")
    ap.add_argument(
        "--n-test", type=int, default=300,
        help=f"test sentences (x{len(TEST_CONDITIONS)} conditions)",
    )  # fmt: skip
    ap.add_argument(
        "--n-dev", type=int, default=DEFAULT_N_DEV,
        help="dev (tuning) sentences from a third seed, rendered like the test ones",
    )  # fmt: skip
    ap.add_argument(
        "--skip-train-audio", action="store_true",
        help="same text split and plan, but write only the test and dev rows",
    )  # fmt: skip
    ap.add_argument(
        "--natural", type=int, nargs=3, default=list(DEFAULT_NATURAL),
        metavar=("TRAIN", "TEST", "DEV"),
        help="natural sentences (law codes, LibreOffice help; split by document) per split",
    )  # fmt: skip
    ap.add_argument(
        "--ood", type=int, default=0, metavar="N",
        help="instead: a test-only corpus of N out-of-domain natural sentences",
    )  # fmt: skip
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--min-words", type=int, default=4)
    ap.add_argument("--max-words", type=int, default=14)
    ap.add_argument("--force", action="store_true", help="regenerate even if up to date")
    a = ap.parse_args(argv)
    if a.ood:
        recipe = build_ood_corpus(a.out, a.ood, a.seed, a.workers, progress=True)
        c = recipe["counts"]
        print(f"{a.out}: {c['test_rows']} out-of-domain test rows, {c['hours_test']:.2f} h")
        return 0
    recipe = build_corpus(
        a.out, a.n_train, a.n_test, a.seed, a.workers, a.min_words, a.max_words,
        force=a.force, progress=True, n_dev=a.n_dev, skip_train_audio=a.skip_train_audio,
        natural=dict(zip(("train", "test", "dev"), a.natural, strict=True)),
        command=" ".join(["python -m modelbuild.synth", *(argv or sys.argv[1:])]),
    )  # fmt: skip
    if recipe.get("skipped"):
        print(f"{a.out}: up to date (recipe matches), skipped", file=sys.stderr)
    c, t = recipe["counts"], recipe["timing_s"]
    print(
        f"{a.out}: {c['rows']} rows ({c['train_rows']} train incl. {c['train_empty_rows']} "
        f"empty, {c['test_rows']} test, {c['dev_rows']} dev), {c['hours_total']:.2f} h "
        f"(train {c['hours_train']:.2f} h), generated in {t['total']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
