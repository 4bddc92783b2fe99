"""The layout the architecture promises: serve_app never imports the training package, no
module grows past ~400 lines, and the serving image's code carries nothing torch-side."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 420  # "a few hundred lines at most": one screenful of imports more than 400


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_serve_app_never_imports_the_training_package():
    offenders = {
        str(path.relative_to(REPO)): sorted(
            n for n in imported_modules(path) if n.split(".")[0] in ("modelbuild", "torch")
        )
        for path in (REPO / "serve_app").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    # the model-building commands are run as `python -m modelbuild`, not imported
    assert "modelbuild" in (REPO / "serve_app" / "cli.py").read_text()


def test_modelbuild_uses_serve_app_for_what_serving_shares():
    used = set().union(*(imported_modules(p) for p in (REPO / "modelbuild").rglob("*.py")))
    assert {"serve_app.bundle", "serve_app.tokenizer", "serve_app.features"} <= used


def test_no_module_is_a_god_module():
    sizes = {
        str(p.relative_to(REPO)): len(p.read_text(encoding="utf-8").splitlines())
        for folder in ("serve_app", "modelbuild", "ui", "kuberay")
        for p in (REPO / folder).rglob("*.py")
    }
    assert {k: n for k, n in sizes.items() if n > MAX_MODULE_LINES} == {}
