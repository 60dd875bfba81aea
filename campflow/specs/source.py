"""YAML documents that remember the line of every key and item.

Spec errors must name `file:line`; this loader keeps the lines of mapping keys and
sequence items, so any validation error's location path maps back to a line.
It also refuses duplicate keys, and keeps `yes`/`no`/`on`/`off` and dates as text
(the schemas decide what a value means, not YAML 1.1).

A spec comes from people, not always careful or friendly: a file larger than
MAX_SPEC_BYTES is refused before parsing, and a document whose aliases would expand beyond
MAX_EXPANDED_NODES nodes or MAX_EXPANDED_CHARS characters of text is refused before it is
built (764 bytes of nested aliases expand to a billion nodes).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from campflow.errors import Problem

MAX_SPEC_BYTES = 1024 * 1024  # 1 MiB: specs are a few kB; a larger file is a mistake or an attack
MAX_EXPANDED_NODES = 100_000  # nodes of one document once every alias is written out
MAX_EXPANDED_CHARS = 4 * MAX_SPEC_BYTES  # characters of scalar text once every alias is written out


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
    # a document built in code (`path` then names its origin, e.g. "<ops new X>") keeps the
    # spec file of the operation it copies: its paths lie in that file's folder, or in one of
    # `also_in` (the folder of a template step's spec copied into it)
    copied_from: Path | None = None
    also_in: tuple[Path, ...] = ()

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def spec_file(self) -> Path | None:
        """The spec file whose folder the document's paths lie in (None: not known)."""
        return self.copied_from if self.copied_from is not None or self.path.name.startswith("<") \
            else self.path.resolve()

    @property
    def base(self) -> Path:
        """The folder the document's relative paths start from."""
        return self.spec_file.parent if self.spec_file is not None else self.path.parent

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
    text, problem = _read_spec_text(path)
    if problem:
        return [], [problem]
    loader = _Loader(text)
    loader.problems, loader.path = [], str(path)
    documents: list[SourceDocument] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if problem := expansion_problem(node, str(path)):
                return [], [problem]
            data = loader.construct_document(node)
            if data is not None:
                documents.append(SourceDocument(path, len(documents), data, node.start_mark.line + 1))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        return [], [Problem(f"{path}:{line}", f"YAML syntax: {exc.problem or exc}")]
    except RecursionError:
        return [], [Problem(f"{path}:1", "the YAML is nested too deeply; a spec needs a few levels, not hundreds")]
    finally:
        loader.dispose()
    return documents, loader.problems


def _read_spec_text(path: Path) -> tuple[str, Problem | None]:
    """The file's text, refused when larger than MAX_SPEC_BYTES (read no further than that)."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        return "", Problem(str(path), f"cannot read the file: {exc.strerror}")
    if len(raw) > MAX_SPEC_BYTES:
        return "", Problem(f"{path}:1", f"the file is larger than 1 MiB ({MAX_SPEC_BYTES:,} bytes), the most a "
                           "spec file may hold; split it into several files")
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return "", Problem(f"{path}:1", f"not UTF-8 text ({exc.reason}); save the file as UTF-8")


class _Cycle(Exception):
    """An alias inside the node it names: the document would be infinite."""

    def __init__(self, node: yaml.Node) -> None:
        self.node = node


def expansion_problem(root: yaml.Node, name: str) -> Problem | None:
    """A problem when the document, its aliases written out, exceeds the bounds; else None.

    Measured on the composed node graph (an alias is the very node it names), with each node
    measured once, so a billion-node document is refused in microseconds.
    """
    sizes: dict[int, tuple[int, int]] = {}
    uses: dict[int, int] = {}
    try:
        nodes, chars = _expanded(root, sizes, uses, set())
    except _Cycle as cycle:
        return Problem(f"{name}:{cycle.node.start_mark.line + 1}",
                       "an alias refers to the node that contains it (an endless document); remove it")
    if nodes <= MAX_EXPANDED_NODES and chars <= MAX_EXPANDED_CHARS:
        return None
    repeated = [n for n in _walk_once(root) if uses.get(id(n), 0) > 1]
    worst = max(repeated, key=lambda n: sizes[id(n)][0] * uses[id(n)], default=root)
    return Problem(f"{name}:{worst.start_mark.line + 1}",
                   f"aliases expand this document to {nodes:,} nodes and {chars:,} characters; at most "
                   f"{MAX_EXPANDED_NODES:,} nodes and {MAX_EXPANDED_CHARS:,} characters are allowed "
                   "(write the values out, or repeat less)")


def _expanded(node: yaml.Node, sizes: dict[int, tuple[int, int]], uses: dict[int, int],
              active: set[int]) -> tuple[int, int]:
    key = id(node)
    uses[key] = uses.get(key, 0) + 1
    if key in sizes:
        return sizes[key]
    if key in active:
        raise _Cycle(node)
    active.add(key)
    nodes, chars = 1, 0
    if isinstance(node, yaml.ScalarNode):
        chars = len(node.value)
    else:
        children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
        for child in children:
            child_nodes, child_chars = _expanded(child, sizes, uses, active)
            nodes, chars = nodes + child_nodes, chars + child_chars
    active.discard(key)
    sizes[key] = (nodes, chars)
    return nodes, chars


def _walk_once(root: yaml.Node) -> Iterator[yaml.Node]:
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(n for pair in node.value for n in pair)


def spec_files(target: Path) -> Iterator[Path]:
    """The YAML files of a file or a directory (recursively, sorted)."""
    if target.is_dir():
        yield from sorted(p for p in target.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    else:
        yield target
