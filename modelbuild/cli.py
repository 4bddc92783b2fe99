"""`python -m modelbuild` (and `vi-asr build-model|build-lm|train-head|convert`): build the
default bundle and its LM, train the CTC head, convert a PhoWhisper-CTC checkpoint. Imports
torch; `serve_app` never imports this package.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from modelbuild.quant import DEFAULT_QUANT_RECIPE, RECIPES
from serve_app.cli import BUILD_COMMANDS, DEFAULT_MODEL_DIR, run_command

# How the shipped head (serve_app/assets/head) was trained, in two runs: `vi-asr train-head`
# repeats the first (3 epochs from random weights); the second is `vi-asr train-head
# --init-from <first head> --epochs 2 --lr 0.001` (a warm restart of the cosine schedule).
TRAIN_HEAD_RECIPE = {
    "epochs": 3,
    "conv_blocks": 3,
    "conv_dilation": 2,
    "mix_layers": [2, 3, 4, 5, 6],
    "lr": 2e-3,
}


def _cmd_build_model(args: argparse.Namespace) -> int:
    from modelbuild.build import build_default_bundle

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
    from modelbuild import lm

    argv = ["--model", str(args.model), "--text", *map(str, args.text)]
    return lm.main([*argv, "--only-text"] if args.only_text else argv)


def _cmd_train_head(args: argparse.Namespace) -> int:
    from modelbuild import synth, train
    from modelbuild.encoder_cache import read_manifest

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
    # More training speech: a train-only corpus per extra seed (same counts, other sentences,
    # voices and augmentations; no dev/test rows). Natural clauses come from the training
    # documents only; a composed sentence of another seed could still equal a held-out one
    # (a seed equal to the main seed's test or dev seed would repeat them all), so any
    # overlap with the main corpus's dev/test text stops the run before training.
    extra: list[str] = []
    held_out = {r["text"] for r in read_manifest(args.corpus) if r["split"] != "train"}
    for seed in args.more_train:
        if seed == args.seed:
            raise SystemExit(f"--more-train {seed}: that is the main corpus's seed")
        corpus_x, cache_x = more_train_paths(args.corpus, args.cache, seed)
        synth.main(
            [
                *("--out", str(corpus_x), "--n-train", str(args.n_train)),
                *("--n-test", "0", "--n-dev", "0", "--natural", str(args.natural[0]), "0", "0"),
                *("--seed", str(seed), "--workers", str(args.workers)),
            ]
        )
        leaked = held_out & {r["text"] for r in read_manifest(corpus_x) if not r["empty"]}
        if leaked:
            raise SystemExit(f"--more-train {seed}: {len(leaked)} dev/test sentences in it")
        train.main(
            ["encode", "--corpus", str(corpus_x), "--cache", str(cache_x), "--splits", "train"]
        )
        extra.append(str(cache_x))
    train.main(
        [
            *("fit", *cache, "--corpus", str(args.corpus), "--out", str(args.out)),
            *("--epochs", str(args.epochs), "--conv-blocks", str(args.conv_blocks)),
            *("--conv-dilation", str(args.conv_dilation)),
            *("--mix-layers", *map(str, args.mix_layers)),
            "--score-test",
            *(["--stop-after-steps", str(args.stop_after_steps)] if args.stop_after_steps else []),
            *(["--init-from", str(args.init_from)] if args.init_from else []),
            *("--lr", str(args.lr)),
            *(["--extra-train", *extra] if extra else []),
        ]
    )
    return 0


def more_train_paths(corpus: Path, cache: Path, seed: int) -> tuple[Path, Path]:
    """Where `train-head --more-train SEED` keeps that seed's corpus and encoder cache."""
    return corpus.with_name(f"{corpus.name}-s{seed}"), cache.with_name(f"{cache.name}-s{seed}")


def _cmd_convert(args: argparse.Namespace) -> int:
    from modelbuild.convert import convert_checkpoint

    out = convert_checkpoint(
        args.checkpoint, args.tokenizer, args.out, blank_id=args.blank_id, int8=args.int8
    )
    print(f"converted {args.checkpoint} -> {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m modelbuild", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build-model", help=BUILD_COMMANDS["build-model"])
    b.add_argument("--out", type=Path, default=DEFAULT_MODEL_DIR)
    b.add_argument("--force", action="store_true")
    b.add_argument("--no-int8", action="store_true")
    b.add_argument("--quant-recipe", default=DEFAULT_QUANT_RECIPE, choices=sorted(RECIPES))
    b.add_argument("--no-lm", action="store_true", help="no lexicon/LM: greedy decoding")
    b.set_defaults(func=_cmd_build_model)

    lm = sub.add_parser("build-lm", help=BUILD_COMMANDS["build-lm"])
    lm.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    lm.add_argument("--text", type=Path, nargs="*", default=[], help="running text, 1/line")
    lm.add_argument("--only-text", action="store_true", help="only --text, no built-in sources")
    lm.set_defaults(func=_cmd_build_lm)

    t = sub.add_parser("train-head", help=BUILD_COMMANDS["train-head"])
    t.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    t.add_argument("--cache", type=Path, default=Path("cache/encoded"))
    t.add_argument("--out", type=Path, default=Path("serve_app/assets/head"))
    t.add_argument("--n-train", type=int, default=6000, help="composed-text training sentences")
    t.add_argument("--n-test", type=int, default=300)
    t.add_argument("--n-dev", type=int, default=300, help="dev sentences: per-epoch scores")
    t.add_argument(
        "--natural",
        type=int,
        nargs=3,
        default=[6000, 300, 300],
        metavar=("TRAIN", "TEST", "DEV"),
        help="natural sentences per split",
    )
    t.add_argument("--seed", type=int, default=1234)
    t.add_argument("--workers", type=int, default=2)
    t.add_argument("--epochs", type=int, default=TRAIN_HEAD_RECIPE["epochs"])
    t.add_argument("--conv-blocks", type=int, default=TRAIN_HEAD_RECIPE["conv_blocks"])
    t.add_argument("--conv-dilation", type=int, default=TRAIN_HEAD_RECIPE["conv_dilation"])
    t.add_argument("--mix-layers", type=int, nargs="+", default=TRAIN_HEAD_RECIPE["mix_layers"])
    t.add_argument("--lr", type=float, default=TRAIN_HEAD_RECIPE["lr"], help="peak learning rate")
    t.add_argument(
        "--init-from", type=Path, default=None, metavar="HEAD_DIR",
        help="warm start: train on from this saved head (same architecture)",
    )  # fmt: skip
    t.add_argument(
        "--stop-after-steps", type=int, default=None, metavar="N",
        help="train N steps, checkpoint and exit 3; the same command again resumes",
    )  # fmt: skip
    t.add_argument(
        "--more-train", type=int, nargs="+", default=[], metavar="SEED",
        help="also train on a train-only corpus per SEED (same counts, other sentences): "
        "<corpus>-s<SEED>, cached in <cache>-s<SEED>",
    )  # fmt: skip
    t.set_defaults(func=_cmd_train_head)

    c = sub.add_parser("convert", help=BUILD_COMMANDS["convert"])
    c.add_argument("checkpoint", type=Path)
    c.add_argument("--tokenizer", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--blank-id", type=int, default=None)
    c.add_argument("--int8", action="store_true")
    c.set_defaults(func=_cmd_convert)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))
