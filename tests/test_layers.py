"""The layers point one way (docs/architecture.md): no import cycle, function-level imports
included; flows/ holds only @flow modules; step kinds are plug-ins the registry finds."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from campflow.core import kinds

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("campflow", "flows", "tasks", "blocks", "models")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of ours `name` imports, at any depth of the file (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    wanted: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                wanted.add(target)
    return wanted


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_even_through_imports_inside_functions():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycles(graph) == []


def test_a_cycle_is_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_layer_contracts_hold():
    """`lint-imports` (.importlinter): the layers, and a core without Prefect nor SQLAlchemy."""
    done = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "2 kept, 0 broken" in done.stdout


@pytest.mark.parametrize("path", sorted((ROOT / "flows").glob("*.py")), ids=lambda p: p.name)
def test_flows_holds_only_flow_modules(path):
    if path.name == "__init__.py":
        return
    tree = ast.parse(path.read_text())
    decorated = [d for node in tree.body if isinstance(node, ast.FunctionDef) for d in node.decorator_list]
    names = {getattr(d.func if isinstance(d, ast.Call) else d, "id", None) for d in decorated}
    assert "flow" in names, f"{path.name} defines no @flow: it belongs in tasks/ or campflow/"


def test_every_built_in_kind_is_found_through_its_entry_point():
    names = set(kinds.kind_names())
    assert names >= {"emailing", "mass_emailing", "document_mailing", "label_mailing", "faxing", "phoning",
                     "phoning_contact", "spreadsheet_export", "local_approval", "other"}
    # validation asks the registry for the settings each kind owns, and imports no kind
    assert set(kinds.settings_checks()) == {"email", "document", "labels", "columns", "local_approval"}
    validate = (ROOT / "campflow" / "specs" / "validate.py").read_text()
    assert "tasks" not in {alias.split(".")[0] for alias in _module_names(validate)}


def _module_names(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


TAGGING_SPEC = """kind: Operation
code: TAGS
label: Tagging
steps:
  - code: T1
    label: Tag them
    kind: tagging
    options: {tag: %s}
    next: []
"""


@pytest.fixture
def tagging():
    """The example kind of docs/architecture.md, registered as an entry point would."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_tagging", ROOT / "examples" / "kinds" / "tagging.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    kinds.REGISTRY.pop("tagging", None)


def test_a_kind_is_one_module(tagging, database, prefect, cli, tmp_path):
    """The example kind plugs in without touching the validator, the engine or the schema:
    apply refuses what its check refuses, accepts the rest, and a run tags the targets."""
    from tests.conftest import scalar

    (tmp_path / "parties.csv").write_text("FICHE;TIERS;NOM\nPRO;P1;Alpha\nPRO;P2;Beta\n", encoding="utf-8")
    assert cli("parties", "import", tmp_path / "parties.csv", "-q").code == 0
    spec = tmp_path / "tags.yaml"
    spec.write_text(TAGGING_SPEC % "[not, text]", encoding="utf-8")
    refused = cli("apply", spec)
    assert refused.code != 0
    assert f"{spec}:5: step T1: a tagging step needs options: {{tag: TEXT}}" in refused.err
    spec.write_text(TAGGING_SPEC % "salon-2027", encoding="utf-8")
    assert cli("apply", spec).code == 0
    assert cli("targets", "add", "TAGS", "--where", "kind in (PRO)").code == 0
    result = cli("run", "TAGS")
    assert result.code == 0, result.err
    assert scalar("select count(*) from party where fields->>'tag' = 'salon-2027'") == 2
