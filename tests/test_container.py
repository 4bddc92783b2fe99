"""The Dockerfile, checked without a Docker engine: its base image is the official Ray image of
the pinned Ray and this Python, it runs as non-root with no secrets, it copies only what
.dockerignore lets through, checkov passes, and its build steps work: the project built from
exactly the files the Dockerfile copies installs, builds the default bundle from the installed
package (not the source tree), and the serving side then loads it without importing torch.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import ray

from tests.deploy_tools import assert_checkov_clean, kuberay_generator, run_checkov

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
EXPECTED_BASE = (
    f"rayproject/ray:{ray.__version__}-py{sys.version_info.major}{sys.version_info.minor}-cpu"
)

kuberay = kuberay_generator()
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")
BUILD_TIMEOUT_S = 600


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip().removesuffix("\\") + (" " if line.rstrip().endswith("\\") else "")
        if not line.rstrip().endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def test_base_image_is_the_official_ray_image_of_the_pinned_ray_and_python():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert (
        f"ray[serve]=={ray.__version__}" in pyproject["project"]["optional-dependencies"]["serve"]
    )
    assert sys.version_info[:2] == (3, 11)
    bases = [args.split()[0] for word, args in _instructions() if word == "FROM"]
    assert len(bases) == 2, "a builder stage and the runtime stage"
    assert set(bases) == {EXPECTED_BASE}


def test_runtime_stage_is_non_root_has_no_secrets_and_no_torch():
    runtime = _stages()[-1]
    users = [args for word, args in runtime if word == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), users
    for word, args in _instructions():
        if word in ("ENV", "ARG"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split("=")[0]]
            assert not [n for n in names if any(w in n.upper() for w in SECRET_WORDS)], args
    runs = " ".join(args for word, args in runtime if word == "RUN")
    assert (
        "'.[serve]'" in runs
        and "[build]" not in runs
        and "torch" not in runs.replace("'torch' not in sys.modules", "")
    )
    env = " ".join(args for word, args in runtime if word == "ENV")
    assert f"ASR_MODEL_DIR={kuberay.MODEL_DIR_IN_IMAGE}" in env, "kuberay's model_dir"
    copied = [args for word, args in runtime if word == "COPY" and "--from=builder" in args]
    assert copied and copied[0].endswith("${ASR_MODEL_DIR}")


def _dockerignore_allows(rel: str) -> bool:
    """.dockerignore semantics for the patterns used there: last match wins, ! re-includes."""
    allowed = True
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        deep = "**" in pattern and fnmatch.fnmatch(rel, pattern.replace("**/", "*"))
        if deep or fnmatch.fnmatch(rel, pattern) or rel.startswith(pattern + "/"):
            allowed = negate
    return allowed


def _copied_sources() -> list[str]:
    sources = []
    for word, args in _instructions():
        if word == "COPY" and "--from=" not in args:
            parts = [p for p in args.split() if not p.startswith("--")]
            sources += parts[:-1]
    return list(dict.fromkeys(sources))  # both stages copy the same files


def test_build_context_is_only_what_the_image_copies():
    sources = _copied_sources()
    assert set(sources) == {"pyproject.toml", "README.md", "serve_app", "modelbuild"}
    # the training package goes into the builder stage only, never the serving image
    runtime = DOCKERFILE.read_text().split("\nFROM ")[2]
    assert "COPY --chown=1000:100 serve_app" in runtime and "modelbuild" not in runtime
    for source in sources:
        assert (REPO / source).exists() and _dockerignore_allows(source), source
    for private in (".venv", "models/default/model.onnx", ".git", "data", "tests", "bench"):
        assert not _dockerignore_allows(private), private


def test_checkov_passes_on_the_dockerfile():
    assert_checkov_clean(run_checkov(DOCKERFILE, "dockerfile"), "Dockerfile")


def _run(cmd: list[str], cwd: Path, **env: str) -> str:
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), **env},
    )
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.mark.slow
def test_image_build_steps_work_from_the_build_context(tmp_path):
    """The steps of both stages: the project is built as `pip install .` builds it in the
    image (isolated build with setuptools from the index) from only the files the Dockerfile
    copies; its dependencies come from this venv rather than a fresh download."""
    context = tmp_path / "context"
    context.mkdir()
    for source in _copied_sources():
        src = REPO / source
        if src.is_dir():
            shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, context / source)
    py = sys.executable
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    _run(
        [
            py,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(wheels),
            str(context),
        ],
        tmp_path,
    )
    (wheel,) = wheels.glob("vi_asr_serve-*.whl")
    _run(
        [py, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], tmp_path
    )
    env = {"PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}

    # builder stage: vi-asr build-model, from the installed package (its head assets too)
    bundle = tmp_path / "models" / "default"
    build = (
        "import serve_app, sys; from serve_app.cli import main;"
        f"assert serve_app.__file__.startswith({str(site)!r}), serve_app.__file__;"
        f"sys.exit(main(['build-model', '--out', {str(bundle)!r}]))"
    )
    _run([py, "-c", build], tmp_path, **env)
    assert (bundle / "config.json").is_file() and (bundle / "model.int8.onnx").is_file()

    # runtime stage: the check the Dockerfile runs, then the graph built on the baked bundle
    serve = (
        "import sys, serve_app.app as app;"
        f"assert app.__file__.startswith({str(site)!r}), app.__file__;"
        f"application = app.build_app({{'model_dir': {str(bundle)!r}}});"
        "assert type(application).__name__ == 'Application';"
        "assert 'torch' not in sys.modules, 'serving imported torch'"
    )
    _run([py, "-c", serve], tmp_path, **env)
