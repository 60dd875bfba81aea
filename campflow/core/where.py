"""The --where language (`field op value and ...`) and what each of its operators means."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from datetime import date, time
from decimal import Decimal
from typing import Union

from campflow.core.formula import Node, Ref, _Language, _offset, _Parser

__all__ = [
    "OPERATORS",
    "Comparison",
    "WhereQuery",
    "evaluate_condition",
    "parse_where",
]


# --- the --where language --------------------------------------------------------------------

Value = Union[str, int, float, tuple[Union[str, int, float], ...], None]
OPERATORS = (
    "equals", "not_equals", "in", "not_in", "matches",
    "lt", "le", "gt", "ge", "is_set", "is_not_set",
)  # fmt: skip
_SYMBOL_OPERATORS = {
    "=": "equals", "==": "equals", "!=": "not_equals", "<>": "not_equals",
    "<": "lt", "<=": "le", ">": "gt", ">=": "ge",
}  # fmt: skip
_WORD_OPERATORS = {"in": "in", "dans": "in", "matches": "matches", "comme": "matches"}
_OPERATOR_HINT = "an operator (=, !=, <, <=, >, >=, in, not in, matches, is set, is not set)"
_FIELD = re.compile(r"[A-Za-z_]\w*(?:\.\w+)*(?:\([0-9]+\))?")


@dataclass(frozen=True)
class Comparison:
    """`FIELD OP VALUE` as written in a --where text; `op` is one of OPERATORS."""

    field: str
    op: str
    value: Value
    start: int = _offset()
    end: int = _offset()


@dataclass(frozen=True)
class WhereQuery:
    """A --where text: its comparisons under generated codes W1, W2… and a formula over them."""

    conditions: tuple[tuple[str, Comparison], ...]
    formula: Node


def parse_where(text: str) -> WhereQuery:
    """Parse `VILLE = Paris and (kind in (prospect, client) or not CP matches '75*')`."""
    found: list[tuple[str, Comparison]] = []

    def comparison(parser: _Parser) -> Node:
        compared = _read_comparison(parser)
        code = f"W{len(found) + 1}"
        found.append((code, compared))
        return Ref(code, compared.start, compared.end)

    example = "VILLE = Paris and kind in (prospect, client)"
    language = _Language("condition", "a field reference", example, comparison)
    formula = _Parser(text, language).parse()
    return WhereQuery(tuple(found), formula)


def _read_comparison(parser: _Parser) -> Comparison:
    name = parser.peek()
    if name.kind != "word" or not _FIELD.fullmatch(name.text):
        raise parser.unexpected(name, parser.operand)
    parser.advance()
    op, op_end = _read_operator(parser)
    if op in ("is_set", "is_not_set"):
        return Comparison(name.text, op, None, name.start, op_end)
    if op in ("in", "not_in"):
        values, end = _read_list(parser)
        return Comparison(name.text, op, values, name.start, end)
    value_token = parser.peek()
    return Comparison(name.text, op, _read_value(parser), name.start, value_token.end)


def _read_operator(parser: _Parser) -> tuple[str, int]:
    """One of OPERATORS, from `=`, `in`, `not in`, `pas dans`, `is not set`…, and its end."""
    token = parser.peek()
    word = token.text.lower()
    if token.kind == "op":
        return _SYMBOL_OPERATORS[parser.advance().text], token.end
    if token.kind == "word" and word in _WORD_OPERATORS:
        return _WORD_OPERATORS[word], parser.advance().end
    if token.kind == "not" or (token.kind == "word" and word == "pas"):
        parser.advance()
        return "not_in", _expect_word(parser, ("in", "dans"), f"'in' after '{token.text}'")
    if token.kind == "word" and word == "is":
        parser.advance()
        negated = parser.peek().kind == "not"
        if negated:
            parser.advance()
        expected = "'set' after 'is not'" if negated else "'set' or 'not set' after 'is'"
        end = _expect_word(parser, ("set",), expected)
        return ("is_not_set" if negated else "is_set"), end
    raise parser.unexpected(token, _OPERATOR_HINT)


def _expect_word(parser: _Parser, words: tuple[str, ...], expected: str) -> int:
    """Consume one of `words`; return its end offset."""
    token = parser.peek()
    if token.kind != "word" or token.text.lower() not in words:
        raise parser.unexpected(token, expected)
    return parser.advance().end


def _read_list(parser: _Parser) -> tuple[tuple[str | int | float, ...], int]:
    """`(a, 'b c', 3)`: the values and the end offset of the closing parenthesis."""
    opening = parser.peek()
    if opening.kind != "(":
        raise parser.unexpected(opening, "'(' and a list of values, e.g. (a, b)")
    parser.advance()
    values = []
    while True:
        if parser.peek().kind == "end":
            raise parser.unclosed(opening)
        values.append(_read_value(parser))
        separator = parser.peek()
        if separator.kind == "end":
            raise parser.unclosed(opening)
        parser.advance()
        if separator.kind == ")":
            return tuple(values), separator.end  # type: ignore[arg-type]
        if separator.kind != ",":
            raise parser.unexpected(separator, "',' or ')'")


def _read_value(parser: _Parser) -> str | int | float:
    """A quoted string, a number, or a bare word (`non` too, as oui/non answers need it)."""
    token = parser.peek()
    if token.kind in ("string", "number"):
        parser.advance()
        return token.value  # type: ignore[return-value]
    if token.kind in ("word", "not"):
        parser.advance()
        return token.text
    raise parser.unexpected(token, "a value (a quoted string, a number or a word)")


# --- what an operator means ------------------------------------------------------------------

_ORDERINGS = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge}
_DECIMAL = re.compile(r"\s*-?[0-9]+(?:\.[0-9]+)?\s*")


def evaluate_condition(op: str, actual: object, expected: object) -> bool:
    """Whether `actual` (a stored value) satisfies `op expected`; the rules SQL routing mirrors.

    - None (no value) is false for every operator except not_equals, not_in and is_not_set.
    - is_set: not None and not the empty string; is_not_set is its negation.
    - Values are compared as numbers when both sides are numbers or decimal strings
      ("10" = 10.0), otherwise as case-insensitive text (dates through their ISO text).
    - lt, le, gt, ge order by the same rule (numerically or as case-folded text).
    - in / not_in: `expected` is a list (a single value counts as a list of one); in is true
      when `actual` equals one of them, not_in when it equals none.
    - matches: `*` any run of characters, `?` one character, case-insensitive, whole value.
    """
    if op not in OPERATORS:
        raise ValueError(f"unknown operator {op!r}; must be one of {', '.join(OPERATORS)}")
    if op in ("is_set", "is_not_set"):
        is_set = actual is not None and actual != ""
        return is_set if op == "is_set" else not is_set
    if actual is None:
        return op in ("not_equals", "not_in")
    if op in ("in", "not_in"):
        choices = expected if isinstance(expected, (tuple, list, set, frozenset)) else (expected,)
        found = any(_same(actual, choice) for choice in choices)
        return found if op == "in" else not found
    if op == "equals":
        return _same(actual, expected)
    if op == "not_equals":
        return not _same(actual, expected)
    if op == "matches":
        return _wildcard(str(expected)).fullmatch(_text(actual)) is not None
    left, right = _comparable(actual, expected)
    return bool(_ORDERINGS[op](left, right))


def _same(actual: object, expected: object) -> bool:
    left, right = _comparable(actual, expected)
    return left == right


def _comparable(actual: object, expected: object) -> tuple[Decimal, Decimal] | tuple[str, str]:
    """Both values as numbers when both read as numbers, else as case-folded text."""
    left, right = _as_number(actual), _as_number(expected)
    if left is not None and right is not None:
        return left, right
    return _text(actual).casefold(), _text(expected).casefold()


def _as_number(value: object) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        number = Decimal(str(value))
        return number if number.is_finite() else None
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return Decimal(value.strip())
    return None


def _text(value: object) -> str:
    return value.isoformat() if isinstance(value, (date, time)) else str(value)


def _wildcard(pattern: str) -> re.Pattern[str]:
    """`*` and `?` wildcards; every other character stands for itself."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)
