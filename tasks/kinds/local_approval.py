"""`local_approval`: local entities approve their part of the target (SPEC section 9).

First run: the step's parties are split with the distribution (`campflow.store.approvals`), each
entity gets its list as an `.xlsx` (a row per contact, a KEEP column to answer in) by e-mail with the deadline
and the link to its page in the portal (the texts: the package's templates, else the defaults of
`campflow.network.notices`); the parties wait (`to_process`). Later runs send the reminders
due, move approved lists on (`ok_continue`, removed parties `excluded`, removed contacts taken off the
operation's target) and drop what was not
approved by the deadline. With `report: true` the step instead mails each entity a report of
its parties' statuses in the operation's earlier steps, and lets the parties pass.

E-mails go out last, after the database work of the run: a failing send fails the step and
rolls it back, and the next run sends again.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from sqlalchemy import text
from sqlalchemy.orm import Session

from campflow.core.kinds import StepContext, StepKind, StepOutcome, register
from campflow.errors import CampflowError, closest
from campflow.network.messages import link, operation_notices, render
from campflow.network.notify import notify
from campflow.store import approvals
from campflow.store.approvals import (
    ApprovalStep,
    EntityList,
    assign_split,
    check_covered,
    entity_lists,
    load_step,
    mark_sent,
    reminders_due,
    settle,
    split_claimed,
)
from campflow.store.records import claim_parties, mark_processed
from tasks.kinds.spreadsheet_export import FETCH_ROWS, cell_value, saved_atomically

LIST_HEADER = ("TIERS", "NOM", "CONTACT", "NOM DU CONTACT", "FONCTION", "ADRESSE", "CP", "VILLE", "EMAIL", "TEL",
               "KEEP")
LIST_WIDTHS = (12, 30, 10, 24, 14, 30, 8, 18, 28, 16, 8)
HEADER_ROW = 3  # a title and an instruction come first; imports find the header by keyword
_BOLD = Font(bold=True)
_INPUT = PatternFill("solid", fgColor="FFF2CC")


def run(session: Session, ctx: StepContext) -> StepOutcome:
    """Send the lists (first run), or remind, move approved parties on and drop the late ones."""
    step = load_step(session, ctx.step_id)
    if step.report:
        return send_reports(session, ctx, step)
    now = approvals.clock()  # read through the module, so tests can move time
    claimed = claim_parties(session, ctx.step_id)
    if session.scalar(text("select exists (select 1 from local_approval where step_id = :s)"), {"s": ctx.step_id}):
        return follow_up(session, ctx, step, now)
    if not claimed:
        return StepOutcome(message="no party to approve")
    return send_lists(session, ctx, step, now)


def send_lists(session: Session, ctx: StepContext, step: ApprovalStep, now: dt.datetime) -> StepOutcome:
    """Split the parties between the entities, write and mail each its list."""
    if now >= step.deadline:
        raise CampflowError(f"step {step.place}: its deadline {step.local(step.deadline)} is past, so every list "
                            "would expire unanswered; set a later local_approval.deadline and apply it again — "
                            "nothing was sent")
    split_claimed(session, ctx, step)
    check_covered(session, step)
    split = assign_split(session, step)
    lists = entity_lists(session, step.step_id)
    outputs, silent = [], []
    for entity in lists:
        path = write_list(session, ctx, step, entity)
        outputs.append(path)
        subject, body = list_message(session, "list_to_approve", step, entity, path.name)
        if not notify(entity.emails, subject, body, [path], tag=f"list-{step.step_code}-{entity.entity_code}"):
            silent.append(entity.entity_code)
        mark_sent(session, entity.approval_id)
    shown = ", ".join(f"{e.entity_code} {e.parties}" for e in lists)
    message = (f"lists sent to {len(lists)} entities ({shown}), waiting until {step.local(step.deadline)}; "
               f"{split.excluded} parties excluded (no local entity or beyond a limit)")
    if silent:
        message += f"; no notification e-mail for {', '.join(silent)}: their lists are only in the output folder"
    return StepOutcome(processed=split.excluded, statuses={"excluded": split.excluded} if split.excluded else {},
                       outputs=tuple(outputs), message=message)


def follow_up(session: Session, ctx: StepContext, step: ApprovalStep, now: dt.datetime) -> StepOutcome:
    """Settle the lists, then send the reminders due to the lists still waiting."""
    settled = settle(session, step, now)
    outputs, reminded = [], []
    lists = entity_lists(session, step.step_id)
    for entity in lists:
        if entity.status != "pending" or now >= entity.deadline:
            continue
        due = reminders_due(entity, step.remind_before_hours, now)
        if due <= entity.reminders_sent:
            continue  # never the same reminder twice
        path = write_list(session, ctx, step, entity)
        outputs.append(path)
        subject, body = list_message(session, "list_reminder", step, entity, path.name, removed=entity.removed)
        notify(entity.emails, subject, body, [path], tag=f"reminder-{step.step_code}-{entity.entity_code}")
        mark_sent(session, entity.approval_id, reminders=due)
        reminded.append(entity.entity_code)
    waiting = [e for e in lists if e.status == "pending"]
    parts = [f"waiting: {len(waiting)} entities ({sum(e.waiting for e in waiting)} parties) until "
             f"{step.local(step.deadline)}" if waiting else "no list waiting",
             f"approved: {settled.approved} parties moved on"
             + (f" ({settled.contacts_removed} of their contacts removed)" if settled.contacts_removed else "")
             + f", {settled.removed} removed by their entity"]
    if settled.expired_entities or settled.dropped:
        parts.append(f"dropped: {settled.dropped} parties not approved in time"
                     + (f" (lists expired: {', '.join(settled.expired_entities)})" if settled.expired_entities else ""))
    if settled.late:
        parts.append(f"{settled.late} parties arrived after the lists were sent: excluded")
    if reminded:
        parts.append(f"reminders sent to {', '.join(reminded)}")
    excluded = settled.removed + settled.dropped + settled.late
    statuses = {k: v for k, v in (("ok_continue", settled.approved), ("excluded", excluded)) if v}
    return StepOutcome(processed=settled.approved + excluded, statuses=statuses, outputs=tuple(outputs),
                       message="; ".join(parts))


# --- the list --------------------------------------------------------------------------------


def file_name(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts)) + ".xlsx"


def write_list(session: Session, ctx: StepContext, step: ApprovalStep, entity: EntityList) -> Path:
    """The entity's list as it stands, a row per listed contact (a party without any: one row);
    removed parties and contacts say no in KEEP, where the entity answers."""
    path = ctx.output_dir / file_name(step.operation_code, step.step_code, entity.entity_code)
    result = session.execute(text(f"""
        select p.code, p.name, l.code, nullif(concat_ws(' ', c.first_name, c.last_name), ''), c.function,
               p.address, p.postal_code, p.city, coalesce(c.email, p.email), coalesce(c.phone, p.phone),
               case when lap.removed or x.contact_id is not null then 'no' else 'yes' end
        from local_approval_party lap join party p on p.id = lap.party_id
        left join ({approvals.LISTED_CONTACTS}) l on l.party_id = lap.party_id
        left join contact c on c.id = l.id
        left join local_approval_contact x on x.step_id = lap.step_id and x.contact_id = l.id
        where lap.step_id = :step and lap.entity_id = :entity order by p.code, l.code"""),
        {"op": step.operation_id, "step": step.step_id, "entity": entity.entity_id},
        execution_options={"yield_per": FETCH_ROWS, "stream_results": True})
    title = (f"{step.operation_code} — {step.operation_label} — {step.step_code}: {entity.entity_code}'s list to "
             f"approve before {step.local(entity.deadline)}")
    hint = ("KEEP: yes keeps the row's contact; write no (or empty the cell) to remove it — a party goes when all "
            f"its rows say no. Then upload the file on your list's page: {list_link(step)}")
    with result:
        write_sheet(path, "Liste", (title, hint), LIST_HEADER, LIST_WIDTHS, result, keep_column=True)
    return path


def write_sheet(path: Path, title: str, lines: Sequence[str], header: Sequence[str], widths: Sequence[float],
                rows: Iterable[Sequence[Any]], keep_column: bool = False) -> int:
    """A one-sheet workbook: title lines, the header, inert rows; saved whole or not at all."""
    with saved_atomically(path) as book:
        sheet = book.create_sheet(title)
        for number, width in enumerate(widths, start=1):
            sheet.column_dimensions[get_column_letter(number)].width = width
        sheet.freeze_panes = f"B{len(lines) + 2}"
        for line in lines:
            sheet.append([_cell(sheet, line, _BOLD)])
        sheet.append([_cell(sheet, h, _BOLD, _INPUT if keep_column and h == "KEEP" else None) for h in header])
        count = 0
        for row in rows:
            sheet.append([cell_value(v.replace(tzinfo=None) if isinstance(v, dt.datetime) else v) for v in row])
            count += 1
        if keep_column:
            letter = get_column_letter(len(header))
            check = DataValidation(type="list", formula1='"yes,no"', allow_blank=True, showInputMessage=True,
                                   promptTitle="KEEP", prompt="yes keeps the row; no (or blank) removes it")
            check.add(f"{letter}{len(lines) + 2}:{letter}{len(lines) + 1 + max(count, 1)}")
            sheet.data_validations.append(check)
    return count


def _cell(sheet: Any, value: Any, font: Font, fill: PatternFill | None = None) -> WriteOnlyCell:
    cell = WriteOnlyCell(sheet, value=cell_value(value))
    cell.font = font
    if fill is not None:
        cell.fill = fill
    return cell


# --- the messages ----------------------------------------------------------------------------


def list_link(step: ApprovalStep) -> str:
    """The list's page in the portal (each entity sees its own list there)."""
    return link("lists", step.operation_code, step.step_code)


def list_message(session: Session, notice: str, step: ApprovalStep, entity: EntityList, file: str,
                 **more: Any) -> tuple[str, str]:
    """(subject, body) of a list to approve or its reminder: the package's template, else the default."""
    return render(notice, operation_notices(session, step.operation_id),
                  operation={"code": step.operation_code, "label": step.operation_label},
                  step={"code": step.step_code, "label": step.step_label},
                  entity={"code": entity.entity_code, "label": entity.entity_label}, parties=entity.parties,
                  deadline=step.local(entity.deadline), file=file, link=list_link(step),
                  logins=list(entity.operators), **more)


# --- report mode -----------------------------------------------------------------------------


def send_reports(session: Session, ctx: StepContext, step: ApprovalStep) -> StepOutcome:
    """Mail each entity a report of its parties' statuses in the earlier steps; the parties pass."""
    if not claim_parties(session, ctx.step_id):
        return StepOutcome(message="no party to report on")
    split_claimed(session, ctx, step, limits=False)  # a report covers all of an entity's parties
    earlier = session.execute(text("""
        select id, code, kind from step where operation_id = :op and kind is not null and position < :pos
        order by position"""), {"op": step.operation_id, "pos": step.step_position}).all()
    entities = session.execute(text("""
        select e.id, e.code, e.label, e.emails, count(*) from pg_temp.local_split s join entity e on e.id = s.entity_id
        group by e.id order by e.code""")).all()
    outputs, overrides = [], operation_notices(session, step.operation_id)
    for entity_id, code, label, emails, parties in entities:
        path = ctx.output_dir / file_name(step.operation_code, step.step_code, code, "report")
        write_report(session, step, entity_id, code, earlier, path)
        outputs.append(path)
        subject, body = render("list_report", overrides, operation={"code": step.operation_code,
                               "label": step.operation_label}, step={"code": step.step_code, "label": step.step_label},
                               entity={"code": code, "label": label}, parties=parties, file=path.name,
                               steps=[f"{step_code} ({kind})" for _, step_code, kind in earlier])
        notify(emails or (), subject, body, [path], tag=f"report-{step.step_code}-{code}")
    done = mark_processed(session, ctx.step_id)
    unassigned = session.scalar(text("select count(*) from pg_temp.local_split where entity_id is null"))
    message = f"reports sent to {len(entities)} entities ({', '.join(e[1] for e in entities) or 'none'})"
    if unassigned:
        message += f"; {unassigned} parties have no local entity (no report)"
    return StepOutcome(processed=done, statuses={"ok_continue": done}, outputs=tuple(outputs), message=message)


def write_report(session: Session, step: ApprovalStep, entity_id: int, entity_code: str,
                 earlier: Sequence[Any], path: Path) -> int:
    header = ["TIERS", "NOM", "VILLE", "EMAIL", "TEL"]
    for _, code, kind in earlier:
        header += [f"{code} ({kind})", f"{code} MOTIF", f"{code} DATE"]
    result = session.execute(text("""
        select p.code, p.name, p.city, p.email, p.phone,
               (select jsonb_object_agg(st.step_id, jsonb_build_array(st.status, st.reason,
                                        to_char(timezone(:zone, st.processed_at), 'YYYY-MM-DD HH24:MI')))
                from step_target st where st.party_id = p.id and st.step_id = any(cast(:steps as int[])))
        from pg_temp.local_split s join party p on p.id = s.party_id
        where s.entity_id = :entity order by p.code"""),
        {"zone": step.timezone, "steps": [s[0] for s in earlier], "entity": entity_id},
        execution_options={"yield_per": FETCH_ROWS, "stream_results": True})

    def cells(row: Any) -> list[Any]:
        statuses = row[5] or {}
        values = list(row[:5])
        for step_id, _, _ in earlier:
            values += statuses.get(str(step_id)) or [None, None, None]
        return values

    title = f"{step.operation_code} — {step.operation_label} — {entity_code}'s parties and their statuses"
    with result:
        return write_sheet(path, "Rapport", (title,), header, [12, 30, 18, 28, 16] + [18, 30, 17] * len(earlier),
                           (cells(r) for r in result))


def check_local_approval(step: Any, loc: tuple, checker: Any) -> None:
    """Apply-time checks of `local_approval:`: a known distribution."""
    approval = step.local_approval
    known = checker.known.distributions
    if approval.distribution not in known:
        checker.problem(loc + ("local_approval", "distribution"), f"unknown distribution {approval.distribution}"
                        f"{closest(approval.distribution, known)}")


register(StepKind(name="local_approval", run=run, automated=False,
                  waits_for="their local entity's approval (campflow approvals)",
                  settings={"local_approval": check_local_approval}))
