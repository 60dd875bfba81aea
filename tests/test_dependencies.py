"""pyproject.toml declares what the code imports, and the code imports what it declares."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_CODE = ("campflow", "flows", "tasks", "blocks", "models", "examples")
OWN = {"campflow", "flows", "tasks", "blocks", "models", "examples", "tests", "bench"}
# declared without being imported, each for a reason docs/dependencies.md gives
NOT_IMPORTED = {"python-multipart": "FastAPI reads the portal's forms with it",
                "httpx2": "the FastAPI test client runs on it", "pytest-xdist": "a pytest plugin (make test -n 2)",
                "import-linter": "a command CI runs (lint-imports)", "ruff": "a command CI runs (ruff check)"}


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(group: str | None = None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["optional-dependencies"][group] if group else project["dependencies"]
    return {normal(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]) for requirement in requirements}


def imported(*folders: str) -> set[str]:
    """The distributions providing the top-level modules imported under `folders`."""
    modules = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    providers = importlib.metadata.packages_distributions()
    return {normal(providers[m][0]) for m in modules - OWN - set(sys.stdlib_module_names) if m in providers}


def test_every_imported_package_is_declared():
    assert imported(*RUNTIME_CODE) - declared() == set()
    assert imported("tests") - declared() - declared("dev") == set()


def test_every_declared_package_is_imported():
    everything = imported(*RUNTIME_CODE, "tests")
    assert (declared() | declared("dev")) - everything - set(NOT_IMPORTED) == set()
