"""Mail headers and addresses: RFC 2047 encoded words and folding, address checks, file names,
the Date header."""

from __future__ import annotations

import binascii
import re
import time
from email.utils import formataddr, formatdate, parseaddr
from typing import Any

__all__ = [
    "check_address",
    "encode_words",
    "format_address",
    "header_text",
    "message_filename",
    "sender_header",
]


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
