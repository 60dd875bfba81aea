"""Statuses and answers set by people: `status set` and call-sheet imports (SPEC section 6).

A call sheet is staged with COPY (all text), checked with set-based queries that reject rows
by number, then written with one upsert of answers and one UPDATE … FROM per status table.
Dates are parsed by PostgreSQL itself (day first, as French users write them), naive ones in
the operation's timezone.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from campflow.errors import CampflowError, ImportRejected, NotFound, Problem
from campflow.render.sheet_files import open_sheet
from campflow.render.sheets import EXTRA, Sheet, fold_header
from campflow.store.operations import find_operation
from campflow.store.staging import Rejections, copy_rows, create_stage, drop_rejected, progress, reject_where
from models import Operation, Question, Questionnaire, State, Step
from models.base import BUILTIN_TARGET_STATUSES

SHEET_COLUMNS = {"party": ["TIERS", "PARTY"], "contact": ["CONTACT"], "status": ["STATUT", "STATUS"],
                 "callback": ["RAPPEL", "CALLBACK_AT"]}
TRUE_WORDS = ("oui", "yes", "true", "vrai", "1")
FALSE_WORDS = ("non", "no", "false", "faux", "0")
LOCK_STATUSES = 3  # advisory lock namespace: statuses of one step (1: targeting, 2: runs)
DATE_HINT = "write 2026-03-12 or 12/03/2026"
CALLBACK_HINT = "write 2026-03-12 14:30 or 12/03/2026 14:30"

# Casts that answer NULL instead of failing, so bad cells become rejected rows, not an error.
# PostgreSQL 15 has no pg_input_is_valid(); a leading digit keeps out words like 'today'.
_PARSERS = (r"""
create or replace function pg_temp.campflow_date(value text) returns date
language plpgsql stable as $$
begin
    if value !~ '^\s*\d' then return null; end if;
    return cast(value as date);
exception when data_exception then
    return null;
end $$""", r"""
create or replace function pg_temp.campflow_timestamptz(value text, tz text) returns timestamptz
language plpgsql stable as $$
begin
    if value !~ '^\s*\d' then return null; end if;
    if value ~* '\d:\d\d(:\d\d(\.\d+)?)?\s*(z|[+-]\d\d(:?\d\d)?)$' then
        return cast(value as timestamptz);  -- the offset written wins
    end if;
    return cast(value as timestamp) at time zone tz;
exception when data_exception then
    return null;
end $$""")


@dataclass(frozen=True)
class StatusResult:
    party: str
    contact: str | None
    step: str
    previous: str
    status: str
    attempts: int
    callback_at: dt.datetime | None
    timezone: str  # the operation's, to show the callback as its users read it


@dataclass(frozen=True)
class AnswersResult:
    rows: int
    answers_written: int
    statuses_changed: int
    callbacks: int
    rejected: int


# -- lookups ------------------------------------------------------------------------------


def target_statuses(session: Session) -> list[str]:
    """The built-in statuses of parties in steps, then the custom `State` rows for targets."""
    custom = session.scalars(select(State.code).where(State.applies_to == "target")
                             .order_by(State.position, State.code))
    return [*BUILTIN_TARGET_STATUSES, *(c for c in custom if c not in BUILTIN_TARGET_STATUSES)]


def status_code(session: Session, word: str) -> str:
    """The status as defined (matched case-insensitively), or NotFound listing them all."""
    statuses = target_statuses(session)
    match = next((s for s in statuses if s == word), None) or next(
        (s for s in statuses if s.lower() == word.strip().lower()), None)
    if match is None:
        raise NotFound(f"unknown status {word!r}; use one of {', '.join(statuses)}")
    return match


def find_action_step(session: Session, op: Operation, code: str) -> Step:
    """The operation's action step with this code; a group or an unknown code is an error."""
    steps = list(session.scalars(select(Step).where(Step.operation_id == op.id).order_by(Step.position)))
    step = next((s for s in steps if s.code == code), None)
    if step is None:
        raise NotFound(f"operation {op.code} has no step {code}"
                       f"{_did_you_mean(code, [s.code for s in steps if s.kind])}")
    if step.kind is None:
        inner = ", ".join(s.code for s in steps if s.parent_id == step.id)
        raise CampflowError(f"{code} is a group of steps in {op.code}; statuses belong to its "
                            f"action steps ({inner})")
    return step


def _did_you_mean(word: str, names: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, sorted(set(names)), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(match)}?" if match else ""


def _party_in_step(session: Session, op: Operation, step: Step, code: str) -> int:
    """The id of a party of the step, or an error saying why it is not there."""
    found = session.execute(text(
        "select p.id, exists (select from step_target st where st.step_id = :step and st.party_id = p.id) "
        "from party p where p.code = :code"), {"step": step.id, "code": code}).one_or_none()
    if found is None:
        # the step's own parties are the likely intended ones; a few thousand stay cheap to compare
        near = session.scalars(text("select p.code from step_target st join party p on p.id = st.party_id "
                                    "where st.step_id = :step order by p.code limit 5000"), {"step": step.id})
        raise NotFound(f"no party {code}{_did_you_mean(code, list(near))}")
    if not found[1]:
        raise CampflowError(f"{code} is not in step {step.code} of {op.code}; it enters the step when "
                            "the previous step routes it")
    return found[0]


def _contact_id(session: Session, party_id: int, party: str, code: str) -> int:
    contacts = dict(session.execute(text("select code, id from contact where party_id = :party"),
                                    {"party": party_id}).all())
    if code not in contacts:
        raise NotFound(f"party {party} has no contact {code}{_did_you_mean(code, list(contacts))}")
    return contacts[code]


def _prepare_parsers(session: Session) -> None:
    """Day-first dates and the NULL-on-error casts, for this transaction."""
    session.execute(text("set local datestyle = 'ISO, DMY'"))
    for function in _PARSERS:
        session.execute(text(function))


def parse_callback(session: Session, value: str, zone: str) -> dt.datetime:
    """A callback date and time; without an offset it is read in `zone`."""
    _prepare_parsers(session)
    parsed = session.execute(text("select pg_temp.campflow_timestamptz(:v, :zone)"),
                             {"v": value, "zone": zone}).scalar()
    if parsed is None:
        raise CampflowError(f"--callback-at {value!r} is not a date and time; {CALLBACK_HINT} "
                            f"(read in {zone}), or add an offset such as +01:00")
    return parsed


def _lock_step(session: Session, step_id: int) -> None:
    # counts of changed statuses are read before the update: one writer per step keeps them exact
    session.execute(text("select pg_advisory_xact_lock(:ns, :step)"), {"ns": LOCK_STATUSES, "step": step_id})


# -- status set ---------------------------------------------------------------------------


def set_status(session: Session, operation_code: str, step_code: str, party_code: str, status: str, *,
               contact_code: str | None = None, callback_at: str | None = None,
               reason: str | None = None) -> StatusResult:
    """Set one party's (or one contact's) status in an action step.

    `to_process` with a callback keeps it to process and counts one more attempt; any other
    status marks it processed now.
    """
    op = find_operation(session, operation_code)
    step = find_action_step(session, op, step_code)
    party_id = _party_in_step(session, op, step, party_code)
    contact_id = _contact_id(session, party_id, party_code, contact_code) if contact_code else None
    code = status_code(session, status)
    callback = parse_callback(session, callback_at, op.timezone) if callback_at else None
    if callback is not None and code != "to_process":
        raise CampflowError(f"--callback-at goes with to_process (a call to make again); {code} ends "
                            f"the step for {party_code}: drop --callback-at or set to_process")
    _lock_step(session, step.id)
    table, key, key_id = (("step_target_contact", "contact_id", contact_id) if contact_id
                          else ("step_target", "party_id", party_id))
    previous = session.scalar(text(f"select status from {table} where step_id = :step and {key} = :id"),
                              {"step": step.id, "id": key_id}) or "to_process"
    changes = ("select cast(:party as int) as party_id, cast(:contact as int) as contact_id, "
               "cast(:status as text) as status, cast(:callback as timestamptz) as callback_at")
    apply_statuses(session, step.id, changes, {"party": party_id, "contact": contact_id, "status": code,
                                               "callback": callback}, reason=reason)
    now_status, attempts, now_callback = session.execute(text(
        f"select status, attempts, callback_at from {table} where step_id = :step and {key} = :id"),
        {"step": step.id, "id": key_id}).one()
    return StatusResult(party_code, contact_code, step.code, previous, now_status, attempts, now_callback,
                        op.timezone)


_UPDATE_STATUSES = """
    with old as (
        select c.status, c.callback_at, t.{key} as target, t.status as old_status,
               t.callback_at as old_callback
        from ({changes}) c join {table} t on t.step_id = :step and t.{key} = c.{key}
        where c.contact_id is {contact_rows}),
    marked as (
        select *, coalesce(status <> old_status, false) as new_status,
               -- the same callback again (a sheet imported twice) is not one more attempt
               coalesce(callback_at is distinct from old_callback and callback_at is not null, false)
                   as new_callback
        from old),
    updated as (
        update {table} t set
            status = coalesce(m.status, t.status),
            processed_at = case when coalesce(m.status, t.status) = 'to_process' then null
                                when m.new_status then now() else t.processed_at end,
            callback_at = coalesce(m.callback_at, t.callback_at),
            attempts = t.attempts + case when m.new_callback then 1 else 0 end,
            reason = case when cast(:reason as text) is not null then cast(:reason as text)
                          when m.new_status then null else t.reason end
        from marked m
        where t.step_id = :step and t.{key} = m.target
          and (m.new_status or m.new_callback or cast(:reason as text) is not null)
        returning 1)
    select count(*) filter (where new_status), count(*) filter (where new_callback) from marked"""


def apply_statuses(session: Session, step_id: int, changes: str, params: dict[str, Any], *,
                   reason: str | None = None) -> tuple[int, int]:
    """Apply rows (party_id, contact_id, status, callback_at) of the `changes` query to a step.

    NULL status or callback leaves that value alone; contact rows get their step row first.
    Returns (statuses changed, new callbacks).
    """
    params = {**params, "step": step_id, "reason": reason}
    session.execute(text(f"""
        insert into step_target_contact (step_id, contact_id, party_id)
        select :step, c.contact_id, c.party_id from ({changes}) c where c.contact_id is not null
        on conflict do nothing"""), params)
    changed = callbacks = 0
    for table, key, contact_rows in (("step_target", "party_id", "null"),
                                     ("step_target_contact", "contact_id", "not null")):
        statuses, new_callbacks = session.execute(text(_UPDATE_STATUSES.format(
            table=table, key=key, changes=changes, contact_rows=contact_rows)), params).one()
        changed, callbacks = changed + statuses, callbacks + new_callbacks
    return changed, callbacks


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
