"""YAML documents that remember the line of every key and item.

Spec errors must name `file:line`; this loader keeps the lines of mapping keys and
sequence items, so any validation error's location path maps back to a line.
It also refuses duplicate keys, and keeps `yes`/`no`/`on`/`off` and dates as text
(the schemas decide what a value means, not YAML 1.1).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from campflow.errors import Problem


class LineDict(dict):
    """A mapping with `line` (its own) and `key_lines` (each key's line), 1-based."""

    line: int = 0
    key_lines: dict[Any, int]


class LineList(list):
    """A sequence with `line` and `item_lines`, 1-based."""

    line: int = 0
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    problems: list[Problem]
    path: str


# Only true/false are booleans, and timestamps stay text: "non" and "no" are answers.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (
        "tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in result:
            loader.problems.append(Problem(
                f"{loader.path}:{line}",
                f"duplicate key {key!r} (first at line {result.key_lines[key]}); keep one",
            ))
            continue
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    result = LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


@dataclass
class SourceDocument:
    """One YAML document of a file, with its lines."""

    path: Path
    index: int
    data: Any
    line: int

    @property
    def name(self) -> str:
        return str(self.path)

    def place(self, loc: Sequence[Any] = ()) -> str:
        return f"{self.name}:{line_of(self.data, loc, self.line)}"


def line_of(data: Any, loc: Sequence[Any], default: int) -> int:
    """The line of the deepest node of `loc` that exists in `data`."""
    line = getattr(data, "line", default) or default
    node = data
    for part in loc:
        if isinstance(node, LineDict) and part in node:
            line = node.key_lines.get(part, line)
            node = node[part]
        elif isinstance(node, LineList) and isinstance(part, int) and 0 <= part < len(node):
            line = node.item_lines[part]
            node = node[part]
        else:
            break
    return line


def load_documents(path: Path) -> tuple[list[SourceDocument], list[Problem]]:
    """Every document of a YAML file, or the problems that stop reading it."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return [], [Problem(f"{path}:1", f"not UTF-8 text ({exc.reason}); save the file as UTF-8")]
    loader = _Loader(text)
    loader.problems, loader.path = [], str(path)
    documents: list[SourceDocument] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            data = loader.construct_document(node)
            if data is not None:
                documents.append(SourceDocument(path, len(documents), data, node.start_mark.line + 1))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        return [], [Problem(f"{path}:{line}", f"YAML syntax: {exc.problem or exc}")]
    finally:
        loader.dispose()
    return documents, loader.problems


def spec_files(target: Path) -> Iterator[Path]:
    """The YAML files of a file or a directory (recursively, sorted)."""
    if target.is_dir():
        yield from sorted(p for p in target.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    else:
        yield target
