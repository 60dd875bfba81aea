"""The operation compiler on plain data: no database, no Prefect."""

from __future__ import annotations

import datetime as dt

import pytest

from campflow.core.compiler import compile_operation
from campflow.core.formula import And, Not, Or, Ref
from campflow.core.graph import CycleError
from campflow.errors import FormulaError


def op(*steps, **extra):
    return {"kind": "Operation", "code": "OP", "label": "Op", "timezone": "Europe/Paris",
            "party_kinds": ["prospect"], "steps": list(steps), **extra}


def step(code, kind="other", **extra):
    return {"code": code, "label": code.lower(), "kind": kind, **extra}


class TestOrder:
    def test_dependency_order_and_sources(self):
        plan = compile_operation(op(
            step("S1", next=[{"to": "S3"}, {"to": "S2"}]), step("S2", next=[{"to": "S4"}]),
            step("S3", next=[{"to": "S2"}]), step("S4", next=[])))
        assert [s.code for s in plan.steps] == ["S1", "S3", "S2", "S4"]
        assert plan.step("S2").sources == ("S1", "S3")
        assert plan.entry_steps == ("S1",)

    def test_default_route_is_the_next_action_in_document_order(self):
        plan = compile_operation(op(step("S1"), {"code": "G", "label": "g", "steps": [step("S2")]},
                                    step("S3", next=[])))
        first = plan.step("S1").routes[0]
        assert (first.target, first.default, first.when_status) == ("S2", True, ("ok_continue",))
        assert plan.step("S2").routes[0].target == "S3"
        assert plan.step("S3").routes == ()

    def test_cycle(self):
        with pytest.raises(CycleError, match="S1 -> S2 -> S1"):
            compile_operation(op(step("S1", next=[{"to": "S2"}]), step("S2", next=[{"to": "S1"}])))

    def test_several_entry_steps(self):
        plan = compile_operation(op(step("A", next=[]), step("B", next=[])))
        assert plan.entry_steps == ("A", "B")


class TestRoutes:
    def test_formula_and_conditions(self):
        plan = compile_operation(op(step("S1", next=[{
            "to": "S2", "formula": "C1 or (C2 and not C3)", "when_status": ["ok_continue", "failed"],
            "conditions": {"C1": {"answer": "Q1.A", "op": "equals", "value": "oui"},
                           "C2": {"party_kind": ["prospect"]},
                           "C3": {"status": {"operation": "X", "step": "S6", "in": ["ok_continue"]}}}}]),
            step("S2", next=[])))
        route = plan.step("S1").routes[0]
        assert route.rule.formula == Or((Ref("C1"), And((Ref("C2"), Not(Ref("C3"))))))
        assert route.when_status == ("ok_continue", "failed")
        assert [c.kind for c in route.rule.conditions] == ["answer", "party_kind", "status"]
        assert route.rule.conditions[2].as_dict() == {"status": {"operation": "X", "step": "S6",
                                                                 "in": ["ok_continue"]}}

    def test_no_formula_means_all_conditions(self):
        plan = compile_operation(op(step("S1", next=[{"to": "S2", "conditions": {
            "A": {"party_kind": ["client"]}, "B": {"field": "party.city", "op": "equals", "value": "Lyon"}}}]),
            step("S2", next=[])))
        assert plan.step("S1").routes[0].rule.formula == And((Ref("A"), Ref("B")))
        assert str(plan.step("S1").routes[0].rule) == "A and B"

    def test_undefined_condition_in_formula(self):
        with pytest.raises(FormulaError, match="condition C9 is not defined"):
            compile_operation(op(step("S1", next=[{"to": "S2", "formula": "C9", "conditions": {}}]),
                                 step("S2", next=[])))

    def test_where_and_due_dates_in_the_operation_timezone(self):
        plan = compile_operation(op(step("S1", run_at="2026-03-10T09:00",
                                         where={"conditions": {"W": {"party_kind": ["prospect"]}}})))
        s1 = plan.step("S1")
        assert s1.run_at == dt.datetime(2026, 3, 10, 8, 0, tzinfo=dt.timezone.utc)
        assert not s1.is_due(dt.datetime(2026, 3, 10, 7, 59, tzinfo=dt.timezone.utc))
        assert s1.is_due(dt.datetime(2026, 3, 10, 8, 0, tzinfo=dt.timezone.utc))
        assert str(s1.where) == "W"


def test_plan_is_frozen_and_readable():
    plan = compile_operation(op(step("S1", event="EVT"), step("S2", "spreadsheet_export", columns=["party.name"])))
    with pytest.raises(AttributeError):
        plan.steps[0].code = "X"  # type: ignore[misc]
    hash(plan)
    text = str(plan)
    assert "S1 other: s1 [event EVT; entry]" in text
    assert "-> S2 if always (next step)" in text
    assert "(end of path)" in text
