"""Field markers of templates: `[[TABLE.FIELD|default]]` (HTML, text), `[TABLE.FIELD]` (RTF),
`TABLE__FIELD` (Word); `campflow.core.fields` resolves the names they hold."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "TemplateField",
    "parse_template_fields",
    "split_default",
    "template_fields",
]


# --- templates -------------------------------------------------------------------------------

_REFERENCE = r"[A-Za-z_]\w*(?:\.\w+)+(?:\([0-9]+\))?"
_TEMPLATE_FIELDS = {
    # Anything between [[ ]] is meant as a field: a typo must fail at apply, not send a blank.
    "html": re.compile(r"\[\[(.*?)\]\]"),
    # In RTF `[` is plain text and control words use \ and {}, so only [NAME.NAME…] counts;
    # a default after `|` may hold RTF escapes (\'e9) but no group.
    "rtf": re.compile(rf"\[({_REFERENCE})(?:\|([^\]{{}}\r\n]*))?\]"),
    # Word MERGEFIELD names: TABLE__FIELD; the table is the shortest run before `__`.
    "merge": re.compile(r"(?<!\w)([A-Za-z]\w*?__\w+(?:\([0-9]+\))?)"),
}
_TEMPLATE_FIELDS["text"] = _TEMPLATE_FIELDS["html"]


@dataclass(frozen=True)
class TemplateField:
    """A field marker of a template: `[[PRO.NOM|Madame, Monsieur]]`.

    `reference` spans start:end of the text; the whole marker spans opening:closing.
    `default` is the text after `|` (stripped; "" is a default too), None without `|`.
    """

    reference: str
    start: int
    end: int
    default: str | None
    opening: int
    closing: int


def template_fields(text: str, syntax: str) -> tuple[TemplateField, ...]:
    """The field markers of a template, with their defaults.

    Args:
        syntax: "html" (also "text": `[[TABLE.FIELD|default]]`), "rtf"
            (`[TABLE.FIELD|default]`) or "merge" (`TABLE__FIELD`, never a default).
    """
    if syntax not in _TEMPLATE_FIELDS:
        raise ValueError(f"syntax must be one of {', '.join(_TEMPLATE_FIELDS)}; got {syntax!r}")
    found = []
    for match in _TEMPLATE_FIELDS[syntax].finditer(text):
        raw, start = match.group(1), match.start(1)
        default = match.group(2) if syntax == "rtf" else None
        if syntax in ("html", "text") and "|" in raw:
            raw, default = raw.split("|", 1)
        stripped = raw.strip()
        start += len(raw) - len(raw.lstrip())
        default = None if default is None else default.strip()
        found.append(TemplateField(stripped, start, start + len(stripped), default, match.start(), match.end()))
    return tuple(found)


def parse_template_fields(text: str, syntax: str) -> tuple[tuple[str, int, int], ...]:
    """The field references of a template as (reference, start, end), for catalog.resolve."""
    return tuple((f.reference, f.start, f.end) for f in template_fields(text, syntax))


def split_default(written: str) -> tuple[str, str | None]:
    """`PRO.NOM|Madame, Monsieur` (a `document.fields` target) → ("PRO.NOM", "Madame, Monsieur")."""
    if "|" not in written:
        return written.strip(), None
    reference, default = written.split("|", 1)
    return reference.strip(), default.strip()
