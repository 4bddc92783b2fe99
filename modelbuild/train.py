"""Train the Vietnamese CTC head over the frozen Whisper-base encoder.

Two steps, both resumable:

1. `encode` (`modelbuild/encoder_cache.py`): run the frozen encoder once over the synthetic
   corpus and cache every layer a head may read (LayerNorm-ed, fp16, one memory-mapped
   array per split). Clips were padded to a multiple of 0.5 s, so equal-length clips batch
   without artificial padding.
2. `fit`: train only the head on the cache with CTC loss and evaluate greedy CER/WER on the
   dev split after every epoch; checkpointed, so an interrupted run resumes. The test split
   is never used for a choice: `--score-test` scores the finished head on it once (the
   ablation table, `modelbuild/ablate.py`), and the shipped bundle is scored by
   `python -m modelbuild.heldout`. Saves the head (npz + json) with its manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from modelbuild.encoder_cache import CACHE_LAYERS, CachedSplit, cache_corpus, encode_corpus
from modelbuild.model import LayerMixConvHead, SeedHead
from serve_app.ctc import greedy_decode
from serve_app.evaluation import cer, wer
from serve_app.tokenizer import CharVocabulary

MIX_LAYERS = (2, 3, 4, 5, 6)  # 1-based encoder layers the default head reads


@dataclass(frozen=True)
class HeadConfig:
    kind: str = "layermix-conv-mlp"  # or "mlp" (the seed head on the last layer)
    hidden: int = 512
    mix_layers: tuple[int, ...] = MIX_LAYERS
    conv_kernel: int = 5
    conv_blocks: int = 2  # 2 blocks of k=5 (9 frames, 180 ms of context): 15.6% -> 13.7% CER
    conv_dilation: int = 1  # block k dilates by this ** k

    def build(self, d_model: int, vocab_size: int) -> torch.nn.Module:
        if self.kind == "mlp":
            return SeedHead(d_model, self.hidden, vocab_size)
        if self.kind == "layermix-conv-mlp":
            return LayerMixConvHead(
                d_model,
                self.hidden,
                vocab_size,
                self.mix_layers,
                self.conv_kernel,
                self.conv_blocks,
                self.conv_dilation,
            )
        raise ValueError(f"unknown head kind {self.kind!r}: use 'mlp' or 'layermix-conv-mlp'")

    @property
    def cached_layers(self) -> tuple[int, ...]:
        return self.mix_layers if self.kind != "mlp" else (6,)


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 5
    lr: float = 2e-3
    weight_decay: float = 1e-2
    batch_frames: int = 6000  # encoder frames per step (2 min of audio)
    seed: int = 1234
    threads: int = 2
    train_fraction: float = 1.0  # keep this share of the training rows (the data ablation)
    head: HeadConfig = field(default_factory=HeadConfig)
    init_head_sha256: str = ""  # warm start: the head.npz training starts from ("": random)
    extra_train: tuple[str, ...] = ()  # caches whose train splits are trained on too


# --------------------------------------------------------------------------- fit


def _head_inputs(head_cfg: HeadConfig, feats: list[torch.Tensor]) -> list[torch.Tensor]:
    """Put cached layers where the head expects encoder layer k (1-based) at index k-1."""
    layers: list[torch.Tensor] = [feats[0]] * max(head_cfg.cached_layers)
    for pos, k in enumerate(head_cfg.cached_layers):
        layers[k - 1] = feats[pos]
    return layers


def _forward_cached(head: torch.nn.Module, cfg: HeadConfig, feats: list[torch.Tensor]):
    b, t, _ = feats[0].shape
    mask = torch.ones(b, t)
    if isinstance(head, LayerMixConvHead):
        # The cache already holds LayerNorm-ed layers; mix them without normalising twice.
        return head.forward_mixed(head.mix_normalized(feats), mask)
    return head(_head_inputs(cfg, feats), mask)


@torch.no_grad()
def evaluate(head, cfg: HeadConfig, split: CachedSplit, vocab: CharVocabulary) -> dict:
    head.eval()
    pos = [split.layers.index(k) for k in cfg.cached_layers]
    groups: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for idxs in split.batches(20_000, random.Random(0)):
        logp = _forward_cached(head, cfg, split.features(idxs, pos)).log_softmax(-1).numpy()
        for j, i in enumerate(idxs):
            tokens, _, _ = greedy_decode(np.ascontiguousarray(logp[j]), vocab.blank_id)
            row = split.rows[i]
            for name in ("all", f"condition={row['condition']}", f"text={row['text_kind']}"):
                groups[name][0].append(row["text"])
                groups[name][1].append(vocab.decode(tokens.tolist()))
    head.train()
    return {
        name: {"cer": round(cer(r, h), 5), "wer": round(wer(r, h), 5), "n": len(r)}
        for name, (r, h) in sorted(groups.items())
    }


def head_sha256(head_dir: Path) -> str:
    return hashlib.sha256((head_dir / "head.npz").read_bytes()).hexdigest()


def load_init_weights(head: torch.nn.Module, cfg: FitConfig, head_dir: Path) -> None:
    """Start from a saved head of the same architecture (`vi-asr train-head --init-from`)."""
    spec = json.loads((head_dir / "head.json").read_text())
    want = json.loads(json.dumps(asdict(cfg.head)))
    if {k: spec.get(k) for k in want} != want:
        raise ValueError(f"{head_dir} holds another architecture: {spec}, not {want}")
    if head_sha256(head_dir) != cfg.init_head_sha256:
        raise ValueError(f"{head_dir}/head.npz is not the head this recipe starts from")
    head.load_state_dict(read_head_weights(head_dir))


def checkpoint_path(cache_dir: Path, cfg: FitConfig) -> Path:
    """Where `fit` keeps its checkpoint: one file per recipe, next to the cache it reads."""
    digest = hashlib.sha1(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir / f"fit-{digest}.ckpt"


class TrainingStopped(Exception):
    """`fit` stopped after `max_steps` steps; the checkpoint holds everything done so far."""


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a run killed while saving keeps the previous checkpoint


def fit(
    cache_dir: Path,
    cfg: FitConfig,
    vocab: CharVocabulary,
    checkpoint: Path | None = None,
    checkpoint_every: int = 100,
    max_steps: int | None = None,
    init: Path | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Train the head. With `checkpoint`, the whole training state (weights, optimizer,
    schedule, both RNGs, the epoch's batch order and position, history) is saved every
    `checkpoint_every` steps and after every epoch, and a later call with the same recipe
    resumes from it: the result is the same as one uninterrupted run. `max_steps` stops this
    call (raising TrainingStopped) after that many steps, checkpoint saved. `init`: a saved
    head to start from instead of random weights (its sha256 is `cfg.init_head_sha256`)."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    train = CachedSplit.trains([cache_dir, *map(Path, cfg.extra_train)], cfg.train_fraction)
    dev = CachedSplit(cache_dir, "dev")
    pos = [train.layers.index(k) for k in cfg.head.cached_layers]
    d_model = train.data.shape[-1]
    head = cfg.head.build(d_model, vocab.size)
    if cfg.init_head_sha256:
        if init is None:
            raise ValueError("this recipe starts from a saved head: pass its folder as init")
        load_init_weights(head, cfg, init)
    targets = [torch.tensor(vocab.encode(r["text"]), dtype=torch.long) for r in train.rows]
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(train.batches(cfg.batch_frames, random.Random(0)))
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, total // 30)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
        ),
    )
    history: list[dict] = []
    step, start_epoch, skip, losses, elapsed = 0, 0, 0, [], 0.0
    epoch_rng = rng.getstate()
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        if state["fit"] != asdict(cfg):
            raise ValueError(f"{checkpoint} was written for another recipe: {state['fit']}")
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["torch_rng"])
        epoch_rng, start_epoch, skip = state["epoch_rng"], state["epoch"], state["step_in_epoch"]
        step, losses, history, elapsed = (
            state["step"],
            state["losses"],
            state["history"],
            state["seconds"],
        )
        print(f"  resumed from {checkpoint}: epoch {start_epoch + 1}, step {step}/{total}")

    def save(epoch: int, step_in_epoch: int) -> None:
        if checkpoint is None:
            return
        _save_checkpoint(
            checkpoint,
            {
                "fit": asdict(cfg), "head": head.state_dict(), "opt": opt.state_dict(),
                "sched": sched.state_dict(), "torch_rng": torch.get_rng_state(),
                "epoch_rng": epoch_rng, "epoch": epoch, "step_in_epoch": step_in_epoch,
                "step": step, "losses": losses, "history": history,
                "seconds": elapsed + time.time() - t0,
            },
        )  # fmt: skip

    t0, stepped = time.time(), 0
    for epoch in range(start_epoch, cfg.epochs):
        # The epoch's batch order comes from the RNG state at its start, kept in the
        # checkpoint, so a resumed epoch replays the same order and skips the steps done.
        rng.setstate(epoch_rng)
        batches = train.batches(cfg.batch_frames, rng)
        for in_epoch, idxs in enumerate(batches):
            if in_epoch < skip:
                continue
            feats = train.features(idxs, pos)
            logp = _forward_cached(head, cfg.head, feats).log_softmax(-1)
            tgt = [targets[i] for i in idxs]
            loss = F.ctc_loss(
                logp.transpose(0, 1),
                torch.cat(tgt),
                torch.full((len(idxs),), logp.shape[1], dtype=torch.long),
                torch.tensor([len(t) for t in tgt]),
                blank=vocab.blank_id,
                zero_infinity=True,
            )
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 5.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
            stepped += 1
            if step % 50 == 0:
                print(
                    f"  step {step}/{total} loss {np.mean(losses[-50:]):.3f} "
                    f"({elapsed + time.time() - t0:.0f} s)",
                    flush=True,
                )
            if in_epoch + 1 < len(batches) and (
                step % checkpoint_every == 0 or stepped == max_steps
            ):
                save(epoch, in_epoch + 1)
                if stepped == max_steps:
                    raise TrainingStopped(f"stopped after {stepped} steps ({step}/{total})")
        skip = 0
        scores = evaluate(head, cfg.head, dev, vocab)
        history.append(
            {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)),
                "seconds": round(elapsed + time.time() - t0, 1),
                "dev": scores,
            }
        )
        print(json.dumps(history[-1]), flush=True)
        losses, epoch_rng = [], rng.getstate()
        save(epoch + 1, 0)
        if stepped == max_steps and epoch + 1 < cfg.epochs:
            raise TrainingStopped(f"stopped after {stepped} steps ({step}/{total})")
    return head.eval(), {
        "train_rows": len(train.rows),
        "train_hours": round(train.hours, 3),
        "history": history,
        "train_seconds": round(elapsed + time.time() - t0, 1),
    }


def score_test(head: torch.nn.Module, cfg: HeadConfig, cache_dir: Path) -> dict:
    """Greedy CER/WER of a finished head on the cached test split: reported, never used to
    choose anything (choices use the dev split)."""
    return evaluate(head, cfg, CachedSplit(cache_dir, "test"), CharVocabulary.vietnamese())


def read_head_weights(head_dir: Path) -> dict[str, torch.Tensor]:
    """The state dict `save_head` wrote (float16 on disk), widened back to float32."""
    with np.load(head_dir / "head.npz") as arrays:
        return {k: torch.from_numpy(arrays[k].astype(np.float32)) for k in arrays.files}


def save_head(
    head: torch.nn.Module, cfg: FitConfig, vocab: CharVocabulary, out: Path, manifest: dict
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # float16 halves the committed file; the bundle build widens it back to float32.
    arrays = {k: v.detach().cpu().numpy().astype(np.float16) for k, v in head.state_dict().items()}
    np.savez(out / "head.npz", **arrays)
    (out / "head.json").write_text(
        json.dumps({**asdict(cfg.head), "vocab_size": vocab.size}, indent=2) + "\n"
    )
    (out / "vocab.json").write_text(json.dumps(vocab.symbols, ensure_ascii=False) + "\n")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m modelbuild.train")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encode")
    e.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    e.add_argument("--cache", type=Path, default=Path("cache/encoded"))
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--splits", nargs="+", default=["train", "dev"], help="also: test")
    f = sub.add_parser("fit")
    f.add_argument("--cache", type=Path, default=Path("cache/encoded"))
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--kind", default="layermix-conv-mlp")
    f.add_argument("--epochs", type=int, default=FitConfig.epochs)
    f.add_argument("--hidden", type=int, default=HeadConfig.hidden)
    f.add_argument("--conv-blocks", type=int, default=HeadConfig.conv_blocks)
    f.add_argument("--conv-kernel", type=int, default=HeadConfig.conv_kernel)
    f.add_argument("--conv-dilation", type=int, default=HeadConfig.conv_dilation)
    f.add_argument("--mix-layers", type=int, nargs="+", default=list(MIX_LAYERS))
    f.add_argument("--train-fraction", type=float, default=FitConfig.train_fraction)
    f.add_argument("--extra-train", type=Path, nargs="+", default=[], metavar="CACHE_DIR",
                   help="train on these caches' train splits too")  # fmt: skip
    f.add_argument("--score-test", action="store_true", help="score the head on the test cache")
    f.add_argument("--lr", type=float, default=FitConfig.lr)
    f.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    f.add_argument(
        "--checkpoint-every", type=int, default=100,
        help="steps between checkpoints (also saved after every epoch); a rerun of the same "
        "recipe resumes from <cache>/fit-<recipe hash>.ckpt",
    )  # fmt: skip
    f.add_argument(
        "--stop-after-steps", type=int, default=None, metavar="N",
        help="train N steps, checkpoint and exit 3 (train in slices; rerun to go on)",
    )  # fmt: skip
    f.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    f.add_argument(
        "--init-from", type=Path, default=None, metavar="HEAD_DIR",
        help="start from this saved head (same architecture) instead of random weights",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.cmd == "encode":
        encode_corpus(args.corpus, args.cache, CACHE_LAYERS, args.threads, tuple(args.splits))
        return
    head_cfg = HeadConfig(
        kind=args.kind,
        hidden=args.hidden,
        conv_blocks=args.conv_blocks,
        conv_kernel=args.conv_kernel,
        conv_dilation=args.conv_dilation,
        mix_layers=tuple(args.mix_layers),
    )
    init = args.init_from
    cfg = FitConfig(
        epochs=args.epochs,
        lr=args.lr,
        train_fraction=args.train_fraction,
        extra_train=tuple(str(d) for d in args.extra_train),
        head=head_cfg,
        init_head_sha256=head_sha256(init) if init else "",
    )
    # What the warm start was: its recipe and dev figures, for the new head's manifest.
    previous = json.loads((init / "manifest.json").read_text()) if init else {}
    vocab = CharVocabulary.vietnamese()
    ckpt = checkpoint_path(args.cache, cfg)
    if args.fresh:
        ckpt.unlink(missing_ok=True)
    try:
        head, report = fit(
            args.cache, cfg, vocab, ckpt, args.checkpoint_every, args.stop_after_steps, init
        )
    except TrainingStopped as stop:
        print(f"{stop}; checkpoint {ckpt}: run the same command again to go on")
        raise SystemExit(3) from None
    if args.score_test:
        report["test"] = score_test(head, head_cfg, args.cache)
    recipe_path = args.corpus / "recipe.json"
    recipe = json.loads(recipe_path.read_text()) if recipe_path.exists() else {}
    manifest = {
        "fit": asdict(cfg),
        "corpus_summary": {
            "command": recipe.get("command"),
            "counts": recipe.get("counts"),
            "text_split": recipe.get("text_split"),
        },
        "corpus_recipe": recipe.get("params"),
        # Supplementary training corpora (--extra-train): each cache's corpus command and counts.
        "extra_train_corpora": [cache_corpus(Path(d)) for d in cfg.extra_train],
        **report,
    }
    if init:
        manifest["init"] = {
            "head_sha256": cfg.init_head_sha256,
            "fit": previous.get("fit"),
            "history": previous.get("history"),
            "init": previous.get("init"),  # the chain, when that head was warm-started too
        }
    save_head(head, cfg, vocab, args.out, manifest)
    ckpt.unlink(missing_ok=True)  # the head is saved; a rerun trains afresh


if __name__ == "__main__":
    main()
