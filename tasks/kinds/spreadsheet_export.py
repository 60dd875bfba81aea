"""`spreadsheet_export`: an `.xlsx` of a step's parties with the spec's `columns` (SPEC section 4).

One SELECT yields every column; it streams through a server-side cursor into an openpyxl
write-only workbook (rows go to a temporary file, strings are written inline), so memory
does not grow with the number of parties. Past Excel's row limit the rows go on to a new
sheet with the header again. The parties are claimed first into a temporary table, locking
their `step_target` rows: the export and the status update cover exactly the same parties.

Text cells that a spreadsheet could take for a formula (`=`, `+`, `-`, `@`, TAB, CR first)
are prefixed with `'` (OWASP "CSV injection"): the cell then shows `'=…` as plain text. openpyxl
alone would even store a string starting with `=` as a live formula.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from sqlalchemy import ColumnElement, FromClause, Integer, and_, case, column, func, insert, join
from sqlalchemy import null, select, table, text, true, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.types import DateTime, Text

from campflow.catalog import load_known
from campflow.errors import CampflowError, FormulaError, Problem, SpecError
from flows.fields import FieldRef
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
    Party,
    Question,
    Questionnaire,
    Step,
    StepTarget,
    StepTargetContact,
)
from tasks.registry import StepContext, StepKind, StepOutcome, register

ROWS_PER_SHEET = 1_048_575  # Excel's 1,048,576 rows minus the header; tests patch it small
SHEET_TITLE = "Export"
FETCH_ROWS = 5_000  # rows per round trip of the server-side cursor
MAX_CELL_TEXT = 32_767  # Excel refuses longer cells ("repairs" the file)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# The claimed parties; a temporary table, so only this transaction sees it.
_CLAIMED = table("spreadsheet_export_party", column("party_id", Integer), schema="pg_temp")


@dataclass(frozen=True)
class ExportColumn:
    """A column of the workbook: the header as written in the spec and the field it names."""

    text: str
    ref: FieldRef


def run(session: Session, ctx: StepContext) -> StepOutcome:
    """Write the step's `to_process` parties to a workbook, then mark them `ok_continue`."""
    columns = resolve_columns(session, ctx)
    if not _claim_parties(session, ctx.step_id):
        return StepOutcome(message="no party to process")
    path = ctx.output_dir / f"{ctx.operation_code}-{ctx.step_code}.xlsx"
    query = ExportQuery(ctx, _question_ids(session, columns)).select(columns)
    result = session.execute(query.execution_options(yield_per=FETCH_ROWS, stream_results=True))
    with result:
        written = write_workbook(path, [c.text for c in columns], result)
    done = _mark_processed(session, ctx.step_id)
    return StepOutcome(processed=done, statuses={"ok_continue": done}, outputs=(path,),
                       message=f"{written} part{'y' if written == 1 else 'ies'} exported to {path.name}")


def resolve_columns(session: Session, ctx: StepContext) -> tuple[ExportColumn, ...]:
    """The step's `columns:` resolved with the database's catalog; every bad one reported."""
    texts = ctx.settings.get("columns")
    place = f"step {ctx.operation_code}/{ctx.step_code}"
    if not texts or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise CampflowError(f"{place}: a spreadsheet_export step needs `columns:`, a list of "
                            f"fields such as [CLI.NOM, party.stat(2)]; got {texts!r}")
    catalog = load_known(session).field_catalog()
    columns, problems = [], []
    for number, written in enumerate(texts, start=1):
        try:
            columns.append(ExportColumn(written, catalog.resolve(written)))
        except FormulaError as error:
            problems.append(Problem(f"{place} column {number} '{written}'", error.message))
    if problems:
        raise SpecError(problems, "nothing was exported; fix the step's columns and apply it again")
    return tuple(columns)


def _claim_parties(session: Session, step_id: int) -> int:
    """Copy the ids of the step's `to_process` parties to a temporary table; lock their rows."""
    # pg_temp: never drop a real table that happens to share the name
    session.execute(text("drop table if exists pg_temp.spreadsheet_export_party"))
    session.execute(text("create temporary table spreadsheet_export_party "
                         "(party_id integer primary key) on commit drop"))
    due = (select(StepTarget.party_id)
           .where(StepTarget.step_id == step_id, StepTarget.status == "to_process")
           .with_for_update())
    # SQLAlchemy keeps an INSERT's rowcount only when asked to
    claim = insert(_CLAIMED).from_select(["party_id"], due).execution_options(preserve_rowcount=True)
    claimed: int = session.execute(claim).rowcount  # type: ignore[attr-defined]
    # autovacuum never analyses temporary tables; without statistics the joins plan badly
    session.execute(text("analyze pg_temp.spreadsheet_export_party"))
    return claimed


def _mark_processed(session: Session, step_id: int) -> int:
    """Set the claimed parties and their waiting contacts `ok_continue`; how many parties."""
    _set_ok_continue(session, StepTargetContact, step_id)
    return _set_ok_continue(session, StepTarget, step_id)


def _set_ok_continue(session: Session, model: Any, step_id: int) -> int:
    """One UPDATE … FROM the claimed parties."""
    statement = (update(model)
                 .where(model.step_id == step_id, model.status == "to_process",
                        model.party_id == _CLAIMED.c.party_id)
                 .values(status="ok_continue", processed_at=func.now())
                 # nothing to synchronise: no ORM object of these rows is loaded
                 .execution_options(synchronize_session=False))
    return session.execute(statement).rowcount  # type: ignore[attr-defined]


def _question_ids(session: Session, columns: Iterable[ExportColumn]) -> dict[tuple[str, str], int]:
    """(questionnaire code, question code) → question id, for the answer columns."""
    wanted = {(c.ref.questionnaire, c.ref.question) for c in columns if c.ref.table == "answers"}
    if not wanted:
        return {}
    found = session.execute(
        select(Questionnaire.code, Question.code, Question.id).join(Question.questionnaire)
        .where(Questionnaire.code.in_({q for q, _ in wanted})))
    return {(q, code): id_ for q, code, id_ in found if (q, code) in wanted}


class ExportQuery:
    """The SELECT of an export: the claimed parties, each other table joined once when needed."""

    def __init__(self, ctx: StepContext, question_ids: dict[tuple[str, str], int]) -> None:
        self.ctx = ctx
        self.question_ids = question_ids
        self.joined: dict[str, Any] = {}
        self.from_: FromClause = (
            join(_CLAIMED, Party, Party.id == _CLAIMED.c.party_id)
            .join(StepTarget, and_(StepTarget.step_id == ctx.step_id,
                                   StepTarget.party_id == _CLAIMED.c.party_id))
            .join(Operation, Operation.id == ctx.operation_id)
            .join(Step, Step.id == ctx.step_id))

    def select(self, columns: Sequence[ExportColumn]) -> Any:
        """One row per claimed party, by party code, with a value per column."""
        values = [self.value(c.ref).label(f"c{i}") for i, c in enumerate(columns)]
        return select(*values).select_from(self.from_).order_by(Party.code)

    def value(self, ref: FieldRef) -> ColumnElement[Any]:
        """The SQL of one column; timestamps in the operation's time zone (Excel has none)."""
        getter = {"party": self.party_value, "contact": self.contact_value,
                  "operation": self.operation_value, "step": lambda r: getattr(Step, r.field),
                  "target": self.target_value, "target_contact": self.target_contact_value,
                  "event": self.event_value, "event_code": self.event_code_value,
                  "answers": self.answer_value}.get(ref.table)
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


def _field(fields: Any, ref: FieldRef, standard: Any) -> ColumnElement[Any]:
    """A custom field (`fields ->> key`, the key a bound parameter) or a standard column."""
    return fields[ref.key].astext if ref.custom else standard


# --- the workbook ----------------------------------------------------------------------------


def write_workbook(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Write the rows under the header, sheet after sheet; the file appears whole or not at all.

    Returns the number of data rows written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    book = Workbook(write_only=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        count = _fill(book, [cell_value(h) for h in header], rows)
        book.save(partial)
        with partial.open("rb+") as written:
            os.fsync(written.fileno())  # the data is on disk before the name points to it
        os.replace(partial, path)
    except BaseException:
        _discard(book)
        raise
    finally:
        partial.unlink(missing_ok=True)
    return count


def _discard(book: Workbook) -> None:
    """Close an unsaved workbook's sheet streams and delete their temporary files."""
    # openpyxl deletes them only when saving or at exit, and a worker process lives long
    for sheet in book.worksheets:
        writer = sheet._writer
        if writer is None:
            continue
        with contextlib.suppress(Exception):  # already failing: the first error is the one to see
            if not sheet.closed:
                sheet.close()
        with contextlib.suppress(OSError, ValueError):
            writer.cleanup()


def _fill(book: Workbook, header: list[Any], rows: Iterable[Sequence[Any]]) -> int:
    """Append the rows, opening `Export`, `Export (2)`… every ROWS_PER_SHEET rows."""
    limit = ROWS_PER_SHEET  # read at call time, so tests can patch it
    sheet, on_sheet, count = None, limit, 0
    for row in rows:
        if on_sheet == limit:
            sheet, on_sheet = _new_sheet(book, header), 0
        sheet.append([cell_value(v) for v in row])  # type: ignore[union-attr]
        on_sheet += 1
        count += 1
    if sheet is None:
        _new_sheet(book, header)  # a workbook needs a sheet
    return count


def _new_sheet(book: Workbook, header: list[Any]) -> Any:
    number = len(book.worksheets) + 1
    sheet = book.create_sheet(SHEET_TITLE if number == 1 else f"{SHEET_TITLE} ({number})")
    sheet.append(header)
    return sheet


def cell_value(value: Any) -> Any:
    """What a cell holds: text made inert and valid for Excel; numbers and dates unchanged."""
    if not isinstance(value, str):
        return value
    value = ILLEGAL_CHARACTERS_RE.sub("", value)  # control characters make openpyxl raise
    if value.startswith(FORMULA_STARTS):
        value = "'" + value
    return value[:MAX_CELL_TEXT]


register(StepKind(name="spreadsheet_export", run=run, automated=True, retries=2,
                  retry_delay_seconds=5))
