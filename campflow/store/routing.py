"""Moving parties between steps with set-based SQL: entry, routes (the branching), events.

Each route is one INSERT … SELECT whose WHERE clause is the route's formula translated to
SQL over the party, its answers in the operation, its kind and its statuses (in this or
another operation). Rows already in the target step are never inserted twice, so routing
is safe to repeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, false, func, literal, select, text, true
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from campflow.core.compiler import OperationPlan, RoutePlan, Rule, StepPlan
from campflow.core.field_catalog import FieldCatalog
from campflow.errors import CampflowError
from campflow.store.conditions import compare_sql, field_condition, scope_condition, to_sql
from campflow.store.distribution import collaborating_parties
from models import Answer, Operation, OperationTarget, Party, Question, Questionnaire, Step, StepTarget

# when contacts disagree, the party takes the most favourable of their statuses
STATUS_PRIORITY = ("ok_continue", "not_processed_continue", "failed", "excluded")


@dataclass(frozen=True)
class RouteCount:
    target: str
    rule: str
    routed: int


def step_ids(session: Session, operation_id: int) -> dict[str, int]:
    return dict(session.execute(select(Step.code, Step.id).where(Step.operation_id == operation_id)).all())


@dataclass
class RuleJoins:
    """The outer joins conditions read from: one derived table per answer or status condition.

    Answers and statuses are joined as columns (hash joins, linear in the number of parties)
    rather than looked up per party in subqueries, which `or` and `not` would force.
    """

    joins: list[tuple[Any, ColumnElement[bool]]] = field(default_factory=list)

    def add(self, table: Any) -> Any:
        self.joins.append((table, table.c.party_id == Party.id))
        return table

    def apply(self, query: Select) -> Select:
        for table, on in self.joins:
            query = query.outerjoin(table, on)
        return query


def condition_sql(definition: dict[str, Any], operation_id: int, catalog: FieldCatalog,
                  joins: RuleJoins) -> ColumnElement[bool]:
    """One condition of a route or a `where:` as SQL over `party` (and `joins`)."""
    if "party_kind" in definition:
        return Party.kind.in_(definition["party_kind"])
    if "field" in definition:
        ref = catalog.resolve(definition["field"])
        if ref.table in ("operation", "step"):
            return scope_condition(ref, definition, operation_id)
        return field_condition(ref, definition["op"], definition.get("value"))
    if "answer" in definition:
        answers = joins.add(_answers(definition["answer"], operation_id, f"answer_{len(joins.joins)}"))
        return compare_sql(answers.c.value, definition["op"], definition.get("value"))
    statuses = joins.add(_statuses(definition["status"], operation_id, f"status_{len(joins.joins)}"))
    return func.coalesce(statuses.c.status.in_(definition["status"]["in"]), false())


def _answers(reference: str, operation_id: int, name: str) -> Any:
    """Each party's answer to one question in the operation: its own first, else a contact's."""
    questionnaire, _, question = reference.partition(".")
    return (
        select(Answer.party_id, func.coalesce(Answer.value, func.array_to_string(Answer.choices, ","))
               .label("value"))
        .join(Question, Question.id == Answer.question_id)
        .join(Questionnaire, Questionnaire.id == Question.questionnaire_id)
        .where(Answer.operation_id == operation_id, Questionnaire.code == questionnaire,
               Question.code == question)
        .distinct(Answer.party_id).order_by(Answer.party_id, Answer.contact_id.nulls_first())
        .subquery(name)
    )


def _statuses(status: dict[str, Any], operation_id: int, name: str) -> Any:
    """Each party's status in a step of this or another operation."""
    other = Step.__table__.alias(f"{name}_step")
    other_op = Operation.__table__.alias(f"{name}_operation")
    owner = (other_op.c.code == status["operation"]) if status.get("operation") else (
        other_op.c.id == operation_id)
    return (
        select(StepTarget.party_id, StepTarget.status)
        .join(other, other.c.id == StepTarget.step_id)
        .join(other_op, other_op.c.id == other.c.operation_id)
        .where(other.c.code == status["step"], owner)
        .subquery(name)
    )


def rule_sql(rule: Rule | None, operation_id: int, catalog: FieldCatalog,
             joins: RuleJoins) -> ColumnElement[bool]:
    """A rule as one boolean expression; the tables it reads are added to `joins`."""
    if rule is None or rule.formula is None:
        return true()
    exprs = {}
    for condition in rule.conditions:
        try:
            exprs[condition.code] = condition_sql(condition.as_dict(), operation_id, catalog, joins)
        except CampflowError as exc:  # a spec applied before apply checked this: say which condition
            raise CampflowError(f"condition {condition.code}: {exc}") from exc
    return to_sql(rule.formula, exprs)


def enter_targets(session: Session, plan: OperationPlan, step: StepPlan, operation_id: int,
                  ids: dict[str, int], catalog: FieldCatalog) -> int:
    """An entry step receives the operation's targets (that pass its `where:`).

    The reference operation of simple / by_form packages takes in only the targets that
    belong (by the package's distribution) to an entity with an approved order.
    """
    joins = RuleJoins()
    where = rule_sql(step.where, operation_id, catalog, joins)
    chosen = joins.apply(
        select(literal(ids[step.code]), OperationTarget.party_id, literal(operation_id))
        .join(Party, Party.id == OperationTarget.party_id)
    ).where(OperationTarget.operation_id == operation_id, where).order_by(OperationTarget.party_id)
    collaborating = collaborating_parties(session, operation_id, catalog)
    if collaborating is not None:
        members = collaborating.subquery("collaborating")
        chosen = chosen.join(members, members.c.party_id == OperationTarget.party_id)
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
    joins = RuleJoins()
    rule = rule_sql(planned.rule, operation_id, catalog, joins)
    where = rule_sql(plan.step(planned.target).where, operation_id, catalog, joins)
    chosen = joins.apply(
        select(literal(ids[planned.target]), StepTarget.party_id, literal(operation_id))
        .join(Party, Party.id == StepTarget.party_id)
    ).where(StepTarget.step_id == ids[planned.source], StepTarget.status.in_(planned.when_status),
            rule, where).order_by(StepTarget.party_id)
    return _insert(session, chosen, ids[planned.target], operation_id)


def _insert(session: Session, chosen, step_id: int, operation_id: int) -> int:
    """Insert the chosen parties into the step (and their targeted contacts); count new ones."""
    added = (insert(StepTarget).from_select(["step_id", "party_id", "operation_id"], chosen)
             .on_conflict_do_nothing().returning(StepTarget.party_id).cte("added"))
    count = session.scalar(select(func.count()).select_from(added)) or 0
    if not session.scalar(text("select exists (select from operation_target_contact where operation_id = :op)"),
                          {"op": operation_id}):
        return count  # no contact targeted: nothing to add per contact
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
            insert into event (operation_id, step_id, party_id, code, contact_ids, message_path)
            select :op, st.step_id, st.party_id, :code,
                   coalesce((select array_agg(c.contact_id order by c.contact_id) from step_target_contact c
                             where c.step_id = st.step_id and c.party_id = st.party_id
                               and c.status = 'ok_continue'), '{}'),
                   -- the .eml of the party's (first) sent message, when the operation keeps them
                   (select o.message_path from outbox o join operation op on op.id = :op
                    left join contact mc on mc.id = o.contact_id
                    where op.attach_messages_to_events and o.step_id = st.step_id
                      and o.party_id = st.party_id and o.state = 'sent' and o.message_path is not null
                    order by mc.code nulls first, o.id limit 1)
            from step_target st where st.step_id = :step and st.status = 'ok_continue'
            order by st.party_id
            on conflict do nothing returning 1)
        select count(*) from added"""), {"op": operation_id, "step": step_id, "code": code}).scalar_one()


def status_counts(session: Session, step_id: int) -> dict[str, int]:
    return dict(session.execute(
        select(StepTarget.status, func.count()).where(StepTarget.step_id == step_id)
        .group_by(StepTarget.status).order_by(StepTarget.status)).all())

