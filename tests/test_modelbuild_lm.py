"""The lexicon/LM builder: offline sources, the bundle files it writes, and the whole path
from a tiny LM of a few sentences to `vi-asr transcribe --decoder beam`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from modelbuild import lm
from modelbuild import text as textgen
from serve_app.bundle import load_bundle
from serve_app.cli import main as cli_main
from serve_app.decoding import read_lexicon
from serve_app.errors import BundleError
from serve_app.transcriber import Transcriber
from tests.conftest import CLIPS_DIR

SENTENCES = ["kiều thận thi áp luỳnh ấy chả rừng mắt", "hoài phong đánh hoạch thưa"]


def bundle_copy(default_bundle: Path, dest: Path) -> Path:
    """A bundle that shares the ONNX files (symlinks) but has its own config and LM."""
    dest.mkdir()
    for item in default_bundle.iterdir():
        if item.suffix == ".onnx":
            os.symlink(item.resolve(), dest / item.name)
        else:
            shutil.copy(item, dest / item.name)
    return dest


def test_syllables_are_validated_and_normalised():
    assert lm.syllables_of("Hoà bình") == ["hòa", "bình"]
    assert lm.syllables_of("email") is None  # not a Vietnamese syllable
    inventory = lm.composed_inventory()
    assert {"hòa", "nghiêng", "quốc", "gìn"} <= inventory
    assert all(textgen.is_valid_syllable(s) for s in inventory)


def test_default_sources_are_installed_and_their_licences_recorded():
    counts = lm.default_counts()
    names = " ".join(s.name for s in counts.sources)
    assert "wordfreq" in names and "underthesea" in names and "pyvi" in names
    assert all(s.licence for s in counts.sources)
    model = lm.estimate(counts)
    # Real usage outranks a merely composable syllable; within-word bigrams are there.
    frequencies, _ = lm.wordfreq_frequencies()
    composed_only = sorted(lm.composed_inventory() - set(frequencies))
    assert composed_only and all(w in model.unigram for w in composed_only)
    assert model.unigram["không"] > max(model.unigram[w] for w in composed_only)
    assert ("học", "sinh") in model.logprob
    assert model.score(["việt"], "nam") > model.unigram["nam"]
    # Running text of the training documents: trigrams, and never a dev/test document.
    assert "running text: train documents" in names
    assert model.score(["người", "lao"], "động") > model.score(["lao"], "động")


@pytest.mark.slow
def test_tiny_lm_from_a_few_sentences_drives_the_cli(default_bundle, tmp_path, capsys):
    bundle = bundle_copy(default_bundle, tmp_path / "bundle")
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(SENTENCES) + "\n")
    assert cli_main(["build-lm", "--model", str(bundle), "--text", str(text), "--only-text"]) == 0
    config = load_bundle(bundle).config
    assert config.decoder_settings.kind == "beam"
    assert config.decoder["lm"]["sources"][0]["name"] == "text file sentences.txt"
    lexicon = set(read_lexicon(bundle / "lexicon.txt"))
    assert lexicon == {w for s in SENTENCES for w in lm.syllables_of(s)}
    capsys.readouterr()

    clip = str(CLIPS_DIR / "north_16k.wav")
    assert cli_main(["transcribe", clip, "--model", str(bundle), "--format", "json"]) == 0
    beam = json.loads(capsys.readouterr().out)
    assert beam["text"] and set(beam["text"].split()) <= lexicon
    assert [w["word"] for w in beam["words"]] == beam["text"].split()
    assert all(0 <= w["start"] < w["end"] <= beam["duration"] for w in beam["words"])
    cli_args = ["transcribe", clip, "--model", str(bundle), "--decoder", "greedy"]
    assert cli_main(cli_args) == 0
    greedy = capsys.readouterr().out.strip()
    assert greedy != beam["text"]  # greedy spells words this lexicon lacks ("kiêu")

    silence = Transcriber(bundle).transcribe((CLIPS_DIR / "silence.wav").read_bytes())
    assert silence.text == "" and silence.words == []


@pytest.mark.slow
def test_a_bundle_whose_lm_files_are_missing_is_refused(default_bundle, tmp_path):
    bundle = bundle_copy(default_bundle, tmp_path / "bundle")
    (bundle / "lm.arpa").unlink()
    with pytest.raises(BundleError, match=r"missing lm\.arpa"):
        load_bundle(bundle)
