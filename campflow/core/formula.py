"""Condition formulas (`C1 or (C2 and not C3)`), parsed without eval.

The formulas and the `--where` language (`campflow.core.where`) share this module's tokenizer
and boolean parser: tokens → recursive descent over a single precedence table
(not > and > or) → a frozen AST that is evaluated in Python or written back as canonical text (`campflow.store.conditions.to_sql` compiles it to SQL).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Union

from campflow.errors import FormulaError

__all__ = [
    "And",
    "Node",
    "Not",
    "Or",
    "Ref",
    "check_names",
    "compile_formula",
    "evaluate",
    "names",
    "parse_formula",
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


