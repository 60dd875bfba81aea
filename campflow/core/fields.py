"""Field references `TABLE.FIELD`: the names templates, export columns and conditions use.

This module holds the tables and their standard fields, `FieldRef`, and how a written name is
split (`TABLE.FIELD`, `TABLE__FIELD`, an index `(n)`); `campflow.core.field_catalog` looks
names up in one database's catalog.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from campflow.errors import FormulaError

__all__ = [
    "CONDITION_FIELDS",
    "PARTY_KINDS",
    "STANDARD_FIELDS",
    "TABLE_ALIASES",
    "FieldRef",
    "unsupported_condition_field",
]

# Party-kind tables: the party table restricted to one kind.
PARTY_KINDS: Mapping[str, str] = MappingProxyType(
    {"CLI": "client", "PRO": "prospect", "FOU": "supplier", "VRP": "sales_rep", "TIA": "other"}
)
_KIND_TABLES = {kind: alias for alias, kind in PARTY_KINDS.items()}

TABLE_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "party": "party", "PCFIDX": "party", "TIERS": "party",
        **dict.fromkeys(PARTY_KINDS, "party"),
        "contact": "contact", "T2": "contact",
        "operation": "operation", "MANIF": "operation",
        "target": "target", "MANIFTIERS": "target",
        "target_contact": "target_contact", "MANIFCONTACT": "target_contact",
        "step": "step",
        "event": "event", "EVTTIERS": "event",
        "event_code": "event_code", "GRTEVT": "event_code",
        "answers": "answers",
        # a local entity's order values (form fields of its package): ORDER.MAGASIN
        "order": "order", "ORDER": "order", "COMMANDE": "order",
    }
)  # fmt: skip

_TARGET_FIELDS = {
    "added_at": ("DATE_AJOUT",), "source": ("ORIGINE",), "status": ("STATUT",),
    "attempts": ("TENTATIVES",), "callback_at": ("RAPPEL",), "processed_at": ("TRAITE_LE",),
    "reason": ("MOTIF",),
}  # fmt: skip

# Canonical column ← the other names it answers to (the import columns of SPEC section 5).
STANDARD_FIELDS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "party": {
        "code": ("TIERS",), "kind": ("FICHE",), "name": ("NOM", "RAISON_SOCIALE"),
        "email": ("MAIL",), "phone": ("TEL", "TELEPHONE"), "fax": (), "address": ("ADRESSE",),
        "postal_code": ("CP", "CODE_POSTAL"), "city": ("VILLE",), "country": ("PAYS",),
        "created_at": ("CREATION",), "updated_at": ("MODIFICATION",),
    },
    "contact": {
        "code": ("CONTACT",), "last_name": ("NOM", "NAME"), "first_name": ("PRENOM",),
        "function": ("FONCTION",), "email": ("MAIL",), "phone": ("TEL",), "title": ("CIVILITE",),
    },
    "operation": {
        "code": ("MANIF",), "label": ("LIBELLE",), "starts_at": ("DEBUT",), "ends_at": ("FIN",),
        "location": ("LIEU",), "state": ("ETAT",), "family": ("FAMILLE",), "type": (),
        "responsible": ("RESPONSABLE",), "progress": ("AVANCEMENT",),
    },
    "target": _TARGET_FIELDS,
    "target_contact": _TARGET_FIELDS,
    "step": {
        "code": ("ETAPE",), "label": ("LIBELLE",), "kind": ("NATURE",),
        "run_at": ("REALISATION",), "state": ("ETAT",),
    },
    "event": {"code": ("CODE_EVT",), "occurred_at": ("DATE",)},
    "event_code": {"code": (), "label": ("LIBELLE",)},
}  # fmt: skip

# The columns of operation (MANIF) and step a condition may compare: an operation's or a
# step's own text and numbers, the state above all. Routing reads them with one uncorrelated
# subquery per condition (campflow/store/conditions.py).
CONDITION_FIELDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "operation": ("code", "label", "location", "state", "progress"),
    "step": ("code", "label", "kind", "state"),
})
_CONDITION_FIX = {
    "answers": "write answer: QUESTIONNAIRE.QUESTION instead",
    "target": "a party's status in a step is a status condition: status: {step: S1, in: [ok_continue]}",
    "target_contact": "a party's status in a step is a status condition: status: {step: S1, in: [ok_continue]}",
}

_STANDARD_LOOKUP = {
    table: {name.lower(): column for column, others in fields.items() for name in (column, *others)}
    for table, fields in STANDARD_FIELDS.items()
}
_CUSTOM_TABLES = ("party", "contact")


@dataclass(frozen=True)
class FieldRef:
    """A resolved field: a column, a custom field (element), a questionnaire answer, or a form
    field of the local entity's order (table `order`)."""

    table: str  # canonical: party, contact, operation, …, answers, order
    field: str  # canonical column, lower-case custom name, the question code, or the form field
    party_kind: str | None = None  # set by CLI, PRO, FOU, VRP, TIA
    index: int | None = None  # 1-based element of an indexed custom field
    custom: bool = False
    questionnaire: str | None = None
    question: str | None = None

    @property
    def key(self) -> str:
        """The jsonb key of a custom field: `stat` or `stat(2)`."""
        return self.field if self.index is None else f"{self.field}({self.index})"

    def __str__(self) -> str:
        if self.table == "answers":
            return f"answers.{self.questionnaire}.{self.question}"
        table = _KIND_TABLES[self.party_kind] if self.party_kind else self.table
        return f"{table}.{self.key}"


def unsupported_condition_field(ref: FieldRef) -> str | None:
    """Why a condition cannot compare `ref` (with the fix), or None when routing reads it."""
    if ref.table in _CUSTOM_TABLES:
        return None
    allowed = CONDITION_FIELDS.get(ref.table)
    if allowed is not None and ref.field in allowed:
        return None
    if allowed is not None:
        return (f"conditions compare {ref.table} fields {', '.join(allowed)}; {ref} is not one of them")
    fix = _CONDITION_FIX.get(ref.table, f"{ref.table} fields are not read by routing")
    return (f"conditions compare party, contact, operation (MANIF) and step fields; {ref} is in "
            f"table {ref.table}: {fix}")


# --- splitting the written text --------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    name: str
    start: int
    end: int


@dataclass(frozen=True)
class _Written:
    """A reference as written: dotted parts and an optional `(n)` index."""

    text: str
    parts: tuple[_Part, ...]
    index: int | None = None
    index_start: int = 0


@dataclass(frozen=True)
class _Place:
    """Where a reference sits, so errors point into the source text."""

    text: str
    offset: int = 0
    source: str | None = None

    def error(self, code: str, message: str, start: int, end: int) -> FormulaError:
        # Without the source, pad the reference to its place so the caret still lines up.
        shown = " " * self.offset + self.text if self.source is None else self.source
        return FormulaError(code, message, shown, start + self.offset, end + self.offset)


_INDEX = re.compile(r"\((?P<number>[0-9]*)\)$")
_NAME = re.compile(r"\w+")


def _split(text: str, place: _Place) -> _Written:
    """Split `CLI.stat(2)` / `CLI__NOM` into parts and index; raise on malformed text."""
    path, index, index_start = text, None, len(text)
    suffix = _INDEX.search(text)
    if suffix:
        path, index_start = text[: suffix.start()], suffix.start()
        number = suffix.group("number")
        if not number or int(number) == 0:
            message = f"bad index '{suffix.group()}' in '{text}'; indexes are whole numbers from 1"
            raise place.error("bad_index", message, suffix.start(), len(text))
        index = int(number)
    if "(" in path or ")" in path:
        at = min(i for i in (path.find("("), path.find(")")) if i >= 0)
        message = f"bad index in '{text}'; write the element number last, e.g. party.stat(2)"
        raise place.error("bad_index", message, at, len(text))
    separator = "." if "." in path or "__" not in path else "__"
    parts, pos = [], 0
    for name in path.split(separator):
        if not _NAME.fullmatch(name):
            message = f"'{text}' is not a field reference; write TABLE.FIELD, e.g. party.name"
            raise place.error("bad_reference", message, pos, pos + max(len(name), 1))
        parts.append(_Part(name, pos, pos + len(name)))
        pos += len(name) + len(separator)
    return _Written(text, tuple(parts), index, index_start)


_TABLE_LOOKUP = {
    alias.lower(): (table, PARTY_KINDS.get(alias)) for alias, table in TABLE_ALIASES.items()
}


def _table_of(name: str) -> tuple[str, str | None] | None:
    """(canonical table, party kind) for a table name or alias, None when unknown."""
    return _TABLE_LOOKUP.get(name.lower())


# --- suggestions -----------------------------------------------------------------------------


def _hint(
    word: str, names: Iterable[str], known: Iterable[str], canonical: Mapping[str, str]
) -> str:
    """`closest: VILLE, city` (each close alias followed by its canonical name), else `known: …`."""
    by_lower: dict[str, str] = {}
    for name in names:
        by_lower.setdefault(name.lower(), name)
    shown: list[str] = []
    for hit in difflib.get_close_matches(word.lower(), list(by_lower), n=5, cutoff=0.6):
        for name in (by_lower[hit], canonical.get(hit)):
            if name and name.lower() not in {s.lower() for s in shown}:
                shown.append(name)
    if shown:
        return "closest: " + ", ".join(shown[:5])
    known = list(known)
    return "known: " + ", ".join(known) if known else "none is defined"
