from __future__ import annotations

import json

import pytest

from serve_app.bundle import BundleConfig, load_bundle, write_config
from serve_app.errors import BundleError
from serve_app.tokenizer import CharVocabulary


def _config(**overrides) -> BundleConfig:
    base = dict(
        name="t",
        n_mels=80,
        blank_id=0,
        vocab_kind="chars",
        vocab_file="vocab.json",
        models={"fp32": "model.onnx"},
        default_precision="fp32",
    )
    return BundleConfig(**(base | overrides))


def _bundle_dir(tmp_path, config: BundleConfig):
    write_config(tmp_path, config)
    CharVocabulary.vietnamese().to_json(tmp_path / "vocab.json")
    for name in config.models.values():
        (tmp_path / name).write_bytes(b"onnx")
    return tmp_path


def test_round_trip(tmp_path):
    bundle = load_bundle(_bundle_dir(tmp_path, _config()))
    assert bundle.config == _config()
    assert bundle.model_path() == tmp_path / "model.onnx"
    assert bundle.vocabulary().size == CharVocabulary.vietnamese().size


def test_missing_directory_says_how_to_build(tmp_path):
    with pytest.raises(BundleError, match="vi-asr build-model"):
        load_bundle(tmp_path / "nope")


def test_missing_file_is_named(tmp_path):
    _bundle_dir(tmp_path, _config())
    (tmp_path / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"missing model\.onnx"):
        load_bundle(tmp_path)


def test_unknown_precision(tmp_path):
    bundle = load_bundle(_bundle_dir(tmp_path, _config()))
    with pytest.raises(BundleError, match="no 'int8' model"):
        bundle.model_path("int8")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_mels": 64}, "n_mels"),
        ({"vocab_kind": "words"}, "vocab.kind"),
        ({"models": {}}, "models"),
        ({"models": {"fp16": "m.onnx"}}, "models"),
        ({"default_precision": "int8"}, "default_precision"),
    ],
)
def test_invalid_config(overrides, message):
    with pytest.raises(BundleError, match=message):
        _config(**overrides)


def test_bad_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path)


def test_missing_key(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(BundleError, match=r"invalid config\.json"):
        load_bundle(tmp_path)
