"""What field names mean in one database (`FieldCatalog`).

Names are looked up case-insensitively, first through the field dictionary (Divalto reads
its ODBC dictionary before the standard names), then as given (table alias + standard or
custom field); `hidden_fields` says which fields a dictionary name hides. A name without a
table (`VILLE`) is looked up in `party`, then in `contact`. Word merge fields write
`TABLE__FIELD`, which reads the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType

from campflow.core.fields import (
    _CUSTOM_TABLES,
    _KIND_TABLES,
    _STANDARD_LOOKUP,
    STANDARD_FIELDS,
    TABLE_ALIASES,
    FieldRef,
    _hint,
    _Place,
    _split,
    _table_of,
    _Written,
)
from campflow.errors import FormulaError

__all__ = ["FieldCatalog"]


# --- the catalog -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldCatalog:
    """What field names mean in one database: custom fields, dictionary aliases, questionnaires.

    Args:
        custom: table → custom field name → whether it is indexed (`stat` holds stat(1)…).
        aliases: dictionary name (`CLI_NOM` or `T2.NOMCONTACT`) → target (`party.name`).
        questions: questionnaire code → its question codes.
    """

    custom: Mapping[str, Mapping[str, bool]] = field(default_factory=dict, hash=False)
    aliases: Mapping[str, str] = field(default_factory=dict, hash=False)
    questions: Mapping[str, Iterable[str]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        custom: dict[str, dict[str, bool]] = {}
        for table_name, fields in self.custom.items():
            found = _table_of(table_name)
            if found is None or found[0] not in _CUSTOM_TABLES:
                message = f"custom fields belong to party or contact; got table {table_name!r}"
                raise ValueError(message)
            custom.setdefault(found[0], {}).update({n.lower(): bool(i) for n, i in fields.items()})
        frozen = {table: MappingProxyType(fields) for table, fields in custom.items()}
        object.__setattr__(self, "custom", MappingProxyType(frozen))
        object.__setattr__(self, "aliases", MappingProxyType(dict(self.aliases)))
        questions = {code: tuple(codes) for code, codes in self.questions.items()}
        object.__setattr__(self, "questions", MappingProxyType(questions))

    @cached_property
    def _alias_lookup(self) -> dict[tuple[str | None, str], tuple[str, str]]:
        """(table key or None, lower name) → (alias as declared, target text)."""
        lookup = {}
        for alias, target in self.aliases.items():
            table, name = alias.split(".", 1) if "." in alias else (None, alias)
            lookup[(_table_key(table) if table else None, name.lower())] = (alias, target)
        return lookup

    @cached_property
    def _question_lookup(self) -> dict[str, tuple[str, dict[str, str]]]:
        questions = self.questions.items()
        return {q.lower(): (q, {c.lower(): c for c in codes}) for q, codes in questions}

    def names(self, table: str) -> tuple[str, ...]:
        """Every name `table` accepts: standard (English, then others), custom, dictionary."""
        found = _table_of(table)
        if found is None:
            raise ValueError(f"unknown table {table!r}; must be one of {', '.join(TABLE_ALIASES)}")
        canonical, _ = found
        if canonical == "answers":
            return tuple(f"{q}.{c}" for q, codes in self.questions.items() for c in codes)
        if canonical == "order":
            return ()  # the packages' form fields: checked when a run knows the operation's packages
        standard = STANDARD_FIELDS[canonical]
        names = [n for column, others in standard.items() for n in (column, *others)]
        names += self.custom.get(canonical, {})
        keys = {_table_key(table), canonical}
        for (key, _), (alias, target) in self._alias_lookup.items():
            if key in keys or (key is None and _target_table(target) == canonical):
                names.append(alias.split(".", 1)[-1])
        return tuple(dict.fromkeys(names))

    def resolve(self, text: str, start_offset: int = 0, source: str | None = None) -> FieldRef:
        """The field `text` names; FormulaError (offsets + start_offset) when it names nothing.

        `source` is the whole text the reference sits in, shown in the caret line (without
        it, the reference alone is shown, indented to start_offset).
        """
        place = _Place(text, start_offset, source)
        return self._resolve(_split(text, place), place, use_dictionary=True)

    def _resolve(self, written: _Written, place: _Place, use_dictionary: bool) -> FieldRef:
        first = written.parts[0]
        if len(written.parts) == 1:
            return self._resolve_bare(written, place, use_dictionary)
        if first.name.lower() == "answers":
            return self._resolve_answer(written, place)
        table = _table_of(first.name)
        if table is not None and table[0] == "order":
            return _resolve_order(written, place)
        if table is not None and len(written.parts) == 2:
            return self._resolve_in_table(table, written, place, use_dictionary)
        entry = self._alias_lookup.get(_alias_key(written)) if use_dictionary else None
        if entry is not None:
            return self._through_alias(entry, written, place, None)
        if table is None:
            hint = _hint(first.name, TABLE_ALIASES, TABLE_ALIASES, {})
            message = f"unknown table '{first.name}' in '{written.text}'; {hint}"
            raise place.error("unknown_table", message, first.start, first.end)
        extra = written.parts[2]
        message = f"'{written.text}' has too many parts; write TABLE.FIELD, e.g. party.name"
        raise place.error("bad_reference", message, extra.start, written.parts[-1].end)

    def _resolve_in_table(
        self, table: tuple[str, str | None], written: _Written, place: _Place, use_dictionary: bool
    ) -> FieldRef:
        canonical, kind = table
        part = written.parts[1]
        # the dictionary first, as Divalto reads its ODBC dictionary before the standard names
        if use_dictionary:
            entry = self._alias_lookup.get(_alias_key(written))
            bare = self._alias_lookup.get((None, part.name.lower()))
            if entry is None and bare is not None and _target_table(bare[1]) == canonical:
                entry = bare
            if entry is not None:
                return self._through_alias(entry, written, place, kind)
        found = self._given(canonical, part.name, written, place)
        if found is not None:
            return replace(found, party_kind=kind)
        accepted = self.names(_KIND_TABLES[kind] if kind else canonical)
        hint = _hint(part.name, accepted, self._known(canonical), _canonical_of(canonical))
        message = f"unknown field '{part.name}' in table {canonical}; {hint}"
        raise place.error("unknown_field", message, part.start, part.end)

    def _resolve_bare(self, written: _Written, place: _Place, use_dictionary: bool) -> FieldRef:
        part = written.parts[0]
        entry = self._alias_lookup.get((None, part.name.lower())) if use_dictionary else None
        if entry is not None:
            return self._through_alias(entry, written, place, None)
        for table in _CUSTOM_TABLES:
            found = self._given(table, part.name, written, place)
            if found is not None:
                return found
        names = self.names("party") + self.names("contact")
        known = dict.fromkeys(self._known("party") + self._known("contact"))
        canonical = {**_canonical_of("contact"), **_canonical_of("party")}
        hint = _hint(part.name, names, known, canonical)
        where = "a name without a table is looked up in party, then contact"
        message = f"unknown field '{part.name}' ({where}); {hint}"
        raise place.error("unknown_field", message, part.start, part.end)

    def _resolve_answer(self, written: _Written, place: _Place) -> FieldRef:
        if len(written.parts) != 3:
            message = f"'{written.text}' is not an answer; write answers.QUESTIONNAIRE.QUESTION"
            raise place.error("bad_reference", message, 0, len(written.text))
        questionnaire, question = written.parts[1], written.parts[2]
        entry = self._question_lookup.get(questionnaire.name.lower())
        if entry is None:
            hint = _hint(questionnaire.name, self.questions, self.questions, {})
            message = f"unknown questionnaire '{questionnaire.name}'; {hint}"
            raise place.error("unknown_question", message, questionnaire.start, questionnaire.end)
        code, questions = entry
        if question.name.lower() not in questions:
            hint = _hint(question.name, questions.values(), questions.values(), {})
            message = f"questionnaire {code} has no question '{question.name}'; {hint}"
            raise place.error("unknown_question", message, question.start, question.end)
        if written.index is not None:
            message = f"answers are not indexed; remove '({written.index})'"
            raise place.error("bad_index", message, written.index_start, len(written.text))
        name = questions[question.name.lower()]
        return FieldRef("answers", name, questionnaire=code, question=name)

    def _given(self, table: str, name: str, written: _Written, place: _Place) -> FieldRef | None:
        """The standard or custom field `name` of `table` with the written index, or None."""
        column = _STANDARD_LOOKUP[table].get(name.lower())
        custom = self.custom.get(table, {})
        if column is not None:
            ref, indexed = FieldRef(table, column), False
        elif name.lower() in custom:
            ref, indexed = FieldRef(table, name.lower(), custom=True), custom[name.lower()]
        else:
            return None
        part = written.parts[-1]
        if indexed and written.index is None:
            message = f"field {ref} is indexed; write the element number, e.g. {written.text}(1)"
            raise place.error("bad_index", message, part.start, part.end)
        if written.index is not None and not indexed:
            message = f"field {ref} is not indexed; remove '({written.index})'"
            raise place.error("bad_index", message, written.index_start, len(written.text))
        return replace(ref, index=written.index)

    def _through_alias(
        self, entry: tuple[str, str], written: _Written, place: _Place, kind: str | None
    ) -> FieldRef:
        """Resolve a dictionary entry's target; the written index applies when it has none."""
        alias, target = entry
        index_span = written.index_start, len(written.text)
        try:
            aimed = _split(target, _Place(target))
        except FormulaError as error:
            raise _broken_alias(alias, target, error, written, place) from error
        if written.index is not None:
            if aimed.index is not None:
                message = f"{alias} already means {target}; remove '({written.index})'"
                raise place.error("bad_index", message, *index_span)
            aimed = replace(aimed, index=written.index)
        try:
            ref = self._resolve(aimed, _Place(target), use_dictionary=False)
        except FormulaError as error:
            if error.code != "bad_index":
                raise _broken_alias(alias, target, error, written, place) from error
            if written.index is not None:
                index = f"({written.index})"
                message = f"{alias} means {target}, which is not indexed; remove '{index}'"
                raise place.error("bad_index", message, *index_span) from error
            message = f"{alias} means {target}, which is indexed; write e.g. {written.text}(1)"
            raise place.error("bad_index", message, 0, len(written.text)) from error
        if kind and ref.table == "party" and ref.party_kind is None:
            ref = replace(ref, party_kind=kind)
        return ref

    def hidden_fields(self, alias: str) -> tuple[FieldRef, ...]:
        """The standard or custom fields that dictionary name `alias` hides from now on.

        `T2.NOM: …` hides contact.last_name; a bare `VILLE: …` hides VILLE in its target's
        table and, written alone, what VILLE meant (party, then contact). A name that means
        the field it would hide hides nothing.
        """
        target = self.aliases[alias]
        table, name = alias.split(".", 1) if "." in alias else (None, alias)
        if table is not None:
            found = _table_of(table)
            tables = [found[0]] if found else []
        else:
            bare = next((t for t in _CUSTOM_TABLES if self._field_of(t, name)), None)
            tables = list(dict.fromkeys([_target_table(target), *([bare] if bare else [])]))
        try:
            meant = self._resolve(_split(target, _Place(target)), _Place(target), use_dictionary=False)
        except FormulaError:
            meant = None  # a broken entry: resolving a name through it says why
        hidden = [ref for t in tables if (ref := self._field_of(t, name)) is not None]
        return tuple(ref for ref in hidden if meant is None or (ref.table, ref.field) != (meant.table, meant.field))

    def _field_of(self, table: str, name: str) -> FieldRef | None:
        """The standard or custom field `name` of `table` (no index check), or None."""
        if table not in _STANDARD_LOOKUP:
            return None
        column = _STANDARD_LOOKUP[table].get(name.lower())
        if column is not None:
            return FieldRef(table, column)
        if name.lower() in self.custom.get(table, {}):
            return FieldRef(table, name.lower(), custom=True)
        return None

    def _known(self, table: str) -> tuple[str, ...]:
        """Canonical standard names then custom names: the `known:` list of messages."""
        return (*STANDARD_FIELDS[table], *self.custom.get(table, {}))


def _resolve_order(written: _Written, place: _Place) -> FieldRef:
    """`ORDER.FIELD`: a form field of an order, any code (forms belong to packages, known at run)."""
    if len(written.parts) != 2:
        message = f"'{written.text}' is not an order field; write ORDER.FIELD, e.g. ORDER.MAGASIN"
        raise place.error("bad_reference", message, 0, len(written.text))
    if written.index is not None:
        message = f"order fields are not indexed; remove '({written.index})'"
        raise place.error("bad_index", message, written.index_start, len(written.text))
    return FieldRef("order", written.parts[1].name)


def _broken_alias(
    alias: str, target: str, error: FormulaError, written: _Written, place: _Place
) -> FormulaError:
    """A dictionary entry whose target names nothing: the fix is in the dictionary."""
    message = f"dictionary name {alias} means '{target}', which names nothing: {error.message}"
    return place.error(error.code, message, 0, len(written.text))


def _table_key(table: str) -> str:
    """How a dictionary key names its table: the canonical table, CLI-like kinds kept apart."""
    found = _table_of(table)
    if found is None:
        return table.lower()
    canonical, kind = found
    return _KIND_TABLES[kind].lower() if kind else canonical


def _alias_key(written: _Written) -> tuple[str | None, str]:
    """The dictionary key a written reference would have."""
    if len(written.parts) == 1:
        return None, written.parts[0].name.lower()
    rest = ".".join(part.name for part in written.parts[1:])
    return _table_key(written.parts[0].name), rest.lower()


def _target_table(target: str) -> str:
    """The canonical table a dictionary target lives in (a bare target means party)."""
    parts = re.split(r"\.|__", target, maxsplit=1)
    if len(parts) == 1:
        return "party"
    found = _table_of(parts[0])
    return found[0] if found else parts[0].lower()


def _canonical_of(table: str) -> dict[str, str]:
    """Lower-case other name → canonical name, to show `VILLE, city` in suggestions."""
    lookup = _STANDARD_LOOKUP[table]
    return {name: canonical for name, canonical in lookup.items() if name != canonical}
