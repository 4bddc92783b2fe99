"""The Serve application: `build_app(args)` binds the four deployments into one graph.

`serve run serve_config.yaml` calls it with the `args:` of the config; the same builder
runs as `serve run serve_app.app:build_app model_dir=...`. The args are validated here so a
typo fails the deploy with a message instead of a replica crash loop.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator
from ray.serve import Application

from serve_app.api import ApiSettings, ServiceInfo
from serve_app.audio import DEFAULT_MAX_BYTES, DEFAULT_MAX_DURATION_S, AudioLimits
from serve_app.bundle import load_bundle
from serve_app.deployments import Decoder, Encoder, Ingress, Preprocessor
from serve_app.streaming import StreamLimits

DEFAULT_MODEL_DIR = "models/default"


def _env_model_dir() -> str:
    return os.environ.get("ASR_MODEL_DIR", DEFAULT_MODEL_DIR)


def _env_api_key() -> str | None:
    return os.environ.get("ASR_API_KEY") or None


def _env_ort_threads() -> int | None:
    value = os.environ.get("ASR_ORT_THREADS")
    return int(value) if value else None


class AppArgs(BaseModel):
    """Arguments of `build_app`; unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    model_dir: Path = Field(default_factory=_env_model_dir)
    precision: Literal["fp32", "int8"] | None = None  # None: the bundle's default
    # Secret: from the environment, never from the config file.
    api_key: str | None = Field(default_factory=_env_api_key, repr=False)
    max_upload_bytes: PositiveInt = DEFAULT_MAX_BYTES
    max_duration_s: PositiveFloat = DEFAULT_MAX_DURATION_S
    ort_threads: int | None = Field(default_factory=_env_ort_threads, ge=0)
    health_timeout_s: PositiveFloat = 3.0
    # WS /v1/stream, per ingress replica (serve_app/streaming.py StreamLimits)
    max_streams: PositiveInt = StreamLimits.max_streams
    stream_idle_timeout_s: PositiveFloat = StreamLimits.idle_timeout_s
    max_stream_duration_s: PositiveFloat = StreamLimits.max_duration_s

    @field_validator("model_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Replicas may start in another working directory than `serve run`.
        return value.expanduser().resolve()


GRPC_DEFAULT_MAX_MESSAGE = 4 * 2**20  # Serve's replica-to-replica gRPC default
GRPC_MESSAGE_MARGIN = 2**20  # request metadata and pickling around the upload's bytes


def check_grpc_message_limit(max_upload_bytes: int, env: Mapping[str, str] = os.environ) -> None:
    """With Serve's gRPC data plane (throughput mode), the Ingress hands each upload to the
    Preprocessor as one gRPC message: fail the deploy if the message cap is below the
    upload limit, instead of failing every large upload at run time."""
    throughput = env.get("RAY_SERVE_THROUGHPUT_OPTIMIZED", "0") == "1"
    grpc = env.get("RAY_SERVE_USE_GRPC_BY_DEFAULT", "1" if throughput else "0") == "1"
    if not grpc:
        return
    cap = int(env.get("RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH", GRPC_DEFAULT_MAX_MESSAGE))
    if max_upload_bytes + GRPC_MESSAGE_MARGIN > cap:
        raise ValueError(
            f"max_upload_bytes ({max_upload_bytes}) does not fit Serve's gRPC messages "
            f"between replicas ({cap} bytes): set RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH "
            f"in the app's runtime_env to at least {max_upload_bytes + GRPC_MESSAGE_MARGIN}"
        )


def build_app(args: AppArgs | dict | None = None) -> Application:
    args = args if isinstance(args, AppArgs) else AppArgs.model_validate(args or {})
    check_grpc_message_limit(args.max_upload_bytes)
    bundle = load_bundle(args.model_dir)  # fails the deploy early with what is missing
    precision = args.precision or bundle.config.default_precision
    bundle.model_path(precision)  # the requested variant exists
    limits = AudioLimits(max_bytes=args.max_upload_bytes, max_duration_s=args.max_duration_s)
    info = ServiceInfo(
        model=bundle.config.name,
        precision=precision,
        language=bundle.config.language,
        sample_rate=bundle.config.sample_rate,
        max_upload_bytes=args.max_upload_bytes,
        max_duration_s=args.max_duration_s,
        details={
            "pad_to_30s": bundle.config.pad_to_30s,
            # The bundle's decoding; the Decoder's user_config may override it live.
            "decoder": bundle.config.decoder_settings.to_dict(),
            "language_model": bool(bundle.config.lm_files),
        },
    )
    settings = ApiSettings(
        api_key=args.api_key,
        max_upload_bytes=args.max_upload_bytes,
        health_timeout_s=args.health_timeout_s,
        add_request_id_header=False,  # Serve's proxy sets X-Request-ID on every response
        stream_limits=StreamLimits(
            max_streams=args.max_streams,
            idle_timeout_s=args.stream_idle_timeout_s,
            max_duration_s=args.max_stream_duration_s,
        ),
    )
    bundle_dir = str(args.model_dir)
    return Ingress.bind(
        Preprocessor.bind(bundle_dir, limits),
        Encoder.bind(bundle_dir, precision, args.ort_threads),
        Decoder.bind(bundle_dir),
        info,
        settings,
    )
