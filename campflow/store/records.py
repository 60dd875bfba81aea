"""A step's parties and their field values, read set-based for the kinds that write or send.

A kind first claims its `to_process` parties into a temporary table, locking their
`step_target` rows, so that what it writes or sends and the statuses it sets cover exactly
the same parties. `RecordQuery` then yields one row per claimed party (or per recipient
contact) with a value per field, each other table joined once, streamed by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Integer,
    and_,
    case,
    column,
    func,
    insert,
    join,
    null,
    select,
    table,
    text,
    true,
    update,
)
from sqlalchemy.orm import Session, aliased
from sqlalchemy.types import DateTime, Text

from campflow.core.fields import FieldRef
from campflow.core.kinds import StepContext
from campflow.errors import CampflowError, FormulaError, Problem, SpecError
from campflow.store.catalog import load_known
from campflow.store.distribution import OrderSource, attach_orders, check_order_fields
from models import (
    Answer,
    Collaborator,
    Contact,
    EntityType,
    Event,
    EventCode,
    Family,
    Operation,
    OperationTarget,
    OperationTargetContact,
    Order,
    Party,
    Question,
    Questionnaire,
    Step,
    StepTarget,
    StepTargetContact,
)

# The claimed parties; a temporary table, so only this transaction sees it.
# `order_id`: the local entity's order whose values fill the party's ORDER.FIELD fields
CLAIMED = table("claimed_party", column("party_id", Integer), column("order_id", Integer), schema="pg_temp")


@dataclass(frozen=True)
class FieldColumn:
    """A field a kind reads: the name as written in the spec and the field it resolves to."""

    text: str
    ref: FieldRef


def resolve_fields(session: Session, texts: Sequence[str], place: str, what: str = "field",
                   fix: str = "fix the step and apply it again") -> tuple[FieldColumn, ...]:
    """Fields resolved with the database's catalog; every bad one reported at once."""
    catalog = load_known(session).field_catalog()
    columns, problems = [], []
    for number, written in enumerate(texts, start=1):
        try:
            columns.append(FieldColumn(written, catalog.resolve(written)))
        except FormulaError as error:
            problems.append(Problem(f"{place} {what} {number} '{written}'", error.message))
    if problems:
        raise SpecError(problems, fix)
    return tuple(columns)


@dataclass(frozen=True)
class Claim:
    """The parties a step claimed (`pg_temp.claimed_party`) and where their `ORDER.FIELD` values
    come from; false when nothing was claimed."""

    count: int
    orders: OrderSource | None = None

    def __bool__(self) -> bool:
        return self.count > 0


def claim_parties(session: Session, step_id: int) -> Claim:
    """Copy the ids of the step's `to_process` parties to a temporary table; lock their rows."""
    # pg_temp: never drop a real table that happens to share the name
    session.execute(text("drop table if exists pg_temp.claimed_party"))
    session.execute(text("create temporary table claimed_party "
                         "(party_id integer primary key, order_id integer) on commit drop"))
    due = (select(StepTarget.party_id)
           .where(StepTarget.step_id == step_id, StepTarget.status == "to_process")
           .with_for_update())
    # SQLAlchemy keeps an INSERT's rowcount only when asked to
    claim = insert(CLAIMED).from_select(["party_id"], due).execution_options(preserve_rowcount=True)
    claimed: int = session.execute(claim).rowcount  # type: ignore[attr-defined]
    orders = attach_orders(session, step_id, CLAIMED) if claimed else None
    # autovacuum never analyses temporary tables; without statistics the joins plan badly
    session.execute(text("analyze pg_temp.claimed_party"))
    return Claim(claimed, orders)


def mark_processed(session: Session, step_id: int) -> int:
    """Set the claimed parties and their waiting contacts `ok_continue`; how many parties."""
    _set_ok_continue(session, StepTargetContact, step_id)
    return _set_ok_continue(session, StepTarget, step_id)


def _set_ok_continue(session: Session, model: Any, step_id: int) -> int:
    """One UPDATE … FROM the claimed parties."""
    statement = (update(model)
                 .where(model.step_id == step_id, model.status == "to_process",
                        model.party_id == CLAIMED.c.party_id)
                 .values(status="ok_continue", processed_at=func.now())
                 # nothing to synchronise: no ORM object of these rows is loaded
                 .execution_options(synchronize_session=False))
    return session.execute(statement).rowcount  # type: ignore[attr-defined]


def question_ids(session: Session, columns: Iterable[FieldColumn],
                 orders: OrderSource | None) -> dict[tuple[str, str], int]:
    """(questionnaire code, question code) → question id, for the answer columns; `orders` (the
    claim's) fill the `ORDER.FIELD` columns.

    Raises:
        CampflowError: an ORDER.FIELD column no order of the claimed parties' operation fills.
    """
    columns = list(columns)
    check_order_fields(orders, (c.ref for c in columns))
    wanted = {(c.ref.questionnaire, c.ref.question) for c in columns if c.ref.table == "answers"}
    if not wanted:
        return {}
    found = session.execute(
        select(Questionnaire.code, Question.code, Question.id).join(Question.questionnaire)
        .where(Questionnaire.code.in_({q for q, _ in wanted})))
    return {(q, code): id_ for q, code, id_ in found if (q, code) in wanted}


class RecordQuery:
    """The SELECT of an export: the claimed parties, each other table joined once when needed."""

    def __init__(self, ctx: StepContext, question_ids: dict[tuple[str, str], int]) -> None:
        self.ctx = ctx
        self.question_ids = question_ids
        self.joined: dict[str, Any] = {}
        self.from_: FromClause = (
            join(CLAIMED, Party, Party.id == CLAIMED.c.party_id)
            .join(StepTarget, and_(StepTarget.step_id == ctx.step_id,
                                   StepTarget.party_id == CLAIMED.c.party_id))
            .join(Operation, Operation.id == ctx.operation_id)
            .join(Step, Step.id == ctx.step_id))

    def select(self, columns: Sequence[FieldColumn]) -> Any:
        """One row per claimed party, by party code, with a value per column."""
        values = [self.value(c.ref).label(f"c{i}") for i, c in enumerate(columns)]
        return select(*values).select_from(self.from_).order_by(Party.code)

    def value(self, ref: FieldRef) -> ColumnElement[Any]:
        """The SQL of one column; timestamps in the operation's time zone (Excel has none)."""
        getter = {"party": self.party_value, "contact": self.contact_value,
                  "operation": self.operation_value, "step": lambda r: getattr(Step, r.field),
                  "target": self.target_value, "target_contact": self.target_contact_value,
                  "event": self.event_value, "event_code": self.event_code_value,
                  "answers": self.answer_value, "order": self.order_value}.get(ref.table)
        if getter is None:
            raise CampflowError(f"an export cannot show {ref} (table {ref.table}) yet")
        value = getter(ref)
        if isinstance(value.type, DateTime) and value.type.timezone:
            value = func.timezone(Operation.timezone, value, type_=DateTime())
        return value

    def _outer(self, name: str, target: Any, onclause: Any) -> Any:
        """`target` left-joined once under `name`."""
        if name not in self.joined:
            self.from_ = self.from_.outerjoin(target, onclause)
            self.joined[name] = target
        return self.joined[name]

    def party_value(self, ref: FieldRef) -> ColumnElement[Any]:
        value = _field(Party.fields, ref, getattr(Party, ref.field, None))
        # CLI.NOM and the like: the column is empty for parties of another kind
        return case((Party.kind == ref.party_kind, value)) if ref.party_kind else value

    def contact(self) -> Any:
        """The party's first targeted contact in this operation, else its first contact."""
        chosen = (select(Contact)
                  .outerjoin(OperationTargetContact,
                             and_(OperationTargetContact.operation_id == self.ctx.operation_id,
                                  OperationTargetContact.contact_id == Contact.id))
                  .where(Contact.party_id == Party.id)
                  .order_by(OperationTargetContact.contact_id.is_(None), Contact.code)
                  .limit(1)
                  .lateral("export_contact"))
        return self._outer("contact", chosen, true())

    def contact_value(self, ref: FieldRef) -> ColumnElement[Any]:
        chosen = self.contact()
        return _field(chosen.c.fields, ref, chosen.c.get(ref.field))

    def operation_value(self, ref: FieldRef) -> ColumnElement[Any]:
        coded = {"family": (Family, Operation.family_id), "type": (EntityType, Operation.type_id),
                 "responsible": (Collaborator, Operation.responsible_id)}.get(ref.field)
        if coded is None:
            return getattr(Operation, ref.field)
        model, key = coded
        return self._outer(ref.field, model, model.id == key).code

    def target_value(self, ref: FieldRef) -> ColumnElement[Any]:
        if ref.field in ("added_at", "source"):  # kept on the operation's target, not the step's
            target = self._outer("target", OperationTarget, and_(
                OperationTarget.operation_id == self.ctx.operation_id,
                OperationTarget.party_id == Party.id))
            return getattr(target, ref.field)
        return getattr(StepTarget, ref.field)

    def target_contact_value(self, ref: FieldRef) -> ColumnElement[Any]:
        """The status columns of the contact shown in the contact columns."""
        chosen = self.contact()
        if ref.field == "source":
            return null().cast(Text)  # a targeted contact records no source
        if ref.field == "added_at":
            target = aliased(OperationTargetContact, name="export_target_contact")
            return self._outer("target_contact", target, and_(
                target.operation_id == self.ctx.operation_id,
                target.contact_id == chosen.c.id)).added_at
        status = aliased(StepTargetContact, name="export_step_contact")
        status = self._outer("step_contact", status, and_(
            status.step_id == self.ctx.step_id, status.contact_id == chosen.c.id))
        return getattr(status, ref.field)

    def event(self) -> Any:
        """The party's latest event in this operation."""
        latest = (select(Event.code, Event.occurred_at)
                  .where(Event.operation_id == self.ctx.operation_id, Event.party_id == Party.id)
                  .order_by(Event.occurred_at.desc(), Event.id.desc())
                  .limit(1)
                  .lateral("export_event"))
        return self._outer("event", latest, true())

    def event_value(self, ref: FieldRef) -> ColumnElement[Any]:
        return self.event().c[ref.field]

    def event_code_value(self, ref: FieldRef) -> ColumnElement[Any]:
        event = self.event()
        return getattr(self._outer("event_code", EventCode, EventCode.code == event.c.code), ref.field)

    def answer_value(self, ref: FieldRef) -> ColumnElement[Any]:
        """The party's answer in this operation (its own before a contact's, then the latest)."""
        question_id = self.question_ids.get((ref.questionnaire, ref.question))
        if question_id is None:
            raise CampflowError(f"column {ref}: no question {ref.question} in questionnaire "
                                f"{ref.questionnaire}")
        shown = func.coalesce(func.array_to_string(Answer.choices, ", "), Answer.value)
        return (select(shown)
                .where(Answer.operation_id == self.ctx.operation_id, Answer.party_id == Party.id,
                       Answer.question_id == question_id)
                .order_by(Answer.contact_id.is_not(None), Answer.answered_at.desc(), Answer.id.desc())
                .limit(1)
                .scalar_subquery())


    def order_value(self, ref: FieldRef) -> ColumnElement[Any]:
        """The form value of the party's order (claim_parties chose it), the field's code in any case."""
        order = self._outer("order", ORDERS, ORDERS.c.id == CLAIMED.c.order_id)
        entry = func.jsonb_each_text(order.c["values"]).table_valued("key", "value").alias("order_entry")
        return (select(entry.c.value).where(func.lower(entry.c.key) == ref.field.lower())
                .limit(1).scalar_subquery())


ORDERS = Order.__table__.alias("party_order")


def _field(fields: Any, ref: FieldRef, standard: Any) -> ColumnElement[Any]:
    """A custom field (`fields ->> key`, the key a bound parameter) or a standard column."""
    return fields[ref.key].astext if ref.custom else standard




def batches(rows: Iterable[Any], size: int, check: Callable[[], None] | None = None) -> Iterator[list[Any]]:
    """The rows in lists of `size` (the last one shorter), read as they come.

    `check` (a step's `check_lock`) runs before each batch is handed out: it raises when the
    run may no longer claim work.
    """
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        if check is not None:
            check()
        yield batch
