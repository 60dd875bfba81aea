"""`phoning` and `phoning_contact`: the call sheet of a step's waiting calls (SPEC sections 4 and 6).

People make the calls, so a run changes no status: it writes the call sheet (`.xlsx`) of the
calls still to make, which operators fill and give back with `campflow answers import`, or
they call from `campflow phoning` instead. The sheet's header row is the import's layout:
TIERS, CONTACT (phoning_contact), one `QUESTIONNAIRE.CODE` column per question, STATUT and
RAPPEL; the other columns (the party's card, attempts, callback) are read but ignored by the
import. Choice, bool and status columns get a drop-down list whose values live on a hidden
sheet (so choices may hold commas and be many). One streamed query feeds a write-only
workbook; text is made inert (`cell_value`) and the file appears whole or not at all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from sqlalchemy import text
from sqlalchemy.orm import Session

from campflow.core.kinds import StepContext, StepKind, StepOutcome, register
from campflow.errors import closest
from campflow.render.sheets import fold_header
from campflow.store.answer_imports import SHEET_COLUMNS
from campflow.store.phoning import CALLS_SQL, Answered, CallQuestion, PhoningStep, phoning_step
from campflow.store.phoning_calls import add_contact_rows
from tasks.kinds.spreadsheet_export import FETCH_ROWS, cell_value, saved_atomically

SHEET_TITLE = "Appels"
LISTS_TITLE = "Listes"  # hidden sheet holding the drop-down values
HEADER_ROW = 2  # row 1 is the title; `answers import` finds the header row by its keywords
DATE_TIME_FORMAT = "dd/mm/yyyy hh:mm"
_HEADER_FONT = Font(bold=True)
_INPUT_FILL = PatternFill("solid", fgColor="FFF2CC")  # the columns operators fill in


@dataclass(frozen=True)
class SheetColumn:
    header: str
    width: float
    choices: tuple[str, ...] = ()  # a drop-down list
    hint: str = ""  # shown when the cell is selected
    filled: bool = False  # operators write in it


@dataclass(frozen=True)
class CallSheet:
    path: Path
    calls: int
    parties: int

    def describe(self) -> str:
        parties = f"{self.parties} part{'y' if self.parties == 1 else 'ies'}"
        return parties if self.calls == self.parties else f"{self.calls} contacts of {parties}"


def run(session: Session, ctx: StepContext) -> StepOutcome:
    """Write the call sheet of the step's waiting calls; no status changes."""
    step = phoning_step(session, ctx.step_id)
    sheet = write_call_sheet(session, step, ctx.output_dir / f"{ctx.operation_code}-{ctx.step_code}-appels.xlsx")
    return StepOutcome(outputs=(sheet.path,), message=f"call sheet of {sheet.describe()}: {sheet.path.name}")


def sheet_columns(step: PhoningStep) -> tuple[SheetColumn, ...]:
    """The card, the questions, then STATUT and RAPPEL; card headers never taken for import columns."""
    taken = {fold_header(q.code) for q in step.questions} | {
        fold_header(name) for names in SHEET_COLUMNS.values() for name in names}
    card = [("NOM", 30), ("TEL", 16), ("FAX", 16), ("EMAIL", 28), ("ADRESSE", 30), ("CP", 8), ("VILLE", 18),
            ("CONTACT" if step.by_contact else "CODE CONTACT", 10), ("CIVILITE", 9), ("PRENOM", 14),
            ("NOM CONTACT", 18), ("FONCTION", 14), ("TEL CONTACT", 16), ("TENTATIVES", 11),
            ("RAPPEL PREVU", 17)]
    columns = [SheetColumn("TIERS", 12)]
    for header, width in card:
        if header != "CONTACT" and fold_header(header) in taken:  # a question named NOM, VILLE…
            header = f"{header} (FICHE)"
        columns.append(SheetColumn(header, width))
    columns += [_question_column(step, q) for q in step.questions]
    columns.append(SheetColumn("STATUT", 24, step.statuses, "to_process with RAPPEL to call back; "
                               "ok_continue, not_processed_continue… when the call is done", filled=True))
    columns.append(SheetColumn("RAPPEL", 18, (), f"call back at: 12/03/2026 14:30 ({step.timezone})", filled=True))
    return tuple(columns)


def _question_column(step: PhoningStep, question: CallQuestion) -> SheetColumn:
    header = f"{step.questionnaire}.{question.code}"
    choices = question.choices if question.type == "choice" else ("oui", "non") if question.type == "bool" else ()
    hint = {"multi_choice": f"one or more of {'; '.join(question.choices)} (separate with ;)",
            "number": "a number", "date": "a date: 12/03/2026"}.get(question.type, "")
    width = min(40, max(len(header), *(len(c) for c in question.choices), 12) + 2)
    label = f"{question.label}{' (required)' if question.required else ''}"
    return SheetColumn(header, width, choices, f"{label}. {hint}".strip(" ."), filled=True)


def write_call_sheet(session: Session, step: PhoningStep, path: Path) -> CallSheet:
    """Write the step's waiting calls (one row per party, or per contact) to `path`."""
    if step.by_contact:
        add_contact_rows(session, step.step_id)  # so an imported sheet settles a party per contact
    columns = sheet_columns(step)
    result = session.execute(text(f"""
        select p.code, p.name, p.phone, p.fax, p.email, p.address, p.postal_code, p.city,
               c.code, c.title, c.first_name, c.last_name, c.function, c.phone,
               u.attempts, timezone(:zone, u.callback_at), u.party_id,
               (select jsonb_object_agg(a.question_id, jsonb_build_object('value', a.value, 'choices', a.choices))
                from answer a
                where a.operation_id = :op and a.party_id = u.party_id
                  and a.contact_id is not distinct from u.contact_id) as answers
        from ({CALLS_SQL}) u
        join party p on p.id = u.party_id
        left join lateral (
            select c.* from contact c
            left join operation_target_contact otc on otc.operation_id = :op and otc.contact_id = c.id
            where c.party_id = u.party_id and (u.contact_id is null or c.id = u.contact_id)
            order by otc.contact_id is null, c.code limit 1) c on true
        order by p.code, c.code"""),
        {"step": step.step_id, "by_contact": step.by_contact, "op": step.operation_id, "zone": step.timezone},
        execution_options={"yield_per": FETCH_ROWS, "stream_results": True})
    parties = _PartyCount()
    with result:
        title = f"Appels {step.name} — {step.label}" + (f" — questionnaire {step.questionnaire}"
                                                         if step.questionnaire else "")
        calls = _write(path, title, columns, (_cells(step, row, parties) for row in result))
    return CallSheet(path, calls, parties.count)


class _PartyCount:
    """Parties seen in the stream; rows come by party code, so a change of party is a new one."""

    def __init__(self) -> None:
        self.count, self.last = 0, None

    def see(self, party_id: int) -> None:
        if party_id != self.last:
            self.count, self.last = self.count + 1, party_id


def _cells(step: PhoningStep, row: Any, parties: _PartyCount) -> list[Any]:
    *card, attempts, callback_at, party_id, answers = row
    parties.see(party_id)
    answers = answers or {}
    shown = []
    for question in step.questions:
        found = answers.get(str(question.id))
        if found is None:
            shown.append(None)
            continue
        choices = found["choices"]
        shown.append(Answered(found["value"], tuple(choices) if choices is not None else None).shown(question)
                      or None)
    return [*card, attempts, callback_at, *shown, None, None]


def _write(path: Path, title: str, columns: Sequence[SheetColumn], rows: Iterator[list[Any]]) -> int:
    """The sheet under a title and the header, its drop-downs, saved atomically; returns its rows."""
    with saved_atomically(path) as book:
        sheet = book.create_sheet(SHEET_TITLE)
        for number, column in enumerate(columns, start=1):
            sheet.column_dimensions[get_column_letter(number)].width = column.width
        sheet.freeze_panes = f"B{HEADER_ROW + 1}"  # the header row and the TIERS column stay in view
        sheet.append([_styled(sheet, cell_value(title), _HEADER_FONT)])
        sheet.append([_styled(sheet, cell_value(c.header), _HEADER_FONT, _INPUT_FILL if c.filled else None)
                      for c in columns])
        count = 0
        for row in rows:
            sheet.append([_date_cell(sheet, v) if isinstance(v, dt.datetime) else cell_value(v) for v in row])
            count += 1
        _drop_downs(book, sheet, columns, count)
    return count


def _styled(sheet: Any, value: Any, font: Font, fill: PatternFill | None = None) -> WriteOnlyCell:
    cell = WriteOnlyCell(sheet, value=value)
    cell.font = font
    if fill is not None:
        cell.fill = fill
    return cell


def _date_cell(sheet: Any, value: dt.datetime) -> WriteOnlyCell:
    cell = WriteOnlyCell(sheet, value=value)
    cell.number_format = DATE_TIME_FORMAT
    return cell


def _drop_downs(book: Workbook, sheet: Any, columns: Sequence[SheetColumn], rows: int) -> None:
    """Drop-down lists and hints on the data rows; the lists' values on a hidden sheet."""
    first, last = HEADER_ROW + 1, HEADER_ROW + max(rows, 1)
    lists: list[tuple[str, ...]] = []
    for number, column in enumerate(columns, start=1):
        if not (column.choices or column.hint):
            continue
        if column.choices:
            lists.append(column.choices)
            letter = get_column_letter(len(lists))
            source = f"'{LISTS_TITLE}'!${letter}$1:${letter}${len(column.choices)}"
            check = DataValidation(type="list", formula1=source, allow_blank=True, showErrorMessage=True,
                                   errorTitle=column.header[:32], error="Choose a value of the list")
        else:
            check = DataValidation(allow_blank=True)
        if column.hint:
            check.showInputMessage, check.promptTitle, check.prompt = True, column.header[:32], column.hint[:255]
        check.add(f"{get_column_letter(number)}{first}:{get_column_letter(number)}{last}")
        sheet.data_validations.append(check)
    if not lists:
        return
    values = book.create_sheet(LISTS_TITLE)
    values.sheet_state = "hidden"
    for index in range(max((len(v) for v in lists), default=0)):
        values.append([cell_value(v[index]) if index < len(v) else None for v in lists])


def check(step: Any, loc: tuple, checker: Any) -> None:
    """A call always follows a questionnaire (Divalto): the phoning screen and call sheet ask it."""
    if not step.questionnaire:
        checker.problem(loc, f"step {step.code}: a {step.kind} step needs `questionnaire:` (the questions "
                        f"its calls ask); add questionnaire: CODE{closest('', checker.known.questionnaires)}")


register(StepKind(name="phoning", run=run, automated=False, check=check))
register(StepKind(name="phoning_contact", run=run, automated=False, check=check))
