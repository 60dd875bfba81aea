"""Conditions as SQL over the party table (and the operation's or a step's own fields); the
meaning mirrors `campflow.core.where.evaluate_condition`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, case, cast, exists, false, func, literal, not_, or_, select, true
from sqlalchemy.types import Numeric, Text

from campflow.core.field_catalog import FieldCatalog
from campflow.core.fields import FieldRef, unsupported_condition_field
from campflow.core.formula import And, Node, Not, Or, Ref
from campflow.core.where import parse_where
from campflow.errors import CampflowError, FormulaError
from models import Contact, Operation, Party, Step


def to_sql(node: Node, exprs: Mapping[str, ColumnElement[bool]]) -> ColumnElement[bool]:
    """The formula as a SQL boolean built from one expression per condition code."""
    match node:
        case Ref(code=code):
            return exprs[code]
        case Not(operand=operand):
            return not_(to_sql(operand, exprs))
        case And(operands=children):
            return and_(*(to_sql(child, exprs) for child in children))
        case Or(operands=children):
            return or_(*(to_sql(child, exprs) for child in children))
    raise TypeError(f"not a formula node: {node!r}")


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
    from campflow.core.where import _as_number  # the same rule as the Python side

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


def field_condition(ref: FieldRef, op: str, expected: Any, contact: Any = None) -> ColumnElement[bool]:
    """A condition on a party field, or on any of the party's contacts (on `contact`, a contact
    row joined to the party, when given)."""
    if ref.table == "party":
        if ref.field == "kind" and not ref.custom:
            expected = _kinds(expected)
        condition = compare_sql(value_sql(ref, Party), op, expected)
        return and_(Party.kind == ref.party_kind, condition) if ref.party_kind else condition
    if ref.table == "contact" and contact is not None:
        return compare_sql(value_sql(ref, contact), op, expected)
    if ref.table == "contact":
        return exists(select(Contact.id).where(
            Contact.party_id == Party.id, compare_sql(value_sql(ref, Contact), op, expected)))
    raise _unsupported(ref)


def scope_condition(ref: FieldRef, definition: dict[str, Any], operation_id: int) -> ColumnElement[bool]:
    """A condition on an operation's or a step's own field (MANIF.ETAT, step.ETAT of `step`).

    The same for every party: one uncorrelated EXISTS, which PostgreSQL evaluates once per query.
    """
    if unsupported_condition_field(ref):
        raise _unsupported(ref)
    op, expected = definition["op"], definition.get("value")
    operation = Operation.__table__.alias("scope_operation")
    owner = operation.c.code == definition["operation"] if definition.get("operation") else \
        operation.c.id == operation_id
    if ref.table == "operation":
        return exists(select(operation.c.id).where(
            owner, compare_sql(cast(operation.c[ref.field], Text), op, expected)).correlate(None))
    if not definition.get("step"):
        raise CampflowError(f"the condition on {ref} names no step; add step: CODE and apply the spec again")
    step = Step.__table__.alias("scope_step")
    return exists(select(step.c.id).join(operation, operation.c.id == step.c.operation_id).where(
        owner, step.c.code == definition["step"],
        compare_sql(cast(step.c[ref.field], Text), op, expected)).correlate(None))


def _unsupported(ref: FieldRef) -> CampflowError:
    """A condition applied before `apply` refused its field: the fix is in the spec."""
    why = unsupported_condition_field(ref) or f"{ref} is not a party or contact field here"
    return CampflowError(f"{why}; change the spec and apply it again")


def _kinds(expected: Any) -> Any:
    from campflow.store.imports import kind_of

    if isinstance(expected, (list, tuple)):
        return [kind_of(str(v)) or v for v in expected]
    return kind_of(str(expected)) or expected


@dataclass(frozen=True)
class WhereClause:
    """A `--where` text as SQL; `reads_contacts` when it compares a contact field."""

    sql: ColumnElement[bool]
    reads_contacts: bool


def where_clause(text: str, catalog: FieldCatalog, contact: Any = None) -> WhereClause:
    """A `--where` text as one boolean SQL expression over `party` and, when given, a `contact`
    row joined to it (else a contact field means "one of the party's contacts")."""
    query = parse_where(text)
    exprs, reads_contacts = {}, False
    for code, comparison in query.conditions:
        ref = catalog.resolve(comparison.field, comparison.start, source=text)
        if ref.table not in ("party", "contact"):
            raise FormulaError("unsupported_field", f"--where compares party and contact fields; "
                               f"{comparison.field} is a {ref.table} field", text,
                               comparison.start, comparison.start + len(comparison.field))
        reads_contacts = reads_contacts or ref.table == "contact"
        exprs[code] = field_condition(ref, comparison.op, comparison.value, contact)
    return WhereClause(to_sql(query.formula, exprs), reads_contacts)


__all__: Sequence[str] = ("compare_sql", "field_condition", "scope_condition", "value_sql", "WhereClause", "where_clause")
