"""How a template file's bytes become text: declared encodings first, then UTF-8, then Windows-1252.

Divalto's HTML templates are ISO-8859-1, while editors today write UTF-8; a wrong guess used
to be decoded with replacement characters and sent as "Cher Fran�ois". The order, as browsers
read a page: a byte-order mark, then the step's `encoding:` (as an HTTP header would), then
the HTML's own `<meta charset>`/`http-equiv` declaration; without any, strict UTF-8, then
Windows-1252 with a warning at `apply`. ISO-8859-1 is read as Windows-1252, its superset, as
browsers and mail readers do (WHATWG Encoding): its bytes 0x80–0x9F are € ’ « … in those files.
A file that decodes in no way is refused; no text with U+FFFD is ever returned.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from campflow.errors import CampflowError

BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
        (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_LATIN1 = codecs.lookup("latin-1").name
_ASCII = codecs.lookup("ascii").name
# <meta charset="…"> and <meta http-equiv="Content-Type" content="text/html; charset=…">, in the head
_META = re.compile(rb"""<meta\b[^>]*?\bcharset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.I)
META_SCAN_BYTES = 4096  # browsers look in the first 1024; editors sometimes put a long comment first


class UndecodableTemplate(CampflowError):
    """A template whose bytes are not text in the encoding it declares, nor in UTF-8 or Windows-1252."""


@dataclass(frozen=True)
class DecodedText:
    """A template's text and how it was read; `guessed`: no declaration, and not UTF-8."""

    text: str
    encoding: str
    source: str  # "byte-order mark", "email.encoding", "<meta charset>", "UTF-8 (default)", "guessed"
    utf8_too: bool = False  # declared 8-bit, yet valid UTF-8 with accents: a wrong declaration?

    @property
    def guessed(self) -> bool:
        return self.source == "guessed"


def known_encoding(name: str) -> str | None:
    """The codec name for an encoding label (`ISO-8859-1`, `latin1`, `cp1252`), or None."""
    try:
        return codecs.lookup(name.strip()).name
    except (LookupError, ValueError):
        return None


def decode_template(data: bytes, name: str, declared: str | None = None, html: bool = False) -> DecodedText:
    """The text of a template file named `name`.

    `declared`: the step's `email.encoding`; `html`: look for a `<meta charset>` too.
    Raises UndecodableTemplate naming the file, the line and the byte, and the fix.
    """
    for bom, encoding in BOMS:
        if data.startswith(bom):
            return _strict(data[len(bom):], encoding, name, "byte-order mark")
    if declared:
        return _strict(data, declared, name, "email.encoding")
    found = _META.search(data[:META_SCAN_BYTES]) if html else None
    if found:
        label = found.group(1).decode("ascii")
        if known_encoding(label) is None:
            raise UndecodableTemplate(f"{name}:{_line(data, found.start())}: <meta charset={label}> is not an "
                                      "encoding Python knows; write e.g. utf-8 or iso-8859-1 there")
        return _strict(data, label, name, "<meta charset>")
    try:
        return _checked(data.decode("utf-8"), "utf-8", name, "UTF-8 (default)")
    except UnicodeDecodeError:
        pass
    try:
        return _checked(data.decode("cp1252"), "cp1252", name, "guessed")
    except UnicodeDecodeError as error:
        raise UndecodableTemplate(
            f"{name}:{_line(data, error.start)}: neither UTF-8 nor Windows-1252 (byte 0x{data[error.start]:02X}); "
            "save it as UTF-8, or give its encoding as `encoding:` under the step's email:") from None


_META_TEXT = re.compile(r"""(<meta\b[^>]*?\bcharset\s*=\s*["']?\s*)([A-Za-z0-9._:-]+)""", re.I)


def declare_utf8(html: str) -> str:
    """The HTML with its `<meta charset>` saying utf-8: it is sent as UTF-8 whatever the file was,
    and a reader that believes the meta over the MIME header would garble it again."""
    return _META_TEXT.sub(lambda m: m.group(1) + "utf-8", html)


def _strict(data: bytes, label: str, name: str, source: str) -> DecodedText:
    encoding = known_encoding(label) or label
    if encoding in (_LATIN1, _ASCII):  # read as its superset, as browsers do (bytes 0x80-0x9F)
        try:
            return _checked(data.decode("cp1252"), "cp1252", name, source, _is_utf8(data))
        except UnicodeDecodeError:
            pass  # a byte Windows-1252 leaves undefined: the file is really ISO-8859-1
    try:
        return _checked(data.decode(encoding), encoding, name, source, encoding == "cp1252" and _is_utf8(data))
    except (UnicodeDecodeError, LookupError) as error:
        at = getattr(error, "start", 0)
        byte = f" (byte 0x{data[at]:02X})" if isinstance(error, UnicodeDecodeError) else ""
        raise UndecodableTemplate(
            f"{name}:{_line(data, at)}: not {label} as its {source} says{byte}; save the file in that "
            "encoding, or correct the declaration") from None


def _is_utf8(data: bytes) -> bool:
    try:
        return not data.isascii() and bool(data.decode("utf-8"))
    except UnicodeDecodeError:
        return False


def _checked(text: str, encoding: str, name: str, source: str, utf8_too: bool = False) -> DecodedText:
    lost = text.find("\ufffd")
    if lost >= 0:  # a character already lost by an earlier conversion: it would be sent as such
        raise UndecodableTemplate(f"{name}:{text.count(chr(10), 0, lost) + 1}: holds U+FFFD, the mark of a "
                                  "character lost in an earlier conversion; retype that character")
    return DecodedText(text, encoding, source, utf8_too)


def _line(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


__all__ = ["DecodedText", "UndecodableTemplate", "declare_utf8", "decode_template", "known_encoding"]
