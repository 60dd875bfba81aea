"""Condition formulas and the --where language: parsing, errors, meaning, SQL, text."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from datetime import date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Boolean, column
from sqlalchemy.dialects import postgresql

from campflow.core.formula import (
    And,
    Not,
    Or,
    Ref,
    check_names,
    compile_formula,
    evaluate,
    names,
    parse_formula,
    to_text,
)
from campflow.core.where import OPERATORS, Comparison, evaluate_condition, parse_where
from campflow.errors import FormulaError
from campflow.store.conditions import to_sql

A, B, C = Ref("A"), Ref("B"), Ref("C")
C1, C2, C3 = Ref("C1"), Ref("C2"), Ref("C3")


def raised(parse, text: str) -> FormulaError:
    with pytest.raises(FormulaError) as info:
        parse(text)
    return info.value


class TestParse:
    @pytest.mark.parametrize(
        ("text", "tree"),
        [
            ("C1", C1),
            ("c1", C1),
            ("C1 and C2", And((C1, C2))),
            ("C1 or C2 or C3", Or((C1, C2, C3))),
            ("not C1", Not(C1)),
            ("not a and b or c", Or((And((Not(A), B)), C))),
            ("a or b and c", Or((A, And((B, C))))),
            ("a or not b and c", Or((A, And((Not(B), C))))),
            ("not (a or b)", Not(Or((A, B)))),
            ("not not a", Not(Not(A))),
            ("(a or b) and c", And((Or((A, B)), C))),
            ("a and (b and c)", And((A, And((B, C))))),
            ("((a))", A),
            ("(a)and(b)", And((A, B))),
            ("  a\tand\nb  ", And((A, B))),
            ("C1 or (C2 and C3 and not C4)", Or((C1, And((C2, C3, Not(Ref("C4"))))))),
        ],
    )
    def test_tree(self, text: str, tree: object) -> None:
        assert parse_formula(text) == tree

    @pytest.mark.parametrize(
        ("text", "tree"),
        [
            ("a et b", And((A, B))),
            ("a ou b", Or((A, B))),
            ("non a", Not(A)),
            ("non a et b ou c", Or((And((Not(A), B)), C))),
            ("A AND B OR NOT C", Or((And((A, B)), Not(C)))),
            ("a Et b Ou NoN c", Or((And((A, B)), Not(C)))),
        ],
    )
    def test_keywords_in_french_and_any_case(self, text: str, tree: object) -> None:
        assert parse_formula(text) == tree

    @pytest.mark.parametrize(
        ("text", "spans"),
        [
            ("C1", [("C1", 0, 2)]),
            ("C1 or (C2 and not C3)", [("C1", 0, 2), ("C2", 7, 9), ("C3", 18, 20)]),
            ("  c10  et  non c2", [("C10", 2, 5), ("C2", 15, 17)]),
        ],
    )
    def test_ref_offsets(self, text: str, spans: list[tuple[str, int, int]]) -> None:
        refs = _refs_in_order(parse_formula(text))
        assert [(ref.code, ref.start, ref.end) for ref in refs] == spans

    def test_offsets_do_not_count_in_equality(self) -> None:
        assert Ref("C1", 0, 2) == Ref("c1", 5, 7)
        assert hash(Ref("C1", 0, 2)) == hash(Ref("C1", 5, 7))

    def test_nodes_are_frozen(self) -> None:
        with pytest.raises(FrozenInstanceError):
            C1.code = "C2"  # type: ignore[misc]

    @pytest.mark.parametrize("kind", [And, Or])
    def test_and_or_need_two_operands(self, kind: type) -> None:
        with pytest.raises(ValueError, match="at least two operands"):
            kind((C1,))

    def test_operands_become_a_tuple(self) -> None:
        assert And([C1, C2]).operands == (C1, C2)  # type: ignore[arg-type]


def _refs_in_order(node: object) -> list[Ref]:
    if isinstance(node, Ref):
        return [node]
    if isinstance(node, Not):
        return _refs_in_order(node.operand)
    children = node.operands  # type: ignore[attr-defined]
    return [ref for child in children for ref in _refs_in_order(child)]


OPERAND = "expected a condition code, 'not' or '('"
AFTER = "expected 'and', 'or' or the end of the formula"


class TestFormulaErrors:
    @pytest.mark.parametrize(
        ("text", "code", "message", "start", "end"),
        [
            ("", "empty", "the formula is empty; write for example C1 and (C2 or not C3)", 0, 0),
            ("   ", "empty", "the formula is empty; write for example C1 and (C2 or not C3)", 0, 3),
            ("and C1", "unexpected_token", f"{OPERAND} but found 'and' at column 1", 0, 3),
            ("C1 or and C2", "unexpected_token", f"{OPERAND} but found 'and' at column 7", 6, 9),
            ("C1 ET OU C2", "unexpected_token", f"{OPERAND} but found 'OU' at column 7", 6, 8),
            ("()", "unexpected_token", f"{OPERAND} but found ')' at column 2", 1, 2),
            ("C1 and 'x'", "unexpected_token", f"{OPERAND} but found ''x'' at column 8", 7, 10),
            ("C1 or C1.x", "unexpected_token", f"{OPERAND} but found 'C1.x' at column 7", 6, 10),
            ("C1 and 2", "unexpected_token", f"{OPERAND} but found '2' at column 8", 7, 8),
            ("C1 and", "unexpected_end", f"{OPERAND} but the formula ended at column 7", 6, 6),
            ("not", "unexpected_end", f"{OPERAND} but the formula ended at column 4", 3, 3),
            ("(", "unexpected_end", f"{OPERAND} but the formula ended at column 2", 1, 1),
            ("C1 C2", "unexpected_token", f"{AFTER} but found 'C2' at column 4", 3, 5),
            ("C1 = C2", "unexpected_token", f"{AFTER} but found '=' at column 4", 3, 4),
            ("C1 not C2", "unexpected_token", f"{AFTER} but found 'not' at column 4", 3, 6),
            (
                "(C1 C2)",
                "unexpected_token",
                "expected 'and', 'or' or ')' but found 'C2' at column 5",
                4,
                6,
            ),
            ("C1)", "unexpected_token", "found ')' at column 3 with no matching '('", 2, 3),
            ("(C1 and C2", "unclosed_paren", "'(' at column 1 is never closed; add ')'", 0, 1),
            ("C1 and ((C2)", "unclosed_paren", "'(' at column 8 is never closed; add ')'", 7, 8),
            (
                "C1 & C2",
                "unexpected_character",
                "unexpected character '&' at column 4; "
                "join conditions with and, or, not and parentheses",
                3,
                4,
            ),
            (
                "C1 and 'x",
                "unclosed_string",
                "the string opened at column 8 is never closed; add a closing '",
                7,
                9,
            ),
        ],
    )
    def test_error(self, text: str, code: str, message: str, start: int, end: int) -> None:
        error = raised(parse_formula, text)
        assert (error.code, error.message, error.start, error.end) == (code, message, start, end)
        assert error.text == text

    @pytest.mark.parametrize(
        ("text", "caret"),
        [
            ("C1 or and C2", "  C1 or and C2\n        ^^^"),
            ("C1 and", "  C1 and\n        ^"),
            ("(C1 and C2", "  (C1 and C2\n  ^"),
            ("", "  \n  ^"),
        ],
    )
    def test_caret_line(self, text: str, caret: str) -> None:
        error = raised(parse_formula, text)
        assert error.caret_line() == caret
        assert str(error) == f"{error.message}\n{caret}"

    def test_too_deep(self) -> None:
        text = "(" * 5000 + "C1" + ")" * 5000
        error = raised(parse_formula, text)
        assert (error.code, error.start, error.end) == ("too_deep", 0, len(text))
        assert error.message == "the formula nests too deeply; remove some parentheses"

    def test_is_a_campflow_error_with_token(self) -> None:
        error = raised(parse_formula, "C1 or and C2")
        assert error.token == "and"


class TestNames:
    @pytest.mark.parametrize(
        ("text", "codes"),
        [
            ("C1", {"C1"}),
            ("c1 or (C2 and not C1)", {"C1", "C2"}),
            ("not (a ou b) et c", {"A", "B", "C"}),
        ],
    )
    def test_names(self, text: str, codes: set[str]) -> None:
        assert names(parse_formula(text)) == frozenset(codes)

    def test_known_names_pass(self) -> None:
        check_names(parse_formula("C1 or c2"), ["c1", "C2", "C3"])

    @pytest.mark.parametrize(
        ("text", "known", "message", "start", "end"),
        [
            (
                "C1 or (C2 and not C4)",
                ["C1", "C2", "C3"],
                "condition C4 is not defined (defined: C1, C2, C3)",
                18,
                20,
            ),
            ("C5 or C6", ["C10", "C2"], "condition C5 is not defined (defined: C2, C10)", 0, 2),
            ("x", [], "condition X is not defined (defined: none)", 0, 1),
        ],
    )
    def test_unknown_condition(
        self, text: str, known: list[str], message: str, start: int, end: int
    ) -> None:
        with pytest.raises(FormulaError) as info:
            check_names(parse_formula(text), known, text)
        error = info.value
        assert (error.code, error.message, error.start, error.end) == (
            "unknown_condition",
            message,
            start,
            end,
        )

    def test_without_source_text_the_canonical_text_is_shown(self) -> None:
        with pytest.raises(FormulaError) as info:
            check_names(parse_formula("C1   ou   (c4)"), ["C1"])
        assert info.value.caret_line() == "  C1 or C4\n        ^^"

    def test_compile_formula_parses_and_checks(self) -> None:
        assert compile_formula("C1 et C2", ["C1", "C2"]) == And((C1, C2))
        with pytest.raises(FormulaError, match="condition C3 is not defined") as info:
            compile_formula("C1 et C3", ["C1", "C2"])
        assert (info.value.text, info.value.start, info.value.end) == ("C1 et C3", 6, 8)


class TestEvaluate:
    @pytest.mark.parametrize(
        ("text", "true_codes", "expected"),
        [
            ("C1", {"C1"}, True),
            ("C1", set(), False),
            ("not C1", set(), True),
            ("C1 and C2", {"C1"}, False),
            ("C1 and C2", {"C1", "C2"}, True),
            ("C1 or C2", {"C2"}, True),
            ("C1 or C2", set(), False),
            ("not C1 and C2 or C3", {"C1", "C2"}, False),
            ("not C1 and C2 or C3", {"C2"}, True),
            ("not C1 and C2 or C3", {"C1", "C3"}, True),
            ("not (C1 and C2 or C3)", {"C1"}, True),
            ("C1 or (C2 and C3 and not C4)", {"C2", "C3"}, True),
            ("C1 or (C2 and C3 and not C4)", {"C2", "C3", "C4"}, False),
        ],
    )
    def test_truth_table(self, text: str, true_codes: set[str], expected: bool) -> None:
        values = {code: code in true_codes for code in ("C1", "C2", "C3", "C4")}
        assert evaluate(parse_formula(text), values) is expected

    def test_missing_value_is_an_error(self) -> None:
        with pytest.raises(KeyError, match="no value for condition C2"):
            evaluate(parse_formula("C1 and C2"), {"C1": True})


class TestToText:
    @pytest.mark.parametrize(
        ("text", "canonical"),
        [
            ("c1", "C1"),
            ("C1 ET C2 OU NON C3", "C1 and C2 or not C3"),
            ("((C1 and C2)) or C3", "C1 and C2 or C3"),
            ("C1 and (C2 or C3)", "C1 and (C2 or C3)"),
            ("not (C1 and C2)", "not (C1 and C2)"),
            ("not (not C1)", "not not C1"),
            ("(not C1) and C2", "not C1 and C2"),
            ("C1 and (C2 and C3)", "C1 and (C2 and C3)"),
            ("(C1 or C2) or C3", "(C1 or C2) or C3"),
            ("C1 or (C2 and C3)", "C1 or C2 and C3"),
        ],
    )
    def test_canonical_text(self, text: str, canonical: str) -> None:
        tree = parse_formula(text)
        assert to_text(tree) == canonical
        assert parse_formula(canonical) == tree


CODES = ("C1", "C2", "C3", "C4")
trees = st.recursive(
    st.sampled_from(CODES).map(Ref),
    lambda children: st.one_of(
        children.map(Not),
        st.lists(children, min_size=2, max_size=4).map(lambda xs: And(tuple(xs))),
        st.lists(children, min_size=2, max_size=4).map(lambda xs: Or(tuple(xs))),
    ),
    max_leaves=12,
)
truth = st.fixed_dictionaries({code: st.booleans() for code in CODES})


class TestRoundTripProperty:
    @settings(database=None, max_examples=300, deadline=None)
    @given(trees, truth)
    def test_text_keeps_structure_and_meaning(self, tree: object, values: dict[str, bool]) -> None:
        again = parse_formula(to_text(tree))  # type: ignore[arg-type]
        assert again == tree
        assert evaluate(again, values) == evaluate(tree, values)  # type: ignore[arg-type]


EXPRS = {
    "C1": column("a", Boolean),
    "C2": column("b", Boolean),
    "C3": column("c", Boolean),
    "C4": column("city") == "Paris",
}


class TestToSql:
    @pytest.mark.parametrize(
        ("text", "sql"),
        [
            ("C1", "a"),
            ("C1 and C2", "a AND b"),
            ("C1 or C2 and C3", "a OR b AND c"),
            ("(C1 or C2) and C3", "(a OR b) AND c"),
            ("not C1", "NOT a"),
            ("not (C1 or C2)", "NOT (a OR b)"),
            ("C4 and not (C1 and C2)", "city = %(city_1)s AND NOT (a AND b)"),
            ("C1 and (C2 and C3)", "a AND b AND c"),
        ],
    )
    def test_sql(self, text: str, sql: str) -> None:
        expr = to_sql(parse_formula(text), EXPRS)
        assert str(expr.compile(dialect=postgresql.dialect())) == sql


def where(*conditions: Comparison) -> list[tuple[str, Comparison]]:
    return [(f"W{i}", comparison) for i, comparison in enumerate(conditions, 1)]


class TestWhere:
    @pytest.mark.parametrize(
        ("text", "op", "value"),
        [
            ("X = Paris", "equals", "Paris"),
            ("X == Paris", "equals", "Paris"),
            ("X != 'Dupont & fils'", "not_equals", "Dupont & fils"),
            ("X <> 3", "not_equals", 3),
            ("X < 3", "lt", 3),
            ("X <= 3", "le", 3),
            ("X > -2", "gt", -2),
            ("X >= 12.5", "ge", 12.5),
            ("X=01000", "equals", "01000"),
            ("X >= 2025-01-01", "ge", "2025-01-01"),
            ("X = Saint-Denis", "equals", "Saint-Denis"),
            ("X in (prospect, client)", "in", ("prospect", "client")),
            ("X IN (1, 'a b', \"c\")", "in", (1, "a b", "c")),
            ("X dans (CLI)", "in", ("CLI",)),
            ("X not in (oui, non)", "not_in", ("oui", "non")),
            ("X pas dans (a)", "not_in", ("a",)),
            ("X non dans (a)", "not_in", ("a",)),
            ("X matches 'DUP*'", "matches", "DUP*"),
            ("X comme 75*", "matches", "75*"),
            ("X is set", "is_set", None),
            ("X IS NOT SET", "is_not_set", None),
            ("X = non", "equals", "non"),
            ("X = \"say \\\"hi\\\"\"", "equals", 'say "hi"'),
            ("X = 'it\\'s'", "equals", "it's"),
            ("X = 'a\\\\b'", "equals", "a\\b"),
            ("X = 'c:\\temp'", "equals", "c:\\temp"),
        ],
    )
    def test_operators_and_values(self, text: str, op: str, value: object) -> None:
        query = parse_where(text)
        assert query.conditions == (("W1", Comparison("X", op, value)),)
        assert query.formula == Ref("W1")

    @pytest.mark.parametrize(
        "name",
        ["VILLE", "CLI.NOM", "party.stat(2)", "answers.Q1.CATALOGUE", "kind", "FICHE", "T2__NOM"],
    )
    def test_field_references(self, name: str) -> None:
        (code, comparison), = parse_where(f"{name} = x").conditions
        assert (code, comparison.field) == ("W1", name)

    def test_combined_like_formulas(self) -> None:
        text = "VILLE = Paris et non (kind in (prospect) ou CP matches '75*') or EMAIL is set"
        query = parse_where(text)
        assert list(query.conditions) == where(
            Comparison("VILLE", "equals", "Paris"),
            Comparison("kind", "in", ("prospect",)),
            Comparison("CP", "matches", "75*"),
            Comparison("EMAIL", "is_set", None),
        )
        assert to_text(query.formula) == "W1 and not (W2 or W3) or W4"

    @pytest.mark.parametrize(
        ("text", "spans"),
        [
            ("VILLE = Paris", [(0, 13)]),
            ("a is not set and b in (1, 2)", [(0, 12), (17, 28)]),
            ("not (x = 'a b')", [(5, 14)]),
            ("party.stat(2) >= 3", [(0, 18)]),
        ],
    )
    def test_offsets(self, text: str, spans: list[tuple[int, int]]) -> None:
        query = parse_where(text)
        assert [(c.start, c.end) for _, c in query.conditions] == spans
        refs = _refs_in_order(query.formula)
        assert [(r.start, r.end) for r in refs] == spans


OPERATOR = (
    "expected an operator (=, !=, <, <=, >, >=, in, not in, matches, is set, is not set)"
)
VALUE = "expected a value (a quoted string, a number or a word)"
FIELD = "expected a field reference, 'not' or '('"


class TestWhereErrors:
    @pytest.mark.parametrize(
        ("text", "code", "message", "start", "end"),
        [
            (
                "",
                "empty",
                "the condition is empty; "
                "write for example VILLE = Paris and kind in (prospect, client)",
                0,
                0,
            ),
            ("VILLE", "unexpected_end", f"{OPERATOR} but the condition ended at column 6", 5, 5),
            ("VILLE Paris", "unexpected_token", f"{OPERATOR} but found 'Paris' at column 7", 6, 11),
            ("VILLE =", "unexpected_end", f"{VALUE} but the condition ended at column 8", 7, 7),
            ("VILLE = and", "unexpected_token", f"{VALUE} but found 'and' at column 9", 8, 11),
            ("= Paris", "unexpected_token", f"{FIELD} but found '=' at column 1", 0, 1),
            ("'x' = 1", "unexpected_token", f"{FIELD} but found ''x'' at column 1", 0, 3),
            ("a-b = 1", "unexpected_token", f"{FIELD} but found 'a-b' at column 1", 0, 3),
            ("x = 1 and", "unexpected_end", f"{FIELD} but the condition ended at column 10", 9, 9),
            (
                "kind in prospect",
                "unexpected_token",
                "expected '(' and a list of values, e.g. (a, b) but found 'prospect' at column 9",
                8,
                16,
            ),
            (
                "kind in (a b)",
                "unexpected_token",
                "expected ',' or ')' but found 'b' at column 12",
                11,
                12,
            ),
            ("kind in ()", "unexpected_token", f"{VALUE} but found ')' at column 10", 9, 10),
            ("kind in (a,", "unclosed_paren", "'(' at column 9 is never closed; add ')'", 8, 9),
            ("kind in (a", "unclosed_paren", "'(' at column 9 is never closed; add ')'", 8, 9),
            ("(x = 1", "unclosed_paren", "'(' at column 1 is never closed; add ')'", 0, 1),
            (
                "x is",
                "unexpected_end",
                "expected 'set' or 'not set' after 'is' but the condition ended at column 5",
                4,
                4,
            ),
            (
                "x is not null",
                "unexpected_token",
                "expected 'set' after 'is not' but found 'null' at column 10",
                9,
                13,
            ),
            (
                "x not = 1",
                "unexpected_token",
                "expected 'in' after 'not' but found '=' at column 7",
                6,
                7,
            ),
            (
                "x = 1 y = 2",
                "unexpected_token",
                "expected 'and', 'or' or the end of the condition but found 'y' at column 7",
                6,
                7,
            ),
            (
                "x = 'abc",
                "unclosed_string",
                "the string opened at column 5 is never closed; add a closing '",
                4,
                8,
            ),
            (
                "x = 1 ; y",
                "unexpected_character",
                "unexpected character ';' at column 7; "
                "join conditions with and, or, not and parentheses",
                6,
                7,
            ),
        ],
    )
    def test_error(self, text: str, code: str, message: str, start: int, end: int) -> None:
        error = raised(parse_where, text)
        assert (error.code, error.message, error.start, error.end) == (code, message, start, end)

    def test_caret_line(self) -> None:
        error = raised(parse_where, "kind in (a b)")
        assert error.caret_line() == "  kind in (a b)\n             ^"


class TestEvaluateCondition:
    @pytest.mark.parametrize(
        ("op", "actual", "expected", "result"),
        [
            ("equals", "Paris", "paris", True),
            ("equals", "Paris", "Lyon", False),
            ("equals", "10", 10, True),
            ("equals", 10, "10.0", True),
            ("equals", "01000", "1000", True),
            ("equals", "abc", 1, False),
            ("equals", None, "x", False),
            ("equals", True, "true", True),
            ("not_equals", "Paris", "PARIS", False),
            ("not_equals", "Paris", "Lyon", True),
            ("not_equals", None, "x", True),
            ("lt", 9, 10, True),
            ("lt", "9", "10", True),
            ("lt", "b", "A", False),
            ("gt", "b", "A", True),
            ("le", 10, 10, True),
            ("ge", 9.5, "10", False),
            ("lt", None, 5, False),
            ("ge", None, 5, False),
            ("lt", date(2025, 1, 1), "2025-06-01", True),
            ("ge", datetime(2025, 3, 1, 9), "2025-03-01", True),
            ("in", "client", ("prospect", "CLIENT"), True),
            ("in", 3, ("1", "3"), True),
            ("in", "x", ("a",), False),
            ("in", "a", "a", True),
            ("in", None, ("a",), False),
            ("not_in", "x", ("a", "b"), True),
            ("not_in", "A", ["a"], False),
            ("not_in", None, ("a",), True),
            ("matches", "Dupont", "dup*", True),
            ("matches", "Dupont", "dup", False),
            ("matches", "Dupont", "D?PONT", True),
            ("matches", "a.b", "a?b", True),
            ("matches", "axb", "a.b", False),
            ("matches", "", "*", True),
            ("matches", 75001, "75*", True),
            ("matches", None, "*", False),
            ("is_set", "x", None, True),
            ("is_set", 0, None, True),
            ("is_set", "", None, False),
            ("is_set", None, None, False),
            ("is_not_set", None, None, True),
            ("is_not_set", "", None, True),
            ("is_not_set", "x", None, False),
        ],
    )
    def test_meaning(self, op: str, actual: object, expected: object, result: bool) -> None:
        assert evaluate_condition(op, actual, expected) is result

    def test_none_is_false_except_negations(self) -> None:
        true_for_none = {op for op in OPERATORS if evaluate_condition(op, None, ("x",))}
        assert true_for_none == {"not_equals", "not_in", "is_not_set"}

    def test_unknown_operator(self) -> None:
        with pytest.raises(ValueError, match="unknown operator 'like'; must be one of equals"):
            evaluate_condition("like", "a", "a")

    def test_where_values_evaluate_as_written(self) -> None:
        (_, comparison), = parse_where("CP in (75001, '92*')").conditions
        assert evaluate_condition(comparison.op, "75001", comparison.value)
