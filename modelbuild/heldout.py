"""CER/WER of a bundle on the corpus's held-out test split, per condition and dialect.

    python -m modelbuild.heldout --corpus data/corpus --model models/default \
        --decoder greedy beam

Each recording is encoded once per precision and decoded with every `--decoder` (greedy,
and beam with the bundle's tuned settings). Writes `test_<condition>.jsonl` manifests next
to the corpus (usable with `vi-asr eval`) and a JSON report. Test sentences never occur in
training (sentence-level split); decoder settings are tuned on the dev split
(`python -m modelbuild.tune_decoder`), never here.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serve_app.decoding import DecoderSettings
from serve_app.evaluation import evaluate, normalize_text
from serve_app.transcriber import Decoder, Prepared, Transcriber

BATCH = 32  # recordings encoded together; results do not depend on it

# Spellings that espeak-ng's Vietnamese voices pronounce identically (`espeak-ng -x`):
# d/gi/r -> z (north), s/x, ch/tr, c/k/q, gh/g, ngh/ng, and the southern/central finals
# -n/-ng, -t/-c. No acoustic model can tell them apart without a language model, so the
# "folded" CER below scores them as equal to show how much error is spelling ambiguity.
_INITIAL_FOLDS = (
    ("ngh", "ng"),
    ("gh", "g"),
    ("gi", "z"),
    ("tr", "ch"),
    ("d", "z"),
    ("r", "z"),
    ("x", "s"),
    ("k", "c"),
    ("q", "c"),
)
_FINAL_FOLDS = (("nh", "nh"), ("ng", "n"), ("ch", "ch"), ("c", "t"))


def _fold_syllable(syllable: str) -> str:
    for src, dst in _INITIAL_FOLDS:
        if syllable.startswith(src):
            syllable = dst + syllable[len(src) :]
            break
    for src, dst in _FINAL_FOLDS:
        if syllable.endswith(src):
            syllable = syllable[: -len(src)] + dst
            break
    return syllable


def fold_homophones(text: str) -> str:
    """Map each syllable to one spelling per espeak-ng homophone class (scoring only)."""
    return " ".join(_fold_syllable(s) for s in normalize_text(text).split())


def split_rows(corpus: Path, split: str = "test", every: int = 1) -> list[dict]:
    """The rows of one split, each with `path`: its audio file. `every` > 1 keeps every
    Nth row of each condition (a quicker, still balanced, estimate)."""
    rows = [json.loads(x) for x in (corpus / "manifest.jsonl").read_text().splitlines() if x]
    seen: dict[str, int] = defaultdict(int)
    out = []
    for r in rows:
        if r["split"] != split:
            continue
        seen[r["condition"]] += 1
        if (seen[r["condition"]] - 1) % every == 0:
            out.append({**r, "path": str(corpus / r["audio"])})
    return out


def test_rows(corpus: Path) -> list[dict]:
    return split_rows(corpus, "test")


def write_condition_manifests(corpus: Path) -> dict[str, Path]:
    by_condition: dict[str, list[str]] = defaultdict(list)
    for r in test_rows(corpus):
        by_condition[r["condition"]].append(
            json.dumps({"audio": r["audio"], "text": r["text"]}, ensure_ascii=False)
        )
    paths = {}
    for condition, lines in by_condition.items():
        paths[condition] = corpus / f"test_{condition}.jsonl"
        paths[condition].write_text("\n".join(lines) + "\n")
    return paths


@dataclass(frozen=True)
class Encoded:
    """Rows of a split after the preprocessor and encoder: decode them as often as needed."""

    rows: list[dict]
    prepared: list[Prepared]
    log_probs: list[list[np.ndarray | None]]
    encode_seconds: float  # wall time
    encode_cpu_seconds: float  # process CPU time: every ONNX Runtime thread

    @property
    def audio_seconds(self) -> float:
        return sum(p.duration_s for p in self.prepared)


def encode_rows(transcriber: Transcriber, rows: list[dict]) -> Encoded:
    prepared: list[Prepared] = []
    log_probs: list[list[np.ndarray | None]] = []
    seconds = cpu_seconds = 0.0
    for b in range(0, len(rows), BATCH):
        batch = [transcriber.preprocessor(Path(r["path"]).read_bytes()) for r in rows[b:][:BATCH]]
        t0, c0 = time.perf_counter(), time.process_time()
        per_rec = transcriber.encode_prepared(batch)
        seconds += time.perf_counter() - t0
        cpu_seconds += time.process_time() - c0
        prepared += batch
        log_probs += per_rec
    return Encoded(rows, prepared, log_probs, seconds, cpu_seconds)


def decode_encoded(decoder: Decoder, encoded: Encoded) -> tuple[list[str], float]:
    """Hypotheses and the decoding CPU seconds (process time, one thread)."""
    t0 = time.process_time()
    hyps = [decoder(p, lp).text for p, lp in zip(encoded.prepared, encoded.log_probs, strict=True)]
    return hyps, time.process_time() - t0


def score(rows: Sequence[dict], hyps: Sequence[str]) -> dict:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        kind = r.get("text_kind", "composed")
        groups[f"condition={r['condition']}"].append(i)
        groups[f"text={kind}"].append(i)
        groups[f"text={kind},condition={r['condition']}"].append(i)
        if r["condition"] == "clean":
            groups[f"clean,dialect={r['dialect']}"].append(i)
    groups["all"] = list(range(len(rows)))
    report: dict = {}
    for name, idxs in sorted(groups.items()):
        result = evaluate([rows[i]["text"] for i in idxs], [hyps[i] for i in idxs])
        folded = evaluate(
            [fold_homophones(rows[i]["text"]) for i in idxs],
            [fold_homophones(hyps[i]) for i in idxs],
        )
        report[name] = {
            "cer": round(result.cer, 4),
            "wer": round(result.wer, 4),
            "cer_homophones_folded": round(folded.cer, 4),
            "wer_homophones_folded": round(folded.wer, 4),
            "n": len(idxs),
        }
    return report


def decoder_variants(transcriber: Transcriber, names: Sequence[str]) -> dict[str, DecoderSettings]:
    """ "greedy", and "beam" = the bundle's own beam settings (greedy if it has no LM)."""
    bundle_settings = transcriber.bundle.config.decoder_settings
    out = {}
    for name in names:
        if name == "greedy":
            out[name] = bundle_settings.replace(kind="greedy")
        elif name == "beam":
            out[name] = bundle_settings.replace(kind="beam")
        else:
            raise ValueError(f"unknown decoder {name!r}: use greedy or beam")
    return out


def score_bundle(
    corpora: Sequence[Path],
    model: Path,
    precision: str,
    decoders: Sequence[str] = ("greedy",),
    split: str = "test",
    every: int = 1,
) -> list[dict]:
    transcriber = Transcriber(model, precision=precision)
    rows = [r for corpus in corpora for r in split_rows(corpus, split, every)]
    encoded = encode_rows(transcriber, rows)
    reports = []
    for name, settings in decoder_variants(transcriber, decoders).items():
        transcriber.decoder.reconfigure(settings)
        hyps, decode_s = decode_encoded(transcriber.decoder, encoded)
        rows = encoded.rows
        report: dict = {
            "model": str(model),
            "precision": precision,
            "split": split,
            "decoder": name,
            "decoder_settings": settings.to_dict(),
            "n": len(rows),
            "every": every,
            **score(rows, hyps),
            "encode_ms_per_audio_s": round(
                1000 * encoded.encode_seconds / encoded.audio_seconds, 2
            ),
            "encode_cpu_ms_per_audio_s": round(
                1000 * encoded.encode_cpu_seconds / encoded.audio_seconds, 2
            ),
            "decode_cpu_ms_per_audio_s": round(1000 * decode_s / encoded.audio_seconds, 3),
        }
        report["examples"] = [
            {
                "ref": rows[i]["text"],
                "hyp": hyps[i],
                "condition": rows[i]["condition"],
                "text_kind": rows[i].get("text_kind", "composed"),
            }
            for i in range(0, len(rows), max(1, len(rows) // 12))
        ]
        reports.append(report)
    return reports


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m modelbuild.heldout")
    p.add_argument(
        "--corpus",
        type=Path,
        nargs="+",
        default=[Path("data/corpus")],
        help="corpora whose test rows are scored together (e.g. data/corpus data/corpus_ood)",
    )
    p.add_argument("--model", type=Path, nargs="+", default=[Path("models/default")])
    p.add_argument("--precision", nargs="+", default=["fp32", "int8"])
    p.add_argument("--decoder", nargs="+", default=["greedy", "beam"], choices=["greedy", "beam"])
    p.add_argument("--out", type=Path, default=Path("data/heldout_results.json"))
    p.add_argument("--every", type=int, default=1, help="score every Nth row per condition")
    p.add_argument(
        "--split",
        default="test",
        choices=["test", "dev"],
        help="dev: for choosing between candidates (never choose on test)",
    )
    p.add_argument(
        "--update-manifest",
        type=Path,
        default=None,
        help="head manifest.json to record the figures in (its `measured` field)",
    )
    args = p.parse_args(argv)
    for corpus in args.corpus:
        write_condition_manifests(corpus)
    reports = []
    for model in args.model:
        for precision in args.precision:
            for report in score_bundle(
                args.corpus, model, precision, args.decoder, split=args.split, every=args.every
            ):
                reports.append(report)
                summary = {k: v for k, v in report.items() if k != "examples"}
                print(json.dumps(summary, ensure_ascii=False), flush=True)
    args.out.write_text(json.dumps(reports, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")
    if args.update_manifest:
        record_in_manifest(args.update_manifest, reports)


def record_in_manifest(manifest_path: Path, reports: list[dict]) -> None:
    """Store the headline figures per precision in the head's manifest (`measured`)."""
    manifest = json.loads(manifest_path.read_text())
    measured = manifest.setdefault("measured", {})
    for report in reports:
        measured[f"{report['precision']}_{report['decoder']}"] = {
            "command": "python -m modelbuild.heldout",
            **{k: v for k, v in report.items() if k not in ("examples", "model")},
        }
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
