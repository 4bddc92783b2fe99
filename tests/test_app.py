"""`build_app` argument validation (no Ray cluster needed: binding builds no replicas)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from serve_app.app import AppArgs, build_app
from serve_app.errors import BundleError


def test_args_reject_unknown_keys_and_bad_values():
    with pytest.raises(ValidationError):
        AppArgs(model_dir="x", max_batch=3)
    with pytest.raises(ValidationError):
        AppArgs(precision="fp16")
    with pytest.raises(ValidationError):
        AppArgs(max_upload_bytes=0)


def test_args_take_secrets_and_knobs_from_the_environment(monkeypatch):
    monkeypatch.setenv("ASR_API_KEY", "s3cret-key")
    monkeypatch.setenv("ASR_ORT_THREADS", "2")
    monkeypatch.setenv("ASR_MODEL_DIR", "some/bundle")
    args = AppArgs()
    assert args.api_key == "s3cret-key"
    assert args.ort_threads == 2
    assert args.model_dir == Path("some/bundle").resolve()
    assert "s3cret-key" not in repr(args)


def test_missing_bundle_fails_the_build_with_a_hint(tmp_path):
    with pytest.raises(BundleError, match="build-model"):
        build_app({"model_dir": str(tmp_path / "none")})


@pytest.mark.slow
def test_build_app_binds_the_four_stages(default_bundle):
    app = build_app({"model_dir": str(default_bundle)})
    assert type(app).__name__ == "Application"
