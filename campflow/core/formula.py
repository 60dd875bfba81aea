"""Condition formulas (`C1 or (C2 and not C3)`) and the `--where` language, parsed without eval.

Both languages share one tokenizer and one boolean parser: tokens → recursive descent over a
single precedence table (not > and > or) → a frozen AST that is evaluated in Python or written back as
canonical text (`campflow.store.conditions.to_sql` compiles it to SQL).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, time
from decimal import Decimal
from typing import Union

from campflow.errors import FormulaError

__all__ = [
    "OPERATORS",
    "And",
    "Comparison",
    "Node",
    "Not",
    "Or",
    "Ref",
    "WhereQuery",
    "check_names",
    "compile_formula",
    "evaluate",
    "evaluate_condition",
    "names",
    "parse_formula",
    "parse_where",
    "to_text",
]


def _offset() -> int:
    """A source offset: kept for error carets, ignored when comparing trees."""
    return field(default=0, compare=False)


# --- AST -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """A condition code such as C1 (stored upper-case)."""

    code: str
    start: int = _offset()
    end: int = _offset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", self.code.upper())


@dataclass(frozen=True)
class Not:
    """The negation of one operand."""

    operand: Node
    start: int = _offset()
    end: int = _offset()


@dataclass(frozen=True)
class And:
    """True when every operand is true."""

    operands: tuple[Node, ...]
    start: int = _offset()
    end: int = _offset()

    def __post_init__(self) -> None:
        _check_operands(self)


@dataclass(frozen=True)
class Or:
    """True when any operand is true."""

    operands: tuple[Node, ...]
    start: int = _offset()
    end: int = _offset()

    def __post_init__(self) -> None:
        _check_operands(self)


Node = Union[Ref, Not, And, Or]


def _check_operands(node: And | Or) -> None:
    """Store operands as a tuple; a one-operand And/Or would not survive to_text → parse."""
    object.__setattr__(node, "operands", tuple(node.operands))
    if len(node.operands) < 2:
        raise ValueError(f"{type(node).__name__} needs at least two operands")


# One table, loosest first (pyparsing's infix_notation shape): the parser and to_text both
# read it, so precedence is decided in exactly one place.
_PRECEDENCE: tuple[tuple[str, type[Or] | type[And] | type[Not]], ...] = (
    ("or", Or),
    ("and", And),
    ("not", Not),
)
_RANK: dict[type, int] = {kind: rank for rank, (_, kind) in enumerate(_PRECEDENCE)}
_RANK[Ref] = len(_PRECEDENCE)
_KEYWORDS = {"and": "and", "et": "and", "or": "or", "ou": "or", "not": "not", "non": "not"}


# --- using a tree ----------------------------------------------------------------------------


def _refs(node: Node) -> Iterator[Ref]:
    """The Refs of a tree, left to right."""
    match node:
        case Ref():
            yield node
        case Not(operand=operand):
            yield from _refs(operand)
        case And(operands=children) | Or(operands=children):
            for child in children:
                yield from _refs(child)


def names(node: Node) -> frozenset[str]:
    """The condition codes a formula uses."""
    return frozenset(ref.code for ref in _refs(node))


def evaluate(node: Node, values: Mapping[str, bool]) -> bool:
    """The formula's truth given each condition's truth (keys are upper-case codes)."""
    match node:
        case Ref(code=code):
            if code not in values:
                raise KeyError(f"no value for condition {code}")
            return bool(values[code])
        case Not(operand=operand):
            return not evaluate(operand, values)
        case And(operands=children):
            return all(evaluate(child, values) for child in children)
        case Or(operands=children):
            return any(evaluate(child, values) for child in children)
    raise TypeError(f"not a formula node: {node!r}")


def to_text(node: Node) -> str:
    """Canonical text: English keywords, parentheses only where the tree needs them."""
    match node:
        case Ref(code=code):
            return code
        case Not(operand=operand):
            return f"not {_operand_text(operand, Not)}"
        case And(operands=children) | Or(operands=children):
            keyword = " and " if isinstance(node, And) else " or "
            return keyword.join(_operand_text(child, type(node)) for child in children)
    raise TypeError(f"not a formula node: {node!r}")


def _operand_text(child: Node, parent: type) -> str:
    """A child's text, in parentheses when it binds looser than its parent."""
    text = to_text(child)
    child_rank, parent_rank = _RANK[type(child)], _RANK[parent]
    # `not not C1` reads back as written; a nested and/or of the same kind keeps its
    # parentheses so that parse(to_text(tree)) gives the same tree, not a flattened one.
    needs = child_rank < parent_rank if parent is Not else child_rank <= parent_rank
    return f"({text})" if needs else text


def check_names(node: Node, known: Iterable[str], text: str | None = None) -> None:
    """Raise FormulaError "unknown_condition" on the first code not in `known`.

    `text` is the source the node was parsed from (for the caret line); without it the
    canonical text is shown.
    """
    defined = sorted({code.upper() for code in known}, key=_natural)
    if text is None:
        text = to_text(node)
        node = parse_formula(text)
    for ref in _refs(node):
        if ref.code not in defined:
            listing = ", ".join(defined) or "none"
            message = f"condition {ref.code} is not defined (defined: {listing})"
            raise FormulaError("unknown_condition", message, text, ref.start, ref.end)


def _natural(code: str) -> list[str | int]:
    """Sort key putting C2 before C10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", code)]


# --- tokens ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # word number string op ( ) , and or not end
    text: str
    start: int
    end: int
    value: object = None


_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<punct>[(),])
    | (?P<op>!=|<>|<=|>=|==|=|<|>)
    | (?P<quote>['"])
    | (?P<number>-[0-9]+(?:\.[0-9]+)?(?![\w.]))
    | (?P<word>[\w*?@][\w.\-:/@*?]*)
    """,
    re.VERBOSE,
)
# Leading zeros (postal codes, 01000) keep a word as text.
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_INDEX_SUFFIX = re.compile(r"\([0-9]+\)")
# Words after which `(` opens a group or a list, never an index like stat(2).
_NOT_INDEXED = {*_KEYWORDS, "in", "dans", "pas", "is", "set", "matches", "comme"}


def _tokenize(text: str) -> list[_Token]:
    """The tokens of a formula or a --where text, ending with an "end" token."""
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            message = (
                f"unexpected character '{text[pos]}' at column {pos + 1}; "
                "join conditions with and, or, not and parentheses"
            )
            raise FormulaError("unexpected_character", message, text, pos, pos + 1)
        kind = match.lastgroup
        if kind == "quote":
            token = _read_string(text, pos)
        elif kind == "word":
            token = _read_word(text, match)
        elif kind == "number":
            token = _Token("number", match.group(), pos, match.end(), _number(match.group()))
        else:  # space, op, or punctuation named by itself: ( ) ,
            name = match.group() if kind == "punct" else str(kind)
            token = _Token(name, match.group(), pos, match.end())
        if token.kind != "space":
            tokens.append(token)
        pos = token.end
    tokens.append(_Token("end", "", len(text), len(text)))
    return tokens


def _read_word(text: str, match: re.Match[str]) -> _Token:
    """A keyword, a number, or a word (with an index suffix like stat(2) when one follows)."""
    word, start, end = match.group(), match.start(), match.end()
    lower = word.lower()
    if lower in _KEYWORDS:
        return _Token(_KEYWORDS[lower], word, start, end)
    if _NUMBER.fullmatch(word):
        return _Token("number", word, start, end, _number(word))
    suffix = _INDEX_SUFFIX.match(text, end)
    if suffix and lower not in _NOT_INDEXED:
        end = suffix.end()
    return _Token("word", text[start:end], start, end)


def _number(text: str) -> int | float:
    return float(text) if "." in text else int(text)


def _read_string(text: str, start: int) -> _Token:
    """A quoted string; a backslash escapes the quote or itself, other backslashes stay."""
    quote, chars, pos = text[start], [], start + 1
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text) and text[pos + 1] in (quote, "\\"):
            chars.append(text[pos + 1])
            pos += 2
            continue
        if char == quote:
            return _Token("string", text[start : pos + 1], start, pos + 1, "".join(chars))
        chars.append(char)
        pos += 1
    message = f"the string opened at column {start + 1} is never closed; add a closing {quote}"
    raise FormulaError("unclosed_string", message, text, start, len(text))


# --- the boolean parser ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Language:
    """What differs between formulas and --where texts: the words of messages and the atom."""

    what: str  # "formula"
    operand: str  # "a condition code"
    example: str  # shown when the text is empty
    atom: Callable[[_Parser], Node]


class _Parser:
    """Recursive descent over _PRECEDENCE; atoms come from the language so both share it."""

    def __init__(self, text: str, language: _Language):
        self.text, self.what, self.atom = text, language.what, language.atom
        self.operand = f"{language.operand}, 'not' or '('"
        self.example = language.example
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def advance(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return token

    def parse(self) -> Node:
        if self.peek().kind == "end":
            message = f"the {self.what} is empty; write for example {self.example}"
            raise FormulaError("empty", message, self.text, 0, len(self.text))
        try:
            node = self.level(0)
        except RecursionError:  # thousands of nested parentheses: one clear error, no traceback
            message = f"the {self.what} nests too deeply; remove some parentheses"
            raise FormulaError("too_deep", message, self.text, 0, len(self.text)) from None
        token = self.peek()
        if token.kind == ")":
            message = f"found ')' at column {token.start + 1} with no matching '('"
            raise FormulaError("unexpected_token", message, self.text, token.start, token.end)
        if token.kind != "end":
            raise self.unexpected(token, f"'and', 'or' or the end of the {self.what}")
        return node

    def level(self, rank: int) -> Node:
        """Parse operators of this rank and tighter."""
        if rank == len(_PRECEDENCE):
            return self.primary()
        keyword, kind = _PRECEDENCE[rank]
        if kind is Not:
            if self.peek().kind != keyword:
                return self.level(rank + 1)
            start = self.advance().start
            operand = self.level(rank)
            return Not(operand, start, operand.end)
        operands = [self.level(rank + 1)]
        while self.peek().kind == keyword:
            self.advance()
            operands.append(self.level(rank + 1))
        if len(operands) == 1:
            return operands[0]
        return kind(tuple(operands), operands[0].start, operands[-1].end)

    def primary(self) -> Node:
        token = self.peek()
        if token.kind != "(":
            if token.kind == "end":
                raise self.unexpected(token, self.operand)
            return self.atom(self)
        self.advance()
        node = self.level(0)
        close = self.peek()
        if close.kind == "end":
            raise self.unclosed(token)
        if close.kind != ")":
            raise self.unexpected(close, "'and', 'or' or ')'")
        self.advance()
        return node

    def unexpected(self, token: _Token, expected: str) -> FormulaError:
        """The error for `token` where `expected` should be."""
        column = token.start + 1
        if token.kind == "end":
            message = f"expected {expected} but the {self.what} ended at column {column}"
            return FormulaError("unexpected_end", message, self.text, token.start, token.end)
        message = f"expected {expected} but found '{token.text}' at column {column}"
        return FormulaError("unexpected_token", message, self.text, token.start, token.end)

    def unclosed(self, opening: _Token) -> FormulaError:
        message = f"'(' at column {opening.start + 1} is never closed; add ')'"
        return FormulaError("unclosed_paren", message, self.text, opening.start, opening.end)


_CODE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _condition_code(parser: _Parser) -> Node:
    token = parser.peek()
    if token.kind != "word" or not _CODE.fullmatch(token.text):
        raise parser.unexpected(token, parser.operand)
    parser.advance()
    return Ref(token.text, token.start, token.end)


_FORMULA = _Language("formula", "a condition code", "C1 and (C2 or not C3)", _condition_code)


def parse_formula(text: str) -> Node:
    """Parse `C1 or (C2 and not C3)`; raise FormulaError with offsets when it does not parse."""
    return _Parser(text, _FORMULA).parse()


def compile_formula(text: str, known: Iterable[str]) -> Node:
    """Parse a formula and check that it only uses the `known` condition codes."""
    node = parse_formula(text)
    check_names(node, known, text)
    return node


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
