"""The `vi-asr train-head` pipeline end to end on a tiny corpus: synth, encode, fit, build."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serve_app.bundle import load_bundle
from serve_app.modelbuild import train
from serve_app.modelbuild.build import build_default_bundle, load_head
from serve_app.modelbuild.synth import build_corpus
from serve_app.tokenizer import CharVocabulary
from serve_app.transcriber import Transcriber

pytestmark = pytest.mark.slow


def test_tiny_training_run_builds_a_working_bundle(tmp_path):
    corpus, cache, head_dir = tmp_path / "corpus", tmp_path / "cache", tmp_path / "head"
    build_corpus(corpus, n_train=6, n_test=2, seed=7, workers=1, n_dev=2)
    train.main(["encode", "--corpus", str(corpus), "--cache", str(cache), "--threads", "1"])

    index = json.loads((cache / "train.index.json").read_text())
    cached = np.load(cache / "train.npy", mmap_mode="r")
    assert index["layers"] == list(train.MIX_LAYERS)
    assert cached.shape[0] == sum(r["frames"] for r in index["rows"])
    assert cached.shape[1:] == (len(train.MIX_LAYERS), 512)

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
    assert set(manifest["history"][0]["dev"]) >= {"clean"}
    assert manifest["corpus_summary"]["counts"]["train_speech_rows"] == 6

    head, spec = load_head(head_dir)
    assert spec["vocab_size"] == CharVocabulary.vietnamese().size
    assert head.mlp[0].out_features == 32

    bundle_dir = build_default_bundle(tmp_path / "bundle", head_dir=head_dir, with_int8=False)
    bundle = load_bundle(bundle_dir)
    assert bundle.config.architecture["head"]["hidden"] == 32
    t = Transcriber(bundle, precision="fp32")
    audio = corpus / json.loads((corpus / "manifest.jsonl").read_text().splitlines()[0])["audio"]
    assert t.transcribe(audio.read_bytes()).duration > 0.5  # an untrained head: text is noise
