"""Recording one phoning call: its outcome, the answers typed, a callback, the contact rows of a step."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from campflow.errors import CampflowError
from campflow.store import routing
from campflow.store.answers import LOCK_STATUSES, apply_statuses
from campflow.store.phoning import CALLBACK, NO_ANSWER, Answered, CallQuestion, CallTaken, Card, PhoningStep, load_card
from models import Answer

# -- recording a call ---------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """What the operator reports: the answers given and how the call ended.

    `outcome` is a status (ok_continue, not_processed_continue, failed, excluded, a custom
    state), CALLBACK (with `callback_at`) or NO_ANSWER.
    """

    answers: Mapping[int, Answered]
    outcome: str
    callback_at: dt.datetime | None = None
    operator: str | None = None


@dataclass(frozen=True)
class Recorded:
    who: str
    status: str
    attempts: int
    callback_at: dt.datetime | None
    answers_written: int


def missing_answers(step: PhoningStep, card: Card, answers: Mapping[int, Answered]) -> list[CallQuestion]:
    """The required questions without an answer, neither given now nor before."""
    return [q for q in step.questions if q.required and q.id not in answers and q.id not in card.answers]


def record_call(session: Session, step: PhoningStep, card: Card, call: Call) -> Recorded:
    """Save one call — answers, status, callback, attempts — in the caller's transaction.

    Raises:
        CallTaken: the call is no longer to process (settled by an import meanwhile).
        CampflowError: a bad outcome, or ok_continue without the required answers.
    """
    final = call.outcome not in (CALLBACK, NO_ANSWER)
    if final and call.outcome not in step.statuses:
        raise CampflowError(f"unknown outcome {call.outcome!r}; use one of {CALLBACK}, {NO_ANSWER}, "
                            f"{', '.join(s for s in step.statuses if s != 'to_process')}")
    if call.outcome == "to_process":
        raise CampflowError(f"to_process is no outcome; use {CALLBACK} or {NO_ANSWER}")
    if (call.outcome == CALLBACK) != (call.callback_at is not None):
        raise CampflowError("a callback needs its date and time, and only a callback has one")
    missing = missing_answers(step, card, call.answers) if call.outcome == "ok_continue" else []
    if missing:
        raise CampflowError(f"ok_continue needs the required answers: {', '.join(q.code for q in missing)}")
    # one writer of the step's statuses at a time, as `status set` and `answers import`
    session.execute(text("select pg_advisory_xact_lock(:ns, :step)"), {"ns": LOCK_STATUSES, "step": step.step_id})
    party_id, contact_id = card.call
    if load_card(session, step, party_id, contact_id, due_only=False) is None:
        raise CallTaken(f"{card.who} was settled meanwhile (by an import or status set); nothing was saved "
                        "for this call")
    written = write_answers(session, step, card, call.answers)
    if step.by_contact and contact_id is not None:
        add_contact_rows(session, step.step_id, party_id)  # the party waits for each of its contacts
    reason = f"phoning: {call.outcome.replace('_', ' ')}" + (f" by {call.operator}" if call.operator else "")
    changes = ("select cast(:party as int) as party_id, cast(:contact as int) as contact_id, "
               "cast(:status as text) as status, cast(:callback as timestamptz) as callback_at")
    apply_statuses(session, step.step_id, changes, {
        "party": party_id, "contact": contact_id, "status": call.outcome if final else "to_process",
        "callback": call.callback_at}, reason=reason)
    table, key, key_id = _status_row(card)
    if call.outcome == NO_ANSWER:
        session.execute(text(f"update {table} set attempts = attempts + 1 where step_id = :step and {key} = :id"),
                        {"step": step.step_id, "id": key_id})
    routing.sync_contacts(session, step.step_id)
    status, attempts, callback_at = session.execute(text(
        f"select status, attempts, callback_at from {table} where step_id = :step and {key} = :id"),
        {"step": step.step_id, "id": key_id}).one()
    return Recorded(card.who, status, attempts, callback_at, written)


def _status_row(card: Card) -> tuple[str, str, int]:
    if card.contact is not None:
        return "step_target_contact", "contact_id", card.contact.id
    return "step_target", "party_id", card.party_id


def write_answers(session: Session, step: PhoningStep, card: Card, answers: Mapping[int, Answered]) -> int:
    """Upsert the answers of one call; returns how many are new or changed."""
    if not answers:
        return 0
    party_id, contact_id = card.call
    rows = [{"operation_id": step.operation_id, "step_id": step.step_id, "party_id": party_id,
             "contact_id": contact_id, "question_id": question_id, "value": answer.value,
             "choices": list(answer.choices) if answer.choices is not None else None}
            for question_id, answer in answers.items()]
    statement = insert(Answer).values(rows)
    new = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=[Answer.operation_id, Answer.party_id, Answer.contact_id, Answer.question_id],
        set_={"value": new.value, "choices": new.choices, "step_id": new.step_id, "answered_at": text("now()")},
        # the same answer again changes nothing, not even answered_at (as a sheet imported twice)
        where=text("(answer.value, answer.choices, answer.step_id) is distinct from "
                   "(excluded.value, excluded.choices, excluded.step_id)"),
    ).returning(Answer.id)
    return len(session.execute(statement).all())


def add_contact_rows(session: Session, step_id: int, party_id: int | None = None) -> int:
    """Give every contact of the step's waiting parties without contact rows its own `to_process` row.

    In a phoning_contact step a party then takes a final status only once each of its
    contacts has one (`routing.sync_contacts`), however its contacts are answered.
    """
    return session.execute(text("""
        insert into step_target_contact (step_id, contact_id, party_id)
        select st.step_id, c.id, c.party_id
        from step_target st join contact c on c.party_id = st.party_id
        where st.step_id = :step and st.status = 'to_process'
          and (cast(:party as int) is null or st.party_id = :party)
          and not exists (select from step_target_contact x where x.step_id = :step and x.party_id = st.party_id)
        order by c.id
        on conflict do nothing"""), {"step": step_id, "party": party_id}).rowcount  # type: ignore[attr-defined]


def shown_callback(step: PhoningStep, when: dt.datetime | None) -> str:
    """A callback as the operation's users read it."""
    if when is None:
        return ""
    return f"{when.astimezone(zoneinfo.ZoneInfo(step.timezone)):%Y-%m-%d %H:%M}"


def outcome_statuses(step: PhoningStep) -> Sequence[str]:
    """The final statuses beyond ok_continue and not_processed_continue: failed, excluded, custom ones."""
    return [s for s in step.statuses if s not in ("to_process", "ok_continue", "not_processed_continue")]
