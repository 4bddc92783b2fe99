"""The `vi-asr train-head` pipeline end to end on a tiny corpus: synth, encode, fit, build."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelbuild import ablate, train
from modelbuild.build import build_default_bundle, load_head
from modelbuild.synth import build_corpus
from modelbuild.synth_plan import TEST_CONDITIONS
from serve_app.bundle import load_bundle
from serve_app.tokenizer import CharVocabulary
from serve_app.transcriber import Transcriber

pytestmark = pytest.mark.slow


def test_tiny_training_run_builds_a_working_bundle(tmp_path):
    corpus, cache, head_dir = tmp_path / "corpus", tmp_path / "cache", tmp_path / "head"
    build_corpus(corpus, n_train=6, n_test=2, seed=7, workers=1, n_dev=2)
    train.main(["encode", "--corpus", str(corpus), "--cache", str(cache), "--threads", "1"])

    index = json.loads((cache / "train.index.json").read_text())
    cached = np.load(cache / "train.npy", mmap_mode="r")
    assert index["layers"] == list(train.CACHE_LAYERS)
    assert cached.shape[0] == sum(r["frames"] for r in index["rows"])
    assert cached.shape[1:] == (len(train.CACHE_LAYERS), 512)
    assert not (cache / "test.npy").exists()  # the test split only when asked for

    train.main(
        [
            "fit",
            "--cache",
            str(cache),
            "--corpus",
            str(corpus),
            "--out",
            str(head_dir),
            "--epochs",
            "1",
            "--hidden",
            "32",
        ]
    )
    manifest = json.loads((head_dir / "manifest.json").read_text())
    assert manifest["fit"]["head"]["hidden"] == 32
    assert len(manifest["history"]) == 1
    dev = manifest["history"][0]["dev"]
    assert {"all", "condition=clean", "condition=babble", "text=composed"} <= set(dev)
    assert dev["condition=clean"]["n"] == 2 and dev["all"]["n"] == 2 * len(TEST_CONDITIONS)
    assert "test" not in manifest
    assert manifest["corpus_summary"]["counts"]["train_speech_rows"] == 6

    # A supplementary training-only corpus (another seed, no dev/test rows) trained on
    # beside the first one's train split: rows from both arrays, its recipe in the manifest.
    corpus_b, cache_b, head_b = tmp_path / "corpus_b", tmp_path / "cache_b", tmp_path / "head_b"
    build_corpus(corpus_b, n_train=3, n_test=0, seed=8, workers=1, n_dev=0)
    train.main(["encode", "--corpus", str(corpus_b), "--cache", str(cache_b), "--splits", "train"])
    both = train.CachedSplit.trains([cache, cache_b])
    assert train.CachedSplit.trains([cache]).rows == train.CachedSplit(cache, "train").rows
    n_a = len(index["rows"])
    assert len(both.rows) == n_a + len(
        json.loads((cache_b / "train.index.json").read_text())["rows"]
    )
    last_b = both.features([len(both.rows) - 1], [0])[0][0].numpy()
    row_b = both.rows[-1]
    own_b = np.load(cache_b / "train.npy", mmap_mode="r")
    assert np.array_equal(last_b, own_b[row_b["offset"] : row_b["offset"] + row_b["frames"], 0])
    fit_b = ["fit", "--cache", str(cache), "--corpus", str(corpus), "--out", str(head_b)]
    train.main([*fit_b, "--epochs", "1", "--hidden", "32", "--extra-train", str(cache_b)])
    manifest_b = json.loads((head_b / "manifest.json").read_text())
    assert manifest_b["train_rows"] == len(both.rows)
    assert manifest_b["fit"]["extra_train"] == [str(cache_b)]
    assert manifest_b["extra_train_corpora"][0]["counts"]["train_speech_rows"] == 3
    assert manifest_b["history"][0]["dev"]["all"]["n"] == dev["all"]["n"]  # dev: --cache's

    head, spec = load_head(head_dir)
    assert spec["vocab_size"] == CharVocabulary.vietnamese().size
    assert head.mlp[0].out_features == 32

    bundle_dir = build_default_bundle(tmp_path / "bundle", head_dir=head_dir, with_int8=False)
    bundle = load_bundle(bundle_dir)
    assert bundle.config.architecture["head"]["hidden"] == 32
    t = Transcriber(bundle, precision="fp32")
    audio = corpus / json.loads((corpus / "manifest.jsonl").read_text().splitlines()[0])["audio"]
    assert t.transcribe(audio.read_bytes()).duration > 0.5  # an untrained head: text is noise


def test_ablation_variant_scores_the_test_split_once(tmp_path):
    """A dilated 3-block head on a wider layer mix and half the rows, through ablate.py."""
    corpus, cache, out = tmp_path / "corpus", tmp_path / "cache", tmp_path / "ablation"
    build_corpus(corpus, n_train=8, n_test=1, seed=3, workers=1, n_dev=1)
    splits = ["--splits", "train", "dev", "test"]
    train.main(["encode", "--corpus", str(corpus), "--cache", str(cache), *splits])
    n_train = len(json.loads((cache / "train.index.json").read_text())["rows"])
    assert train.CachedSplit(cache, "train", 0.5).rows != train.CachedSplit(cache, "train").rows

    ablate.VARIANTS["tiny"] = (
        "test variant",
        [
            *("--train-fraction", "0.5", "--conv-blocks", "3", "--conv-dilation", "2"),
            *("--mix-layers", "1", "2", "3", "4", "5", "6", "--hidden", "16"),
        ],
    )
    try:
        ablate.main(
            [*("--cache", str(cache), "--corpus", str(corpus), "--out", str(out)),
             *("--epochs", "1", "--only", "tiny")]
        )  # fmt: skip
    finally:
        del ablate.VARIANTS["tiny"]
    manifest = json.loads((out / "tiny" / "manifest.json").read_text())
    assert 0 < manifest["train_rows"] < n_train
    assert manifest["test"]["all"]["n"] == len(TEST_CONDITIONS)
    table = (out / "ablation.md").read_text()
    assert "| tiny | test variant |" in table

    head, spec = load_head(out / "tiny")
    assert spec["conv_dilation"] == 2 and spec["mix_layers"] == [1, 2, 3, 4, 5, 6]
    assert [c.dilation[0] for c in head.convs] == [1, 2, 4]
    bundle = load_bundle(
        build_default_bundle(tmp_path / "b", head_dir=out / "tiny", with_int8=False)
    )
    lone = Transcriber(bundle, precision="fp32")
    audio = corpus / "audio" / "000000.flac"
    assert lone.transcribe(audio.read_bytes()).duration > 0.5


def test_train_head_cli_runs_the_whole_recipe(tmp_path, capfd):
    """`vi-asr train-head` with tiny counts: composed + natural sentences, the three cached
    splits, a fit that scores the test cache once, and a head the bundle builder loads."""
    from modelbuild.cli import TRAIN_HEAD_RECIPE
    from serve_app.cli import main as cli_main

    corpus, cache, out = tmp_path / "corpus", tmp_path / "cache", tmp_path / "head"
    args = ["train-head", "--corpus", str(corpus), "--cache", str(cache), "--out", str(out)]
    args += ["--n-train", "3", "--n-test", "1", "--n-dev", "1", "--natural", "3", "1", "1"]
    assert cli_main([*args, "--workers", "1", "--epochs", "1"]) == 0
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    kinds = {(r["split"], r["text_kind"]) for r in rows if not r["empty"]}
    assert kinds == {(s, k) for s in ("train", "test", "dev") for k in ("composed", "natural")}
    assert {p.name for p in cache.glob("*.npy")} == {"train.npy", "dev.npy", "test.npy"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["test"]["text=natural"]["n"] == len(TEST_CONDITIONS)
    assert manifest["corpus_recipe"]["natural"]["sources"]
    head, spec = load_head(out)
    assert spec["mix_layers"] == TRAIN_HEAD_RECIPE["mix_layers"]
    assert len(head.convs) == spec["conv_blocks"] == TRAIN_HEAD_RECIPE["conv_blocks"]

    # A warm start from that head: same corpus and cache, its origin in the new manifest.
    warm = tmp_path / "warm"
    assert args[5] == "--out"
    warm_args = [*args[:6], str(warm), *args[7:], "--workers", "1", "--epochs", "1"]
    more = ["--more-train", "11"]  # and a train-only corpus of another seed beside it
    assert cli_main([*warm_args, "--init-from", str(out), "--lr", "0.001", *more]) == 0
    warm_manifest = json.loads((warm / "manifest.json").read_text())
    extra_corpus, extra_cache = tmp_path / "corpus-s11", tmp_path / "cache-s11"
    assert warm_manifest["fit"]["extra_train"] == [str(extra_cache)]
    (extra,) = warm_manifest["extra_train_corpora"]
    assert extra["params"]["seed"] == 11 and extra["counts"]["test_rows"] == 0
    assert extra["counts"]["train_speech_rows"] == 6  # 3 composed + 3 natural
    extra_rows = [json.loads(x) for x in (extra_corpus / "manifest.jsonl").read_text().splitlines()]
    held_out = {r["text"] for r in rows if r["split"] != "train"}
    assert not held_out & {r["text"] for r in extra_rows}
    assert warm_manifest["train_rows"] == manifest["train_rows"] + len(extra_rows)

    # A seed whose composed sentences are the main corpus's test ones never reaches training.
    from modelbuild.text import TEST_SEED_OFFSET

    for bad, why in ((1234, "main corpus's seed"), (1234 + TEST_SEED_OFFSET, "dev/test sentences")):
        capfd.readouterr()
        assert cli_main([*warm_args, "--init-from", str(out), "--more-train", str(bad)]) == 1
        assert why in capfd.readouterr().err
    assert warm_manifest["init"]["head_sha256"] == train.head_sha256(out)
    assert warm_manifest["init"]["history"] == manifest["history"]
    assert warm_manifest["fit"]["lr"] == 0.001
