"""`build_app` argument validation (no Ray cluster needed: binding builds no replicas)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from serve_app.app import AppArgs, build_app, check_grpc_message_limit
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


def test_upload_limit_must_fit_the_grpc_message_cap_in_throughput_mode():
    mib = 2**20
    check_grpc_message_limit(100 * mib, {})  # actor-task transport: no cap to respect
    with pytest.raises(ValueError, match="RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"):
        check_grpc_message_limit(100 * mib, {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"})
    check_grpc_message_limit(
        100 * mib,
        {
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(128 * mib),
        },
    )
    throughput_without_grpc = {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_USE_GRPC_BY_DEFAULT": "0",
    }
    check_grpc_message_limit(100 * mib, throughput_without_grpc)


def test_serve_config_lets_its_upload_limit_through_grpc():
    """serve_config.yaml's runtime_env and args agree (what build_app checks at deploy)."""
    import yaml

    config = yaml.safe_load((Path(__file__).parent.parent / "serve_config.yaml").read_text())
    app = config["applications"][0]
    check_grpc_message_limit(app["args"]["max_upload_bytes"], app["runtime_env"]["env_vars"])


def test_missing_bundle_fails_the_build_with_a_hint(tmp_path):
    with pytest.raises(BundleError, match="build-model"):
        build_app({"model_dir": str(tmp_path / "none")})


@pytest.mark.slow
def test_build_app_binds_the_four_stages(default_bundle):
    app = build_app({"model_dir": str(default_bundle)})
    assert type(app).__name__ == "Application"
