"""`fit` checkpoints and resumes: training in slices gives the same head as one run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from modelbuild import train
from serve_app.tokenizer import CharVocabulary

D_MODEL = 8
TEXTS = ("ba", "ca", "mẹ", "đi", "a b", "cá")


def _write_cache(cache: Path, split: str, n: int, seed: int) -> None:
    """A cache in `encode`'s format (layers 1-2, fp16 frames + index) from random features."""
    rng = np.random.default_rng(seed)
    frames = [int(rng.choice([10, 16])) for _ in range(n)]
    data = rng.standard_normal((sum(frames), 2, D_MODEL)).astype(np.float16)
    np.save(cache / f"{split}.npy", data)
    offsets = np.concatenate([[0], np.cumsum(frames)])
    rows = [
        {
            "offset": int(offsets[i]),
            "frames": frames[i],
            "text": TEXTS[i % len(TEXTS)],
            "condition": "clean",
            "voice": "vi",
            "text_kind": "composed",
        }
        for i in range(n)
    ]
    (cache / f"{split}.index.json").write_text(json.dumps({"layers": [1, 2], "rows": rows}))


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    _write_cache(tmp_path, "train", 24, seed=1)
    _write_cache(tmp_path, "dev", 6, seed=2)
    return tmp_path


CFG = train.FitConfig(
    epochs=3,
    batch_frames=40,  # 2-4 rows per step: ~9 steps per epoch
    threads=1,
    head=train.HeadConfig(hidden=16, mix_layers=(1, 2), conv_blocks=1),
)
VOCAB = CharVocabulary.vietnamese()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_in_slices_equals_one_run(cache: Path) -> None:
    whole, report = train.fit(cache, CFG, VOCAB)
    ckpt = train.checkpoint_path(cache, CFG)
    # Slices of 4 steps cross epoch boundaries and stop mid-epoch; every slice resumes.
    slices = 0
    while True:
        try:
            sliced, sliced_report = train.fit(
                cache, CFG, VOCAB, ckpt, checkpoint_every=3, max_steps=4
            )
            break
        except train.TrainingStopped:
            slices += 1
            assert ckpt.exists()
    assert slices >= 5  # ~27 steps in slices of 4
    assert _same_weights(whole, sliced)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in report["history"]]
    assert strip == [
        {k: v for k, v in h.items() if k != "seconds"} for h in sliced_report["history"]
    ]
    assert [h["epoch"] for h in sliced_report["history"]] == [1, 2, 3]


def test_a_finished_checkpoint_returns_the_trained_head(cache: Path) -> None:
    ckpt = train.checkpoint_path(cache, CFG)
    first, _ = train.fit(cache, CFG, VOCAB, ckpt)
    again, report = train.fit(cache, CFG, VOCAB, ckpt, max_steps=1)  # nothing left to train
    assert _same_weights(first, again) and len(report["history"]) == CFG.epochs


def test_a_checkpoint_of_another_recipe_is_refused(cache: Path) -> None:
    ckpt = cache / "other.ckpt"
    with pytest.raises(train.TrainingStopped):
        train.fit(cache, CFG, VOCAB, ckpt, max_steps=2)
    longer = replace(CFG, epochs=4)
    assert train.checkpoint_path(cache, longer) != train.checkpoint_path(cache, CFG)
    with pytest.raises(ValueError, match="another recipe"):
        train.fit(cache, longer, VOCAB, ckpt)


def test_fit_cli_stops_with_exit_3_and_resumes(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "head"
    argv = ["fit", "--cache", str(cache), "--out", str(out), "--corpus", str(tmp_path / "none")]
    argv += ["--epochs", "2", "--hidden", "16", "--mix-layers", "1", "2", "--conv-blocks", "1"]
    with pytest.raises(SystemExit) as stopped:  # 6000 frames a step: one step per epoch
        train.main([*argv, "--stop-after-steps", "1"])
    assert stopped.value.code == 3 and list(cache.glob("fit-*.ckpt"))
    train.main(argv)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [h["epoch"] for h in manifest["history"]] == [1, 2]
    assert not list(cache.glob("fit-*.ckpt"))  # removed once the head is saved


def test_a_warm_start_begins_from_the_saved_head(cache: Path, tmp_path: Path) -> None:
    first, report = train.fit(cache, replace(CFG, epochs=1), VOCAB)
    saved = tmp_path / "saved"
    train.save_head(first, CFG, VOCAB, saved, report)
    warm = replace(CFG, epochs=1, lr=0.0, init_head_sha256=train.head_sha256(saved))
    same, _ = train.fit(cache, warm, VOCAB, init=saved)  # lr 0: the weights stay as loaded
    stored = np.load(saved / "head.npz")
    assert all(
        torch.equal(v, torch.from_numpy(stored[k].astype(np.float32)))
        for k, v in same.state_dict().items()
    )
    with pytest.raises(ValueError, match="pass its folder"):
        train.fit(cache, warm, VOCAB)
    with pytest.raises(ValueError, match="not the head"):
        train.fit(cache, replace(warm, init_head_sha256="0" * 64), VOCAB, init=saved)
    wider = replace(warm, head=replace(CFG.head, hidden=32))
    with pytest.raises(ValueError, match="another architecture"):
        train.fit(cache, wider, VOCAB, init=saved)
