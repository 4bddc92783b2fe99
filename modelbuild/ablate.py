"""What each lever buys: heads trained on one encoder cache, same epochs, same test split.

    python -m modelbuild.ablate --cache cache/encoded --epochs 3 \\
        [--only half-data conv3-dil2] [--out data/ablation] [--final serve_app/assets/head]

Every variant is `python -m modelbuild.train fit ... --score-test` in its own
process (its head lands in OUT/NAME, its figures in OUT/NAME/manifest.json): dev CER after
each epoch, greedy test CER once at the end. Choices are made on dev; the test column is
reported only. `--final DIR` adds the shipped head (trained with the chosen levers and more
epochs, also with `--score-test`) as the last row. Prints the table as Markdown and writes
OUT/ablation.json and OUT/ablation.md.
The cache must hold the train, dev and test splits (`train encode --splits train dev test`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

# name -> (what it changes, extra `fit` arguments). The head levers are measured on half the
# rows (each run costs half as much); quarter -> half -> full rows is the data lever.
HALF = ["--train-fraction", "0.5"]
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "quarter-data": ("mix 2-6, 2 conv blocks, a quarter of the rows", ["--train-fraction", "0.25"]),
    "half-data": ("mix 2-6, 2 conv blocks (the recipe before), half the rows", HALF),
    "full-data": ("the same head, all the rows (2x data)", []),
    "conv3": ("half the rows, a third conv block (13 frames)", [*HALF, "--conv-blocks", "3"]),
    "conv3-dil2": (
        "half the rows, 3 conv blocks dilated 1/2/4 (29 frames)",
        [*HALF, "--conv-blocks", "3", "--conv-dilation", "2"],
    ),
    "mix1-6": (
        "half the rows, layer mix 1-6 (wider)",
        [*HALF, "--mix-layers", "1", "2", "3", "4", "5", "6"],
    ),
}
TABLE_GROUPS = (
    "all",
    "text=composed",
    "text=natural",
    "condition=clean",
    "condition=noise",
    "condition=reverb",
    "condition=babble",
)


def run_variant(name: str, cache: Path, corpus: Path, out: Path, epochs: int) -> dict:
    target = out / name
    manifest = target / "manifest.json"
    if manifest.exists():
        print(f"{name}: done before, reading {manifest}", flush=True)
    else:
        _, extra = VARIANTS[name]
        cmd = [
            sys.executable, "-m", "modelbuild.train", "fit",
            "--cache", str(cache), "--corpus", str(corpus), "--out", str(target),
            "--epochs", str(epochs), "--score-test", *extra,
        ]  # fmt: skip
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return json.loads(manifest.read_text())


def row(name: str, manifest: dict, change: str | None = None) -> dict:
    last = manifest["history"][-1]
    return {
        "variant": name,
        "change": change or VARIANTS[name][0],
        "epochs": len(manifest["history"]),
        "train_hours": manifest.get("train_hours"),
        "train_minutes": round(manifest["train_seconds"] / 60, 1),
        "dev_cer_by_epoch": [round(h["dev"]["all"]["cer"], 4) for h in manifest["history"]],
        "dev": {g: last["dev"][g]["cer"] for g in TABLE_GROUPS if g in last["dev"]},
        "test": {g: manifest["test"][g]["cer"] for g in TABLE_GROUPS if g in manifest["test"]},
        "test_wer": manifest["test"]["all"]["wer"],
    }


def markdown(rows: list[dict]) -> str:
    head = ["variant", "change", "train h", "min", "dev CER by epoch"]
    head += [f"test {g.split('=')[-1]}" for g in TABLE_GROUPS] + ["test WER"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [
            r["variant"],
            r["change"],
            f"{r['train_hours']:.1f}",
            f"{r['train_minutes']:.0f}",
            " / ".join(f"{100 * c:.1f}" for c in r["dev_cer_by_epoch"]),
        ]
        cells += [f"{100 * r['test'][g]:.2f}%" if g in r["test"] else "" for g in TABLE_GROUPS]
        cells.append(f"{100 * r['test_wer']:.1f}%")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m modelbuild.ablate")
    p.add_argument("--cache", type=Path, default=Path("cache/encoded"))
    p.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    p.add_argument("--out", type=Path, default=Path("data/ablation"))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--only", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--final", type=Path, default=None, help="a finished head to add as a row")
    args = p.parse_args(argv)
    rows = [
        row(name, run_variant(name, args.cache, args.corpus, args.out, args.epochs))
        for name in args.only
    ]
    if args.final:
        final = json.loads((args.final / "manifest.json").read_text())
        head = final["fit"]["head"]
        change = (
            f"shipped: all rows, {len(final['history'])} epochs, mix "
            f"{head['mix_layers'][0]}-{head['mix_layers'][-1]}, {head['conv_blocks']} conv "
            f"blocks, dilation {head.get('conv_dilation', 1)}"
        )
        rows.append(row("final", final, change))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    table = markdown(rows)
    (args.out / "ablation.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
