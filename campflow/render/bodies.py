"""Bodies personalised per recipient: texts with field markers (FieldText) and Jinja2 bodies (JinjaBody).

Templates are split once: `[[TABLE.FIELD]]` (HTML, text, subjects) and `[TABLE.FIELD]` (RTF)
become literal parts and value slots, joined per recipient; `.j2` bodies are compiled once in
campflow's Jinja2 sandbox.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable, Sequence
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, meta, nodes
from jinja2.exceptions import SecurityError

from campflow.core.template_fields import template_fields
from campflow.errors import CampflowError
from campflow.render.templates import TEMPLATE_TABLES, sandbox

__all__ = [
    "EmptyField",
    "FieldText",
    "JinjaBody",
    "TemplateRefused",
    "format_value",
    "jinja_problems",
    "rtf_escape",
]


_TOKEN = re.compile("\x00([0-9]+)\x00")
DEFAULT_EXAMPLE = "text when empty"  # shown in the fix of an EmptyField


class TemplateRefused(CampflowError):
    """A template that may not run: unsafe, or reading something that is not a field."""


class EmptyField(CampflowError):
    """A field printed without a default whose value is NULL or blank: that message is not sent."""

    def __init__(self, marker: str, fix: str, party: str = "") -> None:
        self.marker, self.fix, self.party = marker, fix, party
        who = f" for {party}" if party else ""
        super().__init__(f"{marker} is empty{who}; give a default: {fix}")

    def for_party(self, party: str) -> EmptyField:
        return EmptyField(self.marker, self.fix, party)


def is_empty(text: str) -> bool:
    """A value that would leave a hole in a message: NULL (formatted as "") or blank."""
    return not text or text.isspace()


# --- values ----------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """How a field value reads in a message: empty for NULL, dates the French way."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        return value.strftime("%d/%m/%Y %H:%M") if (value.hour, value.minute) != (0, 0) else value.strftime("%d/%m/%Y")
    if isinstance(value, dt.date):
        return value.strftime("%d/%m/%Y")
    return str(value)


def no_escape(text: str) -> str:
    return text


def html_escape(text: str) -> str:
    return html.escape(text, quote=True)


def rtf_escape(text: str) -> str:
    """A value written into RTF: `\\ { }` escaped, line breaks as \\line, non-ASCII as \\uN?."""
    if text.isascii() and not any(c in text for c in "\\{}\n\r"):
        return text
    out = []
    for char in text.replace("\r\n", "\n").replace("\r", "\n"):
        code = ord(char)
        if char in "\\{}":
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\line ")
        elif code < 128:
            out.append(char)
        elif code < 0x10000:
            out.append(f"\\u{code - 65536 if code > 32767 else code}?")
        else:  # outside the BMP: a UTF-16 surrogate pair
            code -= 0x10000
            for unit in (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)):
                out.append(f"\\u{unit - 65536}?")
    return "".join(out)


# --- templates with [[TABLE.FIELD]] markers -----------------------------------------------------


class FieldText:
    """A text split once at its field markers: literal, slot, literal, … joined per recipient.

    A marker's default (`[[PRO.NOM|Madame, Monsieur]]`) is template text, written unescaped
    where the value is NULL or blank; without one, such a value raises EmptyField.
    """

    def __init__(self, parts: Sequence[str], references: Sequence[str], escape: Callable[[str], str],
                 defaults: Sequence[str | None] | None = None, syntax: str = "html") -> None:
        self.parts = tuple(parts)
        self.references = tuple(references)
        self.escape = escape
        self.defaults = tuple(defaults) if defaults is not None else (None,) * len(self.references)
        self.syntax = syntax  # how markers are written, for EmptyField's message
        self.slots: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str, syntax: str, escape: Callable[[str], str]) -> FieldText:
        """Split at `[[…]]` (syntax "html"/"text") or `[…]` (syntax "rtf")."""
        parts, references, defaults, cut = [], [], [], 0
        for found in template_fields(text, syntax):
            parts.append(text[cut:found.opening])
            references.append(found.reference)
            defaults.append(found.default)
            cut = found.closing
        parts.append(text[cut:])
        return cls(parts, references, escape, defaults, syntax)

    def tokenised(self) -> str:
        """The text with each marker as a token that survives HTML/RTF-to-text conversion."""
        out = [self.parts[0]]
        for k, part in enumerate(self.parts[1:]):
            out += [f"\x00{k}\x00", part]
        return "".join(out)

    def derive(self, convert: Callable[[str], str]) -> FieldText:
        """The same fields in a converted text (HTML or RTF made plain text), values unescaped."""
        pieces = _TOKEN.split(convert(self.tokenised()))
        references = [self.references[int(k)] for k in pieces[1::2]]
        defaults = [self.defaults[int(k)] for k in pieces[1::2]]
        defaults = [None if d is None else convert(d).strip() for d in defaults]
        return FieldText(pieces[0::2], references, no_escape, defaults, self.syntax)

    def bind(self, index_of: dict[str, int]) -> None:
        self.slots = tuple(index_of[r] for r in self.references)

    def render(self, texts: Sequence[str]) -> str:
        """The text for one recipient; EmptyField when a value is missing and has no default."""
        parts, escape = self.parts, self.escape
        out = [parts[0]]
        for k, slot in enumerate(self.slots, start=1):
            text = texts[slot]
            if is_empty(text):
                default = self.defaults[k - 1]
                if default is None:
                    raise self.empty(k - 1)
                out.append(default)  # template text: already escaped as its format needs
            else:
                out.append(escape(text))
            out.append(parts[k])
        return "".join(out)

    def empty(self, k: int) -> EmptyField:
        """The error of marker k left without a value: the marker as written, and with a default."""
        opening, closing = ("[", "]") if self.syntax == "rtf" else ("[[", "]]")
        reference = self.references[k]
        return EmptyField(f"{opening}{reference}{closing}", f"{opening}{reference}|{DEFAULT_EXAMPLE}{closing}")


# --- Jinja2 bodies ---------------------------------------------------------------------------


class _Record:
    """One table's fields as a template reads them (`party.name`); nothing else is reachable."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __str__(self) -> str:
        raise TypeError("a table is not a value; write TABLE.FIELD, e.g. party.name")


class JinjaBody:
    """A `.j2` body compiled once in the sandbox; undefined names raise instead of printing blanks,
    and so do fields printed empty without `|default(…)` (EmptyField)."""

    def __init__(self, source: str, name: str, as_html: bool) -> None:
        self.name = name
        env = sandbox()
        env.undefined = StrictUndefined
        env.autoescape = as_html
        env.finalize = lambda value: "" if value is None else value
        try:
            tree = env.parse(source, name=name)
        except TemplateSyntaxError as exc:
            raise TemplateRefused(f"{name} line {exc.lineno}: template syntax: {exc.message}") from None
        self.paths = _check_tree(tree, env, name)  # (table, attribute) or ("answers", Q, QUESTION)
        self.references = tuple(".".join(p) for p in self.paths)
        self.template = env.from_string(tree, globals={})
        self.slots: tuple[int, ...] = ()

    def bind(self, index_of: dict[str, int]) -> None:
        self.slots = tuple(index_of[r] for r in self.references)

    def render(self, values: Sequence[Any]) -> str:
        tables: dict[str, dict[str, Any]] = {}
        for path, slot in zip(self.paths, self.slots):
            node = tables.setdefault(path[0], {})
            for key in path[1:-1]:
                node = node.setdefault(key, {})
            value = values[slot]
            missing = value is None or isinstance(value, str) and is_empty(value)
            node[path[-1]] = _Empty(name=".".join(path)) if missing else value
        context = {name: _record(fields) for name, fields in tables.items()}
        try:
            return self.template.render(context)
        except SecurityError as exc:  # EmptyField passes through: this recipient's message fails
            raise TemplateRefused(f"{self.name}: the sandbox refused the template: {exc}; templates may "
                                  "only read fields") from None


class _Empty(Undefined):
    """A NULL or blank field in a `.j2` body: false in `{% if %}`, replaced by `|default(…)`,
    and an EmptyField when printed, so no message goes out with a hole."""

    __slots__ = ()

    def __str__(self) -> str:
        name = self._undefined_name
        raise EmptyField(f"{{{{ {name} }}}}", f"{{{{ {name}|default('{DEFAULT_EXAMPLE}') }}}}")


def _record(fields: dict[str, Any]) -> _Record:
    return _Record({k: _record(v) if isinstance(v, dict) else v for k, v in fields.items()})


def jinja_problems(source: str) -> list[str]:
    """What a `.j2` template may not do: read private attributes, or names that are not tables.

    For apply-time checks too (campflow.specs.validate); syntax errors are check_jinja's to report.
    """
    env = sandbox()
    try:
        tree = env.parse(source)
    except TemplateSyntaxError:
        return []
    return _unsafe(tree, env)


def _unsafe(tree: nodes.Template, env: Any) -> list[str]:
    problems = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        key = node.attr if isinstance(node, nodes.Getattr) else None
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            key = node.arg.value
        if isinstance(node, nodes.Filter) and node.name == "attr" and node.args and isinstance(node.args[0], nodes.Const):
            key = node.args[0].value
        if isinstance(key, str) and key.startswith("_"):
            problems.append(f"line {node.lineno}: '{key}' is a private attribute; templates may only read "
                            "fields (party.name, contact.first_name…)")
    tables = set(TEMPLATE_TABLES) | {"answers"}
    for variable in sorted(meta.find_undeclared_variables(tree) - tables - set(env.globals)):
        problems.append(f"'{variable}' is not a table; templates read {', '.join(sorted(tables))} "
                        "(e.g. {{ party.name }})")
    return problems


def _check_tree(tree: nodes.Template, env: Any, name: str) -> tuple[tuple[str, ...], ...]:
    """The fields a template reads; TemplateRefused for private attributes and unknown names."""
    problems = _unsafe(tree, env)
    if problems:
        raise TemplateRefused(f"{name}: " + "; ".join(problems))
    found: dict[tuple[str, ...], None] = {}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        path = _field_path(node)
        if path and (path[0] in TEMPLATE_TABLES and len(path) == 2 or path[0] == "answers" and len(path) == 3):
            found[path] = None
    return tuple(found)


def _field_path(node: nodes.Node) -> tuple[str, ...] | None:
    """`party.name` → ("party", "name"); `answers.Q1.CAT` → ("answers", "Q1", "CAT")."""
    keys: list[str] = []
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            keys.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            keys.append(node.arg.value)
        else:
            return None
        node = node.node
    if not isinstance(node, nodes.Name):
        return None
    return (node.name, *reversed(keys))
