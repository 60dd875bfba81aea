"""Call-sheet imports (`answers import`, SPEC section 6).

A call sheet is staged with COPY (all text), checked with set-based queries that reject rows
by number, then written with one upsert of answers and one UPDATE … FROM per status table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from campflow.errors import ImportRejected, Problem
from campflow.render.sheet_files import open_sheet
from campflow.render.sheets import EXTRA, Sheet, fold_header
from campflow.store.answers import (
    CALLBACK_HINT,
    DATE_HINT,
    FALSE_WORDS,
    TRUE_WORDS,
    _lock_step,
    _prepare_parsers,
    apply_statuses,
    find_action_step,
    target_statuses,
)
from campflow.store.operations import find_operation
from campflow.store.staging import Rejections, copy_rows, create_stage, drop_rejected, progress, reject_where
from models import Operation, Question, Questionnaire, Step

SHEET_COLUMNS = {"party": ["TIERS", "PARTY"], "contact": ["CONTACT"], "status": ["STATUT", "STATUS"],
                 "callback": ["RAPPEL", "CALLBACK_AT"]}


@dataclass(frozen=True)
class AnswersResult:
    rows: int
    answers_written: int
    statuses_changed: int
    callbacks: int
    rejected: int


# -- answers import -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Asked:
    """A question whose column is in the sheet; `key` is its column in the staging table."""

    key: str
    question_id: int


def import_answers(session: Session, operation_code: str, step_code: str, path: Path, *,
                   skip_bad_rows: bool = False, show_progress: bool = True,
                   report: Path | None = None) -> AnswersResult:
    """Answers, statuses and callbacks of a call sheet into one step; all or nothing."""
    op = find_operation(session, operation_code)
    step = find_action_step(session, op, step_code)
    rejections = Rejections(path)
    total, asked = _stage_sheet(session, path, step, rejections, show_progress)
    _lock_step(session, step.id)
    _prepare_parsers(session)
    _check_rows(session, rejections, op, step)
    _stage_cells(session, asked)
    _check_cells(session, rejections)
    if report is not None:
        rejections.write_report(report)
    if not skip_bad_rows:
        rejections.raise_if_any(total)
    for table in ("answer_checked", "answer_cell"):
        drop_rejected(session, table, rejections)
    written = _write_answers(session, op.id, step.id)
    changed, callbacks = apply_statuses(session, step.id, """
        select party_id, contact_id, status_code as status, callback_at from answer_checked
        where status_code is not null or callback_at is not null""", {})
    return AnswersResult(total, written, changed, callbacks, len(rejections))


def _sheet_columns(session: Session, step: Step) -> tuple[dict[str, list[str]], dict[str, Question]]:
    """Header names of a call sheet for this step: fixed columns, the step's questions by code or
    QUESTIONNAIRE.CODE, and other questionnaires' qualified names (keys `other:…`) to refuse."""
    aliases = {key: list(names) for key, names in SHEET_COLUMNS.items()}
    reserved = {fold_header(name) for names in SHEET_COLUMNS.values() for name in names}
    questions: dict[str, Question] = {}
    rows = session.execute(select(Questionnaire.id, Questionnaire.code, Question)
                           .join(Question, Question.questionnaire_id == Questionnaire.id)
                           .order_by(Questionnaire.code, Question.position))
    for questionnaire_id, questionnaire, question in rows:
        qualified = f"{questionnaire}.{question.code}"
        if questionnaire_id != step.questionnaire_id:
            aliases[f"other:{qualified}"] = [qualified]
            continue
        key = f"q{len(questions)}"
        # a question named like a fixed column (STATUT…) answers to its qualified name only
        aliases[key] = [qualified] if fold_header(question.code) in reserved else [question.code, qualified]
        questions[key] = question
    return aliases, questions


def _stage_sheet(session: Session, path: Path, step: Step, rejections: Rejections,
                 show_progress: bool) -> tuple[int, list[_Asked]]:
    """Stream the sheet into `answer_stage`; returns (rows, the questions it answers)."""
    aliases, questions = _sheet_columns(session, step)
    with open_sheet(path, aliases=aliases, required=["party"], keep_other=False) as sheet:
        _refuse_columns(sheet, step, questions)
        keys = {c.key for c in sheet.columns}
        asked = [_Asked(key, q.id) for key, q in questions.items() if key in keys]
        staged = ["party", "contact", "status", "callback", *(a.key for a in asked)]
        create_stage(session, "answer_stage", [(c, "text") for c in staged])

        def rows() -> Iterator[list[Any]]:
            for row_no, row in sheet.rows():
                if row.get(EXTRA):
                    rejections.add(row_no, f"cells outside the columns: {row[EXTRA]}")
                elif not row.get("party"):
                    rejections.add(row_no, "TIERS (party code) is empty")
                else:
                    yield [row_no, *(row.get(c) for c in staged)]

        with progress(f"reading {path.name}", enabled=show_progress) as advance:
            total = copy_rows(session, "answer_stage", staged, rows(), advance)
    return total + len(rejections), asked


def _refuse_columns(sheet: Sheet, step: Step, questions: dict[str, Question]) -> None:
    """Another questionnaire's columns mean another step's sheet; no column means nothing to do."""
    own = {q.questionnaire_id for q in questions.values()}
    problems = [
        Problem(f"{sheet.path.name} column {c.letter}",
                f"{c.header} is a question of {c.key.split(':')[1].split('.')[0]}, which step {step.code} "
                f"does not ask{'' if own else ' (it has no questionnaire)'}; import this sheet into "
                "the step that asks it, or remove the column")
        for c in sheet.columns if c.key.startswith("other:")]
    if not {"status", "callback", *questions} & {c.key for c in sheet.columns}:
        names = ["STATUT", "RAPPEL", *(q.code for q in questions.values())]
        problems.append(Problem(sheet.path.name, f"nothing to import: the header row (row {sheet.header_row}) "
                                f"has none of {', '.join(names)}; add the columns to import"))
    if problems:
        raise ImportRejected(problems, "nothing was imported")


def _check_rows(session: Session, rejections: Rejections, op: Operation, step: Step) -> None:
    """Resolve parties, contacts, statuses and callbacks into `answer_checked`; reject bad rows."""
    statuses = target_statuses(session)
    session.execute(text("""
        create temporary table answer_checked on commit drop as
        select s.*, p.id as party_id, st.party_id is not null as in_step, c.id as contact_id,
               k.code as status_code, pg_temp.campflow_timestamptz(s.callback, :zone) as callback_at,
               case when s.contact is null then st.status else coalesce(stc.status, 'to_process') end
                   as current_status
        from answer_stage s
        left join party p on p.code = s.party
        left join step_target st on st.step_id = :step and st.party_id = p.id
        left join contact c on c.party_id = p.id and c.code = s.contact
        left join step_target_contact stc on stc.step_id = :step and stc.contact_id = c.id
        left join lateral (select code from unnest(cast(:statuses as text[])) code
                           where lower(code) = lower(s.status) order by code = s.status desc limit 1) k
               on true"""), {"zone": op.timezone, "step": step.id, "statuses": statuses})
    session.execute(text("analyze answer_checked"))
    reject_where(session, rejections, f"""
        select row_no, reason from (select row_no, case
            when party_id is null then 'unknown party ' || party || '; import it with campflow parties import'
            when not in_step then party || ' is not in step ' || :step_code || ' of ' || :op_code
                || '; it enters the step when the previous step routes it'
            when contact is not null and contact_id is null then 'party ' || party || ' has no contact ' || contact
            when status is not null and status_code is null then 'unknown status ' || quote_literal(status)
                || '; use one of ' || :statuses
            when callback is not null and callback_at is null then 'RAPPEL ' || quote_literal(callback)
                || ' is not a date and time; {CALLBACK_HINT} (read in ' || :zone || ')'
            when callback_at is not null and coalesce(status_code, current_status) <> 'to_process'
                then 'RAPPEL goes with status to_process (a call to make again), but '
                || coalesce(contact, party) || ' is ' || coalesce(status_code, current_status)
                || '; set STATUT to to_process or clear RAPPEL'
            end as reason from answer_checked) r
        where reason is not null""", step_code=step.code, op_code=op.code, statuses=", ".join(statuses),
                 zone=op.timezone)
    reject_where(session, rejections, """
        select row_no, case when contact is null then 'party ' || party else 'contact ' || party || '/' || contact
                       end || ' appears again (first at row ' || first || ')'
        from (select row_no, party, contact, min(row_no) over (partition by party, contact) as first
              from answer_checked) s where row_no <> first""")


def _stage_cells(session: Session, asked: list[_Asked]) -> None:
    """One row per non-empty answer cell with its value as stored, NULL when it does not fit."""
    # the table exists even without question columns, so the steps after it stay the same
    cells = ", ".join(f"(cast(:id{i} as int), s.{a.key})" for i, a in enumerate(asked)) or \
        "(cast(null as int), cast(null as text))"
    source = f"answer_checked s cross join lateral (values {cells}) v(question_id, raw)"
    session.execute(text(rf"""
        create temporary table answer_cell on commit drop as
        select s.row_no, s.party_id, s.contact_id, q.id as question_id, q.position, q.code, q.type,
               q.choices, v.raw, case q.type
            when 'choice' then (select c from unnest(q.choices) c where lower(c) = lower(v.raw) limit 1)
            when 'number' then case when regexp_replace(v.raw, '[\s\u00a0\u202f]', '', 'g')
                                         ~ '^[+-]?(\d+([.,]\d*)?|[.,]\d+)$'
                               then replace(regexp_replace(v.raw, '[\s\u00a0\u202f]', '', 'g'), ',', '.') end
            when 'bool' then case when lower(v.raw) = any(cast(:yes as text[])) then 'true'
                                  when lower(v.raw) = any(cast(:no as text[])) then 'false' end
            when 'date' then to_char(pg_temp.campflow_date(v.raw), 'YYYY-MM-DD')
            when 'multi_choice' then null
            else v.raw end as value,
            case when q.type = 'multi_choice' then array(
                select (select c from unnest(q.choices) c where lower(c) = lower(trim(part)) limit 1)
                from regexp_split_to_table(v.raw, '[;,]') with ordinality as p(part, n)
                where trim(part) <> '' order by n) end as picked
        from {source} join question q on q.id = v.question_id
        where v.raw is not null"""),
        {**{f"id{i}": a.question_id for i, a in enumerate(asked)}, "yes": list(TRUE_WORDS),
         "no": list(FALSE_WORDS)})


def _check_cells(session: Session, rejections: Rejections) -> None:
    """Reject rows with answers that do not fit their question, naming every bad cell."""
    reject_where(session, rejections, rf"""
        select row_no, string_agg(code || ': ' || quote_literal(raw) || case type
            when 'choice' then ' is not one of ' || array_to_string(choices, ', ')
            when 'multi_choice' then coalesce(' has ' || (
                select string_agg(quote_literal(trim(part)), ', ')
                from regexp_split_to_table(raw, '[;,]') part
                where trim(part) <> '' and not exists (
                    select from unnest(choices) c where lower(c) = lower(trim(part)))), ' has no choice')
                || ' not among ' || array_to_string(choices, ', ') || ' (separate choices with ; or ,)'
            when 'number' then ' is not a number'
            when 'bool' then ' is not a yes or no; write oui/non, yes/no, true/false or 1/0'
            when 'date' then ' is not a date; {DATE_HINT}'
            end, '; ' order by position)
        from answer_cell
        where case when type = 'multi_choice' then cardinality(picked) = 0 or array_position(picked, null) is not null
                   else value is null end
        group by row_no""")


def _write_answers(session: Session, operation_id: int, step_id: int) -> int:
    """Upsert the answer cells; returns how many answers are new or changed."""
    return session.execute(text("""
        with written as (
            insert into answer (operation_id, step_id, party_id, contact_id, question_id, value, choices,
                                answered_at)
            select :op, :step, party_id, contact_id, question_id, value, picked, now() from answer_cell
            on conflict (operation_id, party_id, contact_id, question_id) do update set
                value = excluded.value, choices = excluded.choices, step_id = excluded.step_id,
                answered_at = excluded.answered_at
            -- the same sheet imported twice changes nothing, not even answered_at
            where (answer.value, answer.choices, answer.step_id)
                  is distinct from (excluded.value, excluded.choices, excluded.step_id)
            returning 1)
        select count(*) from written"""), {"op": operation_id, "step": step_id}).scalar_one()
