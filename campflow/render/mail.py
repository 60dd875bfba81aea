"""E-mail messages personalised per recipient, built as bytes without the `email` package's cost.

Templates are split once: `[[TABLE.FIELD]]` (HTML, text, subjects) and `[TABLE.FIELD]` (RTF)
become literal parts and value slots, joined per recipient; `.j2` bodies are compiled once in
campflow's Jinja2 sandbox. The MIME structure (headers that never change, boundaries,
attachments already base64-encoded) is built once too; a message is its per-recipient
headers and bodies (quoted-printable, by `binascii`) joined between those constant chunks.
Building a message with `email.message.EmailMessage` cost ~6 ms here (~0.05 ms this way);
header folding through `email.policy` ~0.6 ms, so headers are RFC 2047 encoded here and
their round trip through `email.policy.default` is tested.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import html
import mimetypes
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import encode_rfc2231, formataddr, formatdate, parseaddr
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, meta, nodes
from jinja2.exceptions import SecurityError

from campflow.core.template_fields import template_fields
from campflow.errors import CampflowError
from campflow.paths import PathRefused, read_stored
from campflow.render.charsets import UndecodableTemplate, declare_utf8, decode_template
from campflow.render.templates import TEMPLATE_TABLES, sandbox

HTML_SUFFIXES = (".html", ".htm")
_LOOKS_HTML = re.compile(r"<(?:!doctype|html|body|p|div|br|table|a|b|i|strong|em|span|h[1-6]|ul|ol|li)\b", re.I)
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


# --- HTML and RTF as plain text ----------------------------------------------------------------


class _HtmlText(HTMLParser):
    BLOCKS = {"p", "div", "tr", "table", "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote",
              "pre", "hr", "section", "article", "header", "footer", "dl", "dt", "dd"}
    HIDDEN = {"script", "style", "head", "title", "template"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.hidden = 0
        self.links: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self.hidden += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag in self.BLOCKS:
            self.out.append("\n\n" if tag in ("p", "table", "ul", "ol") or tag[0] == "h" else "\n")
            if tag == "li":
                self.out.append("- ")
        elif tag == "a":
            self.links.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BLOCKS and tag != "li":  # the next item starts its own line
            self.out.append("\n")
        elif tag == "a" and self.links:
            href = self.links.pop()
            if href and not href.startswith(("#", "javascript:")) and href not in "".join(self.out[-3:]):
                self.out.append(f" ({href.removeprefix('mailto:')})")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.out.append(re.sub(r"\s+", " ", data))


def html_to_text(source: str) -> str:
    """A readable plain-text alternative of an HTML body."""
    parser = _HtmlText()
    parser.feed(source)
    parser.close()
    return _tidy("".join(parser.out))


_RTF_TOKEN = re.compile(r"\\([a-zA-Z]{1,32})(-?[0-9]{1,10})? ?|\\'([0-9a-fA-F]{2})|\\(.)|([{}])|(\r\n|\r|\n)|([^\\{}\r\n]+)",
                        re.S)
_RTF_HIDDEN = {"fonttbl", "colortbl", "stylesheet", "info", "pict", "header", "footer", "headerl", "headerr",
               "footerl", "footerr", "object", "listtable", "listoverridetable", "rsidtbl", "generator",
               "xmlnstbl", "themedata", "colorschememapping", "latentstyles", "datastore", "fldinst"}


def rtf_to_text(source: str) -> str:
    """The text of an RTF document (paragraphs, tabs, \\'hh and \\uN characters)."""
    out: list[str] = []
    stack: list[tuple[bool, int]] = []
    hidden, skip_chars, fallback = False, 0, 1
    for word, number, hexa, symbol, brace, newline, text in _RTF_TOKEN.findall(source):
        if brace:
            if brace == "{":
                stack.append((hidden, fallback))
            elif stack:
                hidden, fallback = stack.pop()
            continue
        if newline:
            continue
        if skip_chars and (hexa or text):  # the fallback characters after \uN
            if text:
                text = text[skip_chars:] if len(text) > skip_chars else ""
                skip_chars = 0
            else:
                skip_chars -= 1
                continue
        if word:
            if word in _RTF_HIDDEN:
                hidden = True
            elif word == "uc":
                fallback = int(number or 1)
            elif hidden:
                pass
            elif word in ("par", "line", "sect", "page", "row"):
                out.append("\n")
            elif word == "tab" or word == "cell":
                out.append("\t")
            elif word == "u":
                code = int(number) % 65536
                out.append(chr(code))
                skip_chars = fallback
        elif symbol:
            if symbol == "*":
                hidden = True
            elif not hidden:
                out.append({"~": "\u00a0", "_": "-", "-": ""}.get(symbol, symbol))
        elif hexa and not hidden:
            out.append(bytes([int(hexa, 16)]).decode("cp1252", "replace"))
        elif text and not hidden:
            out.append(text)
    joined = "".join(out)
    # \uN pairs written for characters outside the BMP
    joined = joined.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return _tidy(joined)


def _tidy(text: str) -> str:
    lines = [" ".join(line.split()) if "\t" not in line else line.strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


# --- headers and addresses -------------------------------------------------------------------


def encode_words(text: str, used: int = 1) -> str:
    """RFC 2047 encoded words (UTF-8, base64) folded so each line stays within 78 characters.

    `used`: the characters already on the first line (`Subject: ` is 9).
    """
    data = text.encode("utf-8")
    words, start = [], 0
    budget = max(3, (78 - used - 12) // 4 * 3)  # bytes whose base64 fits beside =?utf-8?b? and ?=
    while len(data) - start > budget:
        cut = start + budget
        while data[cut] & 0xC0 == 0x80:  # never inside a character
            cut -= 1
        words.append(data[start:cut])
        start, budget = cut, 48  # continuation lines: one space, 64 base64 characters, 12 of syntax
    words.append(data[start:])
    return "\r\n ".join(f"=?utf-8?b?{binascii.b2a_base64(w, newline=False).decode('ascii')}?=" for w in words)


def header_text(text: str, name: str) -> str:
    """An unstructured header value (Subject…): one line of text, encoded when not plain ASCII."""
    text = " ".join(text.split())
    if text.isascii() and "=?" not in text:
        if len(name) + 2 + len(text) <= 78:
            return text
        return _fold(text, len(name) + 2)
    return encode_words(text, len(name) + 2)


def _fold(text: str, used: int) -> str:
    lines, line = [], ""
    for word in text.split(" "):
        if line and used + len(line) + 1 + len(word) > 78:
            lines.append(line)
            line, used = word, 1
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\r\n ".join(lines)


def format_address(name: str | None, address: str) -> str:
    """`Display Name <address>`: quoted when needed, RFC 2047 encoded when not ASCII.

    A non-ASCII name is one encoded word, as the email package's `formataddr` writes it: Python's own
    address parser puts a space between adjacent encoded words of a name, so a long name
    split in several words would not come back as written.
    """
    name = " ".join((name or "").split())[:200]
    if not name:
        return address
    if name.isascii():
        return formataddr((name, address))  # quotes names with specials: "Dupont, Jean"
    # what formataddr(…, charset="utf-8") writes, without its choice between Q and B (25 µs)
    return f"=?utf-8?b?{binascii.b2a_base64(name.encode('utf-8'), newline=False).decode('ascii')}?= <{address}>"


def sender_header(sender: str) -> tuple[str, str]:
    """(From header value, envelope address) of a channel's sender."""
    name, address = parseaddr(sender)
    return format_address(name, address), address


_ADDRESS_FORBIDDEN = set('<>(),;:"[]\\')


def check_address(raw: str | None) -> tuple[str | None, str | None]:
    """(address to send to, None) or (None, why it cannot be sent to)."""
    if raw is None or not raw.strip():
        return None, "no e-mail address"
    address = raw.strip()
    shown = address if len(address) <= 80 else address[:77] + "…"
    if "@" not in address:
        return None, f"invalid address {shown!r}: no @"
    local, _, domain = address.rpartition("@")
    bad = next((c for c in address if c.isspace() or c in _ADDRESS_FORBIDDEN or ord(c) < 32), None)
    if bad is not None:
        return None, f"invalid address {shown!r}: contains {bad!r}"
    if not local or "@" in local:
        return None, f"invalid address {shown!r}: {'nothing before the @' if not local else 'more than one @'}"
    if not domain or domain.startswith(".") or domain.endswith(".") or ".." in domain:
        return None, f"invalid address {shown!r}: bad domain {domain!r}"
    if not local.isascii():
        return None, f"invalid address {shown!r}: accented letters before the @ need SMTPUTF8"
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return None, f"invalid address {shown!r}: bad domain {domain!r}"
    return f"{local}@{domain}", None


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def message_filename(party_code: str, contact_code: str | None) -> str:
    """The .eml name of a party's (contact's) message: safe on every file system."""
    stem = party_code if contact_code is None else f"{party_code}-{contact_code}"
    return f"{_UNSAFE_NAME.sub('_', stem).strip('.') or 'message'}.eml"


_DATE_CACHE: list[Any] = [0, ""]


def date_header() -> str:
    now = int(time.time())
    if _DATE_CACHE[0] != now:
        _DATE_CACHE[:] = [now, formatdate(now, localtime=True)]
    return _DATE_CACHE[1]


# --- the message -----------------------------------------------------------------------------


def qp_body(text: str) -> bytes:
    """A text body as quoted-printable bytes with CRLF line ends."""
    crlf = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    return binascii.b2a_qp(crlf.encode("utf-8"), istext=True)


def base64_lines(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _filename_params(name: str) -> tuple[str, str]:
    """The `name=` and `filename=` parameters of a part (RFC 2231 when not ASCII)."""
    if name.isascii() and '"' not in name and "\\" not in name:
        return f'name="{name}"', f'filename="{name}"'
    encoded = encode_rfc2231(name, "utf-8")
    return f"name*={encoded}", f"filename*={encoded}"


def attachment_part(name: str, data: bytes, content_type: str | None = None) -> bytes:
    """A MIME attachment part (headers and base64 body), without its boundary line."""
    content_type = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    name_param, filename_param = _filename_params(name)
    head = (f"Content-Type: {content_type}; {name_param}\r\nContent-Transfer-Encoding: base64\r\n"
            f"Content-Disposition: attachment; {filename_param}\r\n\r\n")
    return head.encode("ascii") + base64_lines(data)


_TEXT_HEAD = b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
_HTML_HEAD = b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'


@dataclass
class Recipient:
    """Who one message goes to, and the values of its fields (in the template's column order)."""

    address: str
    name: str | None
    party_code: str
    message_id: str
    values: Sequence[Any]


class MessageTemplate:
    """Subject, bodies and attachments of a step's message, compiled once, built per recipient."""

    def __init__(self, subject: FieldText, *, text: FieldText | JinjaBody | None,
                 html_body: FieldText | JinjaBody | None, rtf: FieldText | None = None,
                 rtf_name: str = "message.rtf", attachments: Sequence[tuple[str, bytes]] = ()) -> None:
        self.subject = subject
        self.text = text
        self.html = html_body
        self.rtf = rtf
        self.rtf_name = rtf_name
        self.attachments = tuple(attachment_part(name, data) for name, data in attachments)
        self.constant_headers = b""
        self.boundary = f"=_campflow_{uuid.uuid4().hex}"  # "=_" never occurs in QP or base64

    @property
    def pieces(self) -> tuple[FieldText | JinjaBody, ...]:
        return tuple(p for p in (self.subject, self.text, self.html, self.rtf) if p is not None)

    @property
    def references(self) -> tuple[str, ...]:
        """Every field reference as written, each once, in order of appearance."""
        return tuple(dict.fromkeys(r for piece in self.pieces for r in piece.references))

    def bind(self, index_of: dict[str, int], *, sender: str, operation: str, step: str) -> None:
        """Point every reference at its value's position; fix the headers that never change."""
        for piece in self.pieces:
            piece.bind(index_of)
        from_header, _ = sender_header(sender)
        self.constant_headers = (
            f"From: {from_header}\r\nMIME-Version: 1.0\r\n"
            f"X-Campflow-Operation: {header_text(operation, 'X-Campflow-Operation')}\r\n"
            f"X-Campflow-Step: {header_text(step, 'X-Campflow-Step')}\r\n").encode("ascii")

    def build(self, recipient: Recipient) -> bytes:
        """The whole message for one recipient: headers and MIME body, CRLF line ends.

        Raises EmptyField naming the party when a field without a default is NULL or blank.
        """
        values = recipient.values
        texts = [format_value(v) for v in values]
        try:
            subject = self.subject.render(texts)
            body = self._body(values, texts)
        except EmptyField as exc:
            raise exc.for_party(recipient.party_code) from None
        head = (f"To: {format_address(recipient.name, recipient.address)}\r\n"
                f"Subject: {header_text(subject, 'Subject')}\r\nDate: {date_header()}\r\n"
                f"Message-ID: {recipient.message_id}\r\n"
                f"X-Campflow-Party: {header_text(recipient.party_code, 'X-Campflow-Party')}\r\n")
        return self.constant_headers + head.encode("ascii") + body

    def _render(self, piece: FieldText | JinjaBody, values: Sequence[Any], texts: list[str]) -> str:
        return piece.render(values) if isinstance(piece, JinjaBody) else piece.render(texts)

    def _body(self, values: Sequence[Any], texts: list[str]) -> bytes:
        boundary = self.boundary.encode("ascii")
        text = self._render(self.text, values, texts) if self.text is not None else None
        if self.html is not None:
            html_text = self._render(self.html, values, texts)
            if text is None:
                text = html_to_text(html_text)  # a .j2 HTML body without text_body
            inner = [b'Content-Type: multipart/alternative; boundary="', boundary, b'a"\r\n\r\n--', boundary,
                     b"a\r\n", _TEXT_HEAD, qp_body(text), b"\r\n--", boundary, b"a\r\n", _HTML_HEAD,
                     qp_body(html_text), b"\r\n--", boundary, b"a--\r\n"]
        else:
            inner = [_TEXT_HEAD, qp_body(text or "")]
        extra = list(self.attachments)
        if self.rtf is not None:
            rtf = self.rtf.render(texts).encode("latin-1", "replace")  # the file's bytes, values escaped
            extra.insert(0, attachment_part(self.rtf_name, rtf, "application/rtf"))
        if not extra:
            return b"".join(inner)
        out = [b'Content-Type: multipart/mixed; boundary="', boundary, b'm"\r\n\r\n--', boundary, b"m\r\n",
               *inner]
        for part in extra:
            out += [b"\r\n--", boundary, b"m\r\n", part]
        out += [b"\r\n--", boundary, b"m--\r\n"]
        return b"".join(out)


# --- compiling a step's `email:` settings --------------------------------------------------------


def compile_message(email: dict[str, Any], place: str) -> MessageTemplate:
    """The step's message: `body:` a file by its suffix (.html/.htm, .txt, .rtf, .j2), or inline
    `text:` (plain) or `html:`.

    Raises TemplateRefused for a template that may not run, CampflowError for a file that is
    missing or no longer the one apply checked (campflow.paths.read_stored).
    """
    subject = email.get("subject")
    body, inline_text, inline_html = email.get("body"), email.get("text"), email.get("html")
    if not isinstance(subject, str) or [isinstance(v, str) for v in (body, inline_text, inline_html)].count(True) != 1:
        raise CampflowError(f"{place}: an e-mail step needs `email:` with a subject and one of body (a template "
                            "file), text or html; apply the spec again")
    encoding = email.get("encoding")
    text = _text_body(email.get("text_body"), place, encoding)
    attachments = [_read(Path(a), place, "attachment") for a in email.get("attachments") or ()]
    subject_text = FieldText.parse(subject, "html", no_escape)
    files = [(Path(a).name, data) for a, data in zip(email.get("attachments") or (), attachments)]
    if isinstance(inline_html, str):
        html_body = FieldText.parse(inline_html, "html", html_escape)
        return MessageTemplate(subject_text, text=text or html_body.derive(html_to_text), html_body=html_body,
                               attachments=files)
    if isinstance(inline_text, str):
        return MessageTemplate(subject_text, text=FieldText.parse(inline_text, "text", no_escape), html_body=None,
                               attachments=files)
    suffix = _suffix(body)
    if suffix is None:  # stored before `body:` meant a file only: never send a path as the text
        raise CampflowError(f"{place}: email.body {body[:60]!r} is not a template file; give inline text as "
                            "`text:` or `html:` and apply the spec again")
    path = Path(body)
    source = _source(path, place, "body", suffix, encoding)
    if suffix in HTML_SUFFIXES:
        html_body = FieldText.parse(declare_utf8(source), "html", html_escape)
        return MessageTemplate(subject_text, text=text or html_body.derive(html_to_text), html_body=html_body,
                               attachments=files)
    if suffix == ".rtf":
        rtf = FieldText.parse(source, "rtf", rtf_escape)
        return MessageTemplate(subject_text, text=text or rtf.derive(rtf_to_text), html_body=None, rtf=rtf,
                               rtf_name=path.name, attachments=files)
    if suffix == ".j2":
        as_html = path.stem.lower().endswith(HTML_SUFFIXES) or bool(_LOOKS_HTML.search(source))
        jinja = JinjaBody(declare_utf8(source) if as_html else source, path.name, as_html)
        if as_html:
            return MessageTemplate(subject_text, text=text, html_body=jinja, attachments=files)
        return MessageTemplate(subject_text, text=jinja, html_body=None, attachments=files)
    return MessageTemplate(subject_text, text=FieldText.parse(source, "text", no_escape), html_body=None,
                           attachments=files)


def _suffix(value: str) -> str | None:
    if "\n" in value:
        return None
    lowered = value.lower()
    return next((s for s in (".html", ".htm", ".txt", ".rtf", ".j2") if lowered.endswith(s)), None)


def _text_body(value: str | None, place: str, encoding: str | None = None) -> FieldText | JinjaBody | None:
    if not value:
        return None
    suffix = _suffix(value)
    if suffix is None:
        raise CampflowError(f"{place}: email.text_body {value[:60]!r} is not a template file; apply the spec again")
    path = Path(value)
    source = _source(path, place, "text_body", suffix, encoding)
    if suffix == ".j2":
        return JinjaBody(source, path.name, as_html=False)
    if suffix in HTML_SUFFIXES:
        return FieldText.parse(source, "html", no_escape).derive(html_to_text)
    if suffix == ".rtf":
        return FieldText.parse(source, "rtf", no_escape).derive(rtf_to_text)
    return FieldText.parse(source, "text", no_escape)


def _source(path: Path, place: str, what: str, suffix: str, encoding: str | None) -> str:
    """A body file's text, decoded by campflow.render.charsets' rules (apply warned of a guess)."""
    data = _read(path, place, what)
    if suffix == ".rtf":  # 8-bit text in its own code page (\\ansicpg): kept byte for byte
        return data.decode("latin-1")
    try:
        return decode_template(data, str(path), encoding, html=suffix in (*HTML_SUFFIXES, ".j2")).text
    except UndecodableTemplate as exc:
        raise TemplateRefused(f"{place}: {what} {exc}; nothing was sent") from None


def _read(path: Path, place: str, what: str) -> bytes:
    """The file apply checked, if it still is that file (no symlink swapped in since)."""
    try:
        return read_stored(path)
    except PathRefused as exc:
        raise CampflowError(f"{place}: {what} refused: {exc}; nothing was sent") from None


__all__ = [
    "EmptyField", "FieldText", "JinjaBody", "MessageTemplate", "Recipient", "TemplateRefused",
    "check_address", "compile_message", "encode_words", "format_address", "format_value", "header_text",
    "html_to_text", "jinja_problems", "message_filename", "rtf_escape", "rtf_to_text", "sender_header",
]
