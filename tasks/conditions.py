"""Conditions as SQL over the party table; the meaning mirrors `flows.formula.evaluate_condition`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, case, cast, exists, false, func, literal, or_, select, true
from sqlalchemy.types import Numeric, Text

from campflow.errors import FormulaError
from flows.fields import FieldCatalog, FieldRef
from flows.formula import parse_where, to_sql
from models import Contact, Party

_NUMBER_RE = r"^\s*-?[0-9]+(\.[0-9]+)?\s*$"
_SPACES = " \t\n\r\f\v"  # what \s matched above, so the cast never sees them


def value_sql(ref: FieldRef, model: type) -> ColumnElement[Any]:
    """The field of a party or contact row, as text."""
    if ref.custom:
        return model.fields[ref.key].astext  # type: ignore[attr-defined]
    return cast(getattr(model, ref.field), Text)


def compare_sql(value: ColumnElement[Any], op: str, expected: Any) -> ColumnElement[bool]:
    """`value op expected` with the rules of evaluate_condition (None, numbers, case)."""
    if op in ("is_set", "is_not_set"):
        is_set = and_(value.is_not(None), value != "")
        return is_set if op == "is_set" else ~is_set
    if op in ("in", "not_in"):
        choices = expected if isinstance(expected, (list, tuple)) else [expected]
        found = or_(false(), *(_same(value, choice) for choice in choices))
        return func.coalesce(found, false()) if op == "in" else func.coalesce(~found, true())
    if op == "equals":
        return func.coalesce(_same(value, expected), false())
    if op == "not_equals":
        return func.coalesce(~_same(value, expected), true())
    if op == "matches":
        return func.coalesce(value.ilike(_like_pattern(str(expected)), escape="\\"), false())
    return func.coalesce(_ordered(value, op, expected), false())


def _number(expected: Any) -> Any:
    from flows.formula import _as_number  # the same rule as the Python side

    return _as_number(expected)


def _same(value: ColumnElement[Any], expected: Any) -> ColumnElement[bool]:
    number = _number(expected)
    as_text = func.lower(value) == func.lower(literal(str(expected), Text))
    if number is None:
        return as_text
    return case((value.regexp_match(_NUMBER_RE), cast(func.btrim(value, _SPACES), Numeric) == number),
                else_=as_text)


def _ordered(value: ColumnElement[Any], op: str, expected: Any) -> ColumnElement[bool]:
    number = _number(expected)
    left_text = func.lower(value).collate("C")
    right_text = func.lower(literal(str(expected), Text)).collate("C")
    by_text = {"lt": left_text < right_text, "le": left_text <= right_text,
               "gt": left_text > right_text, "ge": left_text >= right_text}[op]
    if number is None:
        return by_text
    numeric = cast(func.btrim(value, _SPACES), Numeric)
    by_number = {"lt": numeric < number, "le": numeric <= number,
                 "gt": numeric > number, "ge": numeric >= number}[op]
    return case((value.regexp_match(_NUMBER_RE), by_number), else_=by_text)


def _like_pattern(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def field_condition(ref: FieldRef, op: str, expected: Any) -> ColumnElement[bool]:
    """A condition on a party field, or on any of the party's contacts."""
    if ref.table == "party":
        if ref.field == "kind" and not ref.custom:
            expected = _kinds(expected)
        condition = compare_sql(value_sql(ref, Party), op, expected)
        return and_(Party.kind == ref.party_kind, condition) if ref.party_kind else condition
    if ref.table == "contact":
        return exists(select(Contact.id).where(
            Contact.party_id == Party.id, compare_sql(value_sql(ref, Contact), op, expected)))
    raise ValueError(f"{ref} is not a party or contact field")


def _kinds(expected: Any) -> Any:
    from tasks.imports import kind_of

    if isinstance(expected, (list, tuple)):
        return [kind_of(str(v)) or v for v in expected]
    return kind_of(str(expected)) or expected


def where_clause(text: str, catalog: FieldCatalog) -> ColumnElement[bool]:
    """A `--where` text as one boolean SQL expression over `party`."""
    query = parse_where(text)
    exprs = {}
    for code, comparison in query.conditions:
        ref = catalog.resolve(comparison.field, comparison.start, source=text)
        if ref.table not in ("party", "contact"):
            raise FormulaError("unsupported_field", f"--where compares party and contact fields; "
                               f"{comparison.field} is a {ref.table} field", text,
                               comparison.start, comparison.start + len(comparison.field))
        exprs[code] = field_condition(ref, comparison.op, comparison.value)
    return to_sql(query.formula, exprs)


__all__: Sequence[str] = ("compare_sql", "field_condition", "value_sql", "where_clause")
