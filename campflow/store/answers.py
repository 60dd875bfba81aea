"""Statuses set by people (SPEC section 6): `status set`, and the lookups and status updates
that call-sheet imports (`campflow.store.answer_imports`) and phoning share.

Dates are parsed by PostgreSQL itself (day first, as French users write them), naive ones in
the operation's timezone.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from campflow.errors import CampflowError, NotFound
from campflow.store.operations import find_operation
from models import Operation, State, Step
from models.base import BUILTIN_TARGET_STATUSES

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
