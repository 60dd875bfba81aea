"""Moving parties between steps with set-based SQL: entry, routes (the branching), events.

Each route is one INSERT … SELECT whose WHERE clause is the route's formula translated to
SQL over the party, its answers in the operation, its kind and its statuses (in this or
another operation). Rows already in the target step are never inserted twice, so routing
is safe to repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, exists, func, literal, select, text, true
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from flows.compiler import OperationPlan, Rule, RoutePlan, StepPlan
from flows.fields import FieldCatalog
from flows.formula import to_sql
from models import (
    Answer,
    Operation,
    OperationTarget,
    Party,
    Question,
    Questionnaire,
    Step,
    StepTarget,
)
from tasks.conditions import compare_sql, field_condition

# when contacts disagree, the party takes the most favourable of their statuses
STATUS_PRIORITY = ("ok_continue", "not_processed_continue", "failed", "excluded")


@dataclass(frozen=True)
class RouteCount:
    target: str
    rule: str
    routed: int


def step_ids(session: Session, operation_id: int) -> dict[str, int]:
    return dict(session.execute(select(Step.code, Step.id).where(Step.operation_id == operation_id)).all())


def condition_sql(definition: dict[str, Any], operation_id: int, catalog: FieldCatalog) -> ColumnElement[bool]:
    """One condition of a route or a `where:` as SQL over `party`."""
    if "party_kind" in definition:
        return Party.kind.in_(definition["party_kind"])
    if "field" in definition:
        return field_condition(catalog.resolve(definition["field"]), definition["op"], definition.get("value"))
    if "answer" in definition:
        return _answer_condition(definition, operation_id)
    status = definition["status"]
    other = Step.__table__.alias("other_step")
    other_op = Operation.__table__.alias("other_operation")
    target = StepTarget.__table__.alias("other_target")
    owner = (other_op.c.code == status["operation"]) if status.get("operation") else (
        other_op.c.id == operation_id)
    return exists(
        select(literal(1)).select_from(target)
        .join(other, other.c.id == target.c.step_id)
        .join(other_op, other_op.c.id == other.c.operation_id)
        .where(target.c.party_id == Party.id, other.c.code == status["step"], owner,
               target.c.status.in_(status["in"]))
    )


NEGATED = {"not_equals": "equals", "not_in": "in", "is_not_set": "is_set"}


def _answer_condition(definition: dict[str, Any], operation_id: int) -> ColumnElement[bool]:
    """Whether one of the party's answers (its own or a contact's) satisfies the condition.

    Written as EXISTS so PostgreSQL runs it as one hash semi-join over the answers rather
    than a lookup per party; the negative operators are NOT EXISTS of their positive twin,
    which keeps "no answer" true for them, as evaluate_condition does.
    """
    questionnaire, _, question = definition["answer"].partition(".")
    op = definition["op"]
    value = func.coalesce(Answer.value, func.array_to_string(Answer.choices, ","))
    matching = exists(
        select(literal(1)).select_from(Answer)
        .join(Question, Question.id == Answer.question_id)
        .join(Questionnaire, Questionnaire.id == Question.questionnaire_id)
        .where(Answer.operation_id == operation_id, Answer.party_id == Party.id,
               Questionnaire.code == questionnaire, Question.code == question,
               compare_sql(value, NEGATED.get(op, op), definition.get("value")))
    )
    return ~matching if op in NEGATED else matching


def rule_sql(rule: Rule | None, operation_id: int, catalog: FieldCatalog) -> ColumnElement[bool]:
    if rule is None or rule.formula is None:
        return true()
    exprs = {c.code: condition_sql(c.as_dict(), operation_id, catalog) for c in rule.conditions}
    return to_sql(rule.formula, exprs)


def enter_targets(session: Session, plan: OperationPlan, step: StepPlan, operation_id: int,
                  ids: dict[str, int], catalog: FieldCatalog) -> int:
    """An entry step receives the operation's targets (that pass its `where:`)."""
    chosen = (
        select(literal(ids[step.code]), OperationTarget.party_id, literal(operation_id))
        .join(Party, Party.id == OperationTarget.party_id)
        .where(OperationTarget.operation_id == operation_id, rule_sql(step.where, operation_id, catalog))
        .order_by(OperationTarget.party_id)
    )
    return _insert(session, chosen, ids[step.code], operation_id)


def route(session: Session, plan: OperationPlan, step: StepPlan, operation_id: int,
          ids: dict[str, int], catalog: FieldCatalog) -> list[RouteCount]:
    """Distribute the step's finished parties along each of its routes."""
    counts = []
    for planned in step.routes:
        counts.append(RouteCount(planned.target, _describe(planned),
                                 route_one(session, plan, planned, operation_id, ids, catalog)))
    return counts


def route_one(session: Session, plan: OperationPlan, planned: RoutePlan, operation_id: int,
              ids: dict[str, int], catalog: FieldCatalog) -> int:
    target_step = plan.step(planned.target)
    chosen = (
        select(literal(ids[planned.target]), StepTarget.party_id, literal(operation_id))
        .join(Party, Party.id == StepTarget.party_id)
        .where(StepTarget.step_id == ids[planned.source], StepTarget.status.in_(planned.when_status),
               rule_sql(planned.rule, operation_id, catalog),
               rule_sql(target_step.where, operation_id, catalog))
        .order_by(StepTarget.party_id)
    )
    return _insert(session, chosen, ids[planned.target], operation_id)


def _insert(session: Session, chosen, step_id: int, operation_id: int) -> int:
    """Insert the chosen parties into the step (and their targeted contacts); count new ones."""
    added = (insert(StepTarget).from_select(["step_id", "party_id", "operation_id"], chosen)
             .on_conflict_do_nothing().returning(StepTarget.party_id).cte("added"))
    count = session.scalar(select(func.count()).select_from(added)) or 0
    session.execute(text("""
        insert into step_target_contact (step_id, contact_id, party_id)
        select st.step_id, otc.contact_id, otc.party_id from step_target st
        join operation_target_contact otc on otc.operation_id = :op and otc.party_id = st.party_id
        where st.step_id = :step
        on conflict do nothing"""), {"op": operation_id, "step": step_id})
    return count


def _describe(planned: RoutePlan) -> str:
    statuses = "" if planned.when_status == ("ok_continue",) else f" when {'|'.join(planned.when_status)}"
    return f"{planned.rule}{statuses}"


def sync_contacts(session: Session, step_id: int) -> None:
    """Parties take their contacts' final status once all have one; contacts follow parties."""
    priority = "array_position(cast(:priority as text[]), c.status)"
    session.execute(text(f"""
        update step_target st set status = best.status, processed_at = now()
        from (select c.party_id, (array_agg(c.status order by coalesce({priority}, 99)))[1] as status
              from step_target_contact c where c.step_id = :step group by c.party_id
              having bool_and(c.status <> 'to_process')) best
        where st.step_id = :step and st.party_id = best.party_id and st.status = 'to_process'"""),
                    {"step": step_id, "priority": list(STATUS_PRIORITY)})
    session.execute(text("""
        update step_target_contact c set status = st.status, processed_at = st.processed_at
        from step_target st
        where c.step_id = :step and st.step_id = :step and st.party_id = c.party_id
          and c.status = 'to_process' and st.status <> 'to_process'"""), {"step": step_id})


def record_events(session: Session, step_id: int, operation_id: int, code: str) -> int:
    """One event per party that reached ok_continue in the step; never two."""
    return session.execute(text("""
        with added as (
            insert into event (operation_id, step_id, party_id, code, contact_ids)
            select :op, st.step_id, st.party_id, :code,
                   coalesce((select array_agg(c.contact_id order by c.contact_id) from step_target_contact c
                             where c.step_id = st.step_id and c.party_id = st.party_id
                               and c.status = 'ok_continue'), '{}')
            from step_target st where st.step_id = :step and st.status = 'ok_continue'
            order by st.party_id
            on conflict do nothing returning 1)
        select count(*) from added"""), {"op": operation_id, "step": step_id, "code": code}).scalar_one()


def status_counts(session: Session, step_id: int) -> dict[str, int]:
    return dict(session.execute(
        select(StepTarget.status, func.count()).where(StepTarget.step_id == step_id)
        .group_by(StepTarget.status).order_by(StepTarget.status)).all())

