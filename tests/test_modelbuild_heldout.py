"""Decoder tuning on the dev split and held-out scoring on the test split, on a tiny corpus
with the real default bundle: what `tune_decoder --write` and `heldout` report and store."""

from __future__ import annotations

import json

import pytest

from modelbuild import heldout, lm, tune_decoder
from modelbuild.synth import build_corpus
from modelbuild.synth_plan import TEST_CONDITIONS
from serve_app.bundle import load_bundle
from serve_app.decoding import DecoderSettings
from tests.test_modelbuild_lm import bundle_copy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus")
    build_corpus(corpus, n_train=2, n_test=2, seed=11, workers=1, n_dev=2)
    return corpus


def test_tuning_reads_dev_only_and_writes_its_choice(default_bundle, tiny_corpus, tmp_path):
    bundle = bundle_copy(default_bundle, tmp_path / "bundle")
    out, head = tmp_path / "tune.json", tmp_path / "head"
    head.mkdir()
    grid = {
        "LM_WEIGHTS": (0.5, 1.0),
        "WORD_SCORES": (0.0,),
        "MERGE_REPEATS": (0.0, 0.9),
        "BEAM_WIDTHS": (4, 8),
        "TOKEN_BEAMS": (8,),
        "BEAM_THRESHOLDS": (4.0, 20.0),
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, values in grid.items():
            mp.setattr(tune_decoder, name, values)
        tune_decoder.main(
            [*("--corpus", str(tiny_corpus), "--model", str(bundle), "--out", str(out)),
             "--write", "--write-head", str(head), "--conditions", "clean", "noise"]
        )  # fmt: skip
    result = json.loads(out.read_text())
    assert result["split"] == "dev" and result["rows"] == 2 * 2
    assert [p["lm_weight"] for p in result["grid"]] == [0.5, 1.0]
    assert [p["merge_repeats_above"] for p in result["merging"]] == [0.0, 0.9]
    best = min(result["grid"], key=lambda p: (p["objective"], p["cer"]))
    assert {p["lm_weight"] for p in result["merging"]} == {best["lm_weight"]}
    merge = min(result["merging"], key=lambda p: (p["objective"], p["decode_cpu_ms_per_audio_s"]))
    assert [p["beam_width"] for p in result["beam_widths"]] == [4, 8]
    assert {p["merge_repeats_above"] for p in result["beam_widths"]} == {
        merge["merge_repeats_above"]
    }
    assert result["chosen"]["merge_repeats_above"] == merge["merge_repeats_above"]
    assert result["chosen"]["lm_weight"] == best["lm_weight"]
    # pruning at the chosen width: the cheapest point within the tolerance of the best one
    assert [p["beam_threshold"] for p in result["pruning"]] == [4.0, 20.0]
    assert {p["beam_width"] for p in result["pruning"]} == {result["chosen"]["beam_width"]}
    width = result["chosen"]["beam_width"]
    unpruned = next(p for p in result["beam_widths"] if p["beam_width"] == width)
    assert result["chosen"] in result["pruning"]
    assert result["chosen"]["objective"] <= unpruned["objective"] + tune_decoder.PRUNE_TOLERANCE
    assert all(p["cer_by_text"] == {"composed": p["objective"]} for p in result["grid"])

    config = load_bundle(bundle).config
    assert config.decoder["tuning"]["chosen"] == result["chosen"]
    assert config.decoder_settings.lm_weight == result["chosen"]["lm_weight"]
    assert config.decoder_settings.beam_width == result["chosen"]["beam_width"]
    # decoder.json next to a head: what every bundle built from that head starts with
    assert lm.tuned_settings(head) == config.decoder_settings
    assert lm.tuned_settings(tmp_path) == DecoderSettings.default_beam()  # none there


def test_heldout_scores_test_rows_per_condition_text_and_decoder(
    default_bundle, tiny_corpus, tmp_path
):
    out = tmp_path / "heldout.json"
    heldout.main(
        [*("--corpus", str(tiny_corpus), "--model", str(default_bundle)),
         *("--precision", "int8", "--out", str(out))]
    )  # fmt: skip
    reports = json.loads(out.read_text())
    assert [r["decoder"] for r in reports] == ["greedy", "beam"]
    for report in reports:
        assert report["split"] == "test" and report["n"] == 2 * len(TEST_CONDITIONS)
        assert report["condition=clean"]["n"] == 2 and report["text=composed"]["n"] == report["n"]
        assert report["text=composed,condition=babble"]["n"] == 2
        assert 0 <= report["all"]["cer"] <= 1.5
        assert report["decode_cpu_ms_per_audio_s"] > 0 and report["encode_ms_per_audio_s"] > 0
    assert (tiny_corpus / "test_clean.jsonl").read_text().count("\n") == 2


def test_every_nth_row_keeps_each_condition(tiny_corpus):
    full = heldout.split_rows(tiny_corpus, "test")
    thinned = heldout.split_rows(tiny_corpus, "test", every=2)
    assert (
        {r["condition"] for r in thinned} == {r["condition"] for r in full} == set(TEST_CONDITIONS)
    )
    # the first of each condition's two rows: half the rows, one per condition
    assert len(thinned) == len(full) // 2 == len(TEST_CONDITIONS)
    assert all(r in full for r in thinned)
