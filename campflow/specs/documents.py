"""Spec documents read from files and checked against their schema, each problem with its line."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from campflow.errors import Problem, closest
from campflow.specs.schema import SPEC_KINDS, Strict
from campflow.specs.source import SourceDocument, load_documents, spec_files

Loc = tuple[Any, ...]


@dataclass
class Document:
    """A spec document that passed its schema."""

    source: SourceDocument
    spec: Strict
    warnings: list[Problem] = dataclass_field(default_factory=list)  # `apply` prints them, writes anyway

    @property
    def kind(self) -> str:
        return type(self.spec).__name__.removesuffix("Spec")

    def place(self, loc: Loc = ()) -> str:
        return self.source.place(loc)


def read_specs(target: Path) -> tuple[list[Document], list[Problem]]:
    """Parse every document of a file or folder against its schema."""
    if not target.exists():
        return [], [Problem(str(target), "no such file or folder")]
    documents: list[Document] = []
    problems: list[Problem] = []
    files = list(spec_files(target))
    if not files:
        problems.append(Problem(str(target), "no .yaml or .yml file here"))
    for path in files:
        sources, found = load_documents(path)
        problems += found
        for source in sources:
            doc, found = parse_document(source)
            problems += found
            if doc:
                documents.append(doc)
    return documents, problems


def parse_document(source: SourceDocument) -> tuple[Document | None, list[Problem]]:
    data = source.data
    if not isinstance(data, dict):
        return None, [Problem(source.place(), "a spec document is a mapping with `kind:`")]
    kind = data.get("kind")
    model = SPEC_KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        return None, [Problem(source.place(("kind",)),
                              f"unknown kind {kind!r}{closest(str(kind), SPEC_KINDS)}")]
    try:
        return Document(source, model.model_validate(data)), []
    except ValidationError as exc:
        return None, [_schema_problem(source, model, error) for error in exc.errors()]


def _schema_problem(source: SourceDocument, model: type[Strict], error: dict) -> Problem:
    loc = tuple(error["loc"])
    # pydantic names union/tagged branches in loc; keep only the path into the data
    path = tuple(part for part in loc if isinstance(part, int) or part in _keys_on_path(source.data, loc))
    where = ".".join(str(p) for p in path) or source.data.get("kind", "document")
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, path[:-1], source.data)
        message = f"unknown key {path[-1]!r}{closest(str(path[-1]), allowed)}"
    elif error["type"] == "missing":
        message = f"`{path[-1]}` is required" if path else "a required key is missing"
        return Problem(source.place(path[:-1]), f"{'.'.join(map(str, path[:-1])) or 'document'}: {message}")
    return Problem(source.place(path), f"{where}: {message}")


def _keys_on_path(data: Any, loc: Loc) -> set[Any]:
    keys: set[Any] = set()
    node = data
    for part in loc:
        keys.add(part)
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        elif isinstance(node, dict):
            keys.discard(part)
    return keys


def _allowed_keys(model: type[Strict], path: Loc, data: Any) -> list[str]:
    """The keys the schema accepts at `path` (for 'did you mean')."""
    node_model: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        field = node_model.model_fields.get(part) if hasattr(node_model, "model_fields") else None
        if field is None:
            return []
        node_model = _inner_model(field.annotation)
    if not hasattr(node_model, "model_fields"):
        return []
    return [f.alias or name for name, f in node_model.model_fields.items()]


def _inner_model(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return annotation if isinstance(annotation, type) and issubclass(annotation, Strict) else None
