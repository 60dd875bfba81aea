"""Phoning: who to call next and their card (SPEC sections 4 and 6); recording one call is
`campflow.store.phoning_calls`.

A *call* is a party in a `phoning` step; in a `phoning_contact` step it is a contact — the
step's contact rows when it has some for the party (the targeted contacts), else every
contact of the party; a party without contacts is called as itself. The call sheet
(`tasks.kinds.phoning`) and the terminal session (`campflow phoning`) list the same calls.

Two operators never get the same call: the session holds a PostgreSQL advisory lock on the
call from the moment it is offered until it is saved or skipped (`CallClaims`), on a
connection of its own outside any transaction. `SELECT … FOR UPDATE SKIP LOCKED` would need
a transaction open while the operator talks, making `run-operation` (which locks the step's
`to_process` rows) and `answers import` wait for the call to end; a claim column would need
clearing when a terminal dies. The lock blocks nothing but the other sessions' offers and
disappears with its connection. Saving re-checks under the step's status lock that the call
is still to process, so a status set meanwhile by an import is never overwritten.

Statuses, callbacks and attempts go through `campflow.store.answers.apply_statuses`, as for a call
sheet import; answers are stored as the import stores them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.orm import Session

from campflow.errors import CampflowError
from campflow.store.answers import (
    CALLBACK_HINT,
    FALSE_WORDS,
    TRUE_WORDS,
    find_action_step,
    parse_callback,
    target_statuses,
)
from campflow.store.operations import find_operation
from models import Operation, Question, Questionnaire, Step

PHONING_KINDS = ("phoning", "phoning_contact")
CALLBACK = "callback"  # outcome: to_process with a callback date, one more attempt
NO_ANSWER = "no_answer"  # outcome: to_process, one more attempt
DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y", "%d.%m.%Y", "%d/%m/%y")
_NUMBER = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)$")  # as `answers import` accepts them
_SPACES = re.compile(r"[\s\u00a0\u202f]")
_CONTACT_BIT = 1 << 62  # advisory keys of contacts, apart from those of parties
_OFFER_BATCH = 50

# The step's calls still to process: (party_id, contact_id or NULL, attempts, callback_at).
CALLS_SQL = """
    select st.party_id, cast(null as int) as contact_id, st.attempts, st.callback_at
    from step_target st
    where st.step_id = :step and st.status = 'to_process'
      and (not :by_contact or not exists (select from contact c where c.party_id = st.party_id))
    union all
    select stc.party_id, stc.contact_id, stc.attempts, stc.callback_at
    from step_target st
    join step_target_contact stc on stc.step_id = st.step_id and stc.party_id = st.party_id
    where :by_contact and st.step_id = :step and st.status = 'to_process' and stc.status = 'to_process'
    union all
    select c.party_id, c.id, 0, cast(null as timestamptz)
    from step_target st join contact c on c.party_id = st.party_id
    where :by_contact and st.step_id = :step and st.status = 'to_process'
      and not exists (select from step_target_contact x where x.step_id = :step and x.party_id = st.party_id)"""


class BadAnswer(CampflowError):
    """An answer or a date that does not fit; the session asks again."""


class CallTaken(CampflowError):
    """The call was settled by someone else (an import, `status set`) while on screen."""


# -- the step and its questions -----------------------------------------------------------


@dataclass(frozen=True)
class CallQuestion:
    id: int
    code: str
    label: str
    type: str  # text | choice | multi_choice | number | date | bool
    choices: tuple[str, ...]
    required: bool


@dataclass(frozen=True)
class PhoningStep:
    """A phoning step as the call sheet and the session need it; plain data."""

    operation_id: int
    operation_code: str
    timezone: str
    step_id: int
    step_code: str
    label: str
    kind: str
    questionnaire: str | None
    questions: tuple[CallQuestion, ...]
    statuses: tuple[str, ...]  # the built-in target statuses, then the custom ones

    @property
    def by_contact(self) -> bool:
        return self.kind == "phoning_contact"

    @property
    def name(self) -> str:
        return f"{self.operation_code}/{self.step_code}"


def find_phoning_step(session: Session, operation_code: str, step_code: str) -> PhoningStep:
    """The phoning step of an operation; any other step is a clear error."""
    op = find_operation(session, operation_code)
    step = find_action_step(session, op, step_code)
    if step.kind not in PHONING_KINDS:
        phoning = session.scalars(text("select code from step where operation_id = :op and kind = any(:kinds) "
                                       "order by position"), {"op": op.id, "kinds": list(PHONING_KINDS)}).all()
        where = f"its phoning steps: {', '.join(phoning)}" if phoning else f"{op.code} has no phoning step"
        raise CampflowError(f"step {step_code} of {op.code} is a {step.kind} step, not a phoning step; "
                            f"{where}")
    return _phoning_step(session, op, step)


def phoning_step(session: Session, step_id: int) -> PhoningStep:
    """The phoning step with this id (for the step kind, which knows ids)."""
    step = session.get_one(Step, step_id)
    return _phoning_step(session, session.get_one(Operation, step.operation_id), step)


def _phoning_step(session: Session, op: Operation, step: Step) -> PhoningStep:
    questionnaire, questions = None, ()
    if step.questionnaire_id is not None:
        questionnaire = session.scalar(select(Questionnaire.code)
                                       .where(Questionnaire.id == step.questionnaire_id))
        questions = tuple(
            CallQuestion(q.id, q.code, q.label, q.type, tuple(q.choices or ()), q.required)
            for q in session.scalars(select(Question).where(Question.questionnaire_id == step.questionnaire_id)
                                     .order_by(Question.position)))
    return PhoningStep(op.id, op.code, op.timezone, step.id, step.code, step.label, step.kind or "",
                       questionnaire, questions, tuple(target_statuses(session)))


# -- answers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answered:
    """An answer as stored: `value` (text, choice, number, date, bool) or `choices` (multi_choice)."""

    value: str | None = None
    choices: tuple[str, ...] | None = None

    def shown(self, question: CallQuestion) -> str:
        """The answer as an operator reads it (and as `answers import` reads it back)."""
        if self.choices is not None:
            return "; ".join(self.choices)
        if question.type == "bool" and self.value in ("true", "false"):
            return "oui" if self.value == "true" else "non"
        return self.value or ""


def parse_answer(question: CallQuestion, typed: str) -> Answered:
    """What the operator typed, checked and normalised as `answers import` stores it.

    Raises:
        BadAnswer: the text does not fit the question; the message says what does.
    """
    typed = typed.strip()
    kind = question.type
    if kind == "choice":
        return Answered(_choice(question, typed))
    if kind == "multi_choice":
        parts = [p for p in re.split(r"[;,]", typed) if p.strip()]
        if len(parts) == 1 and all(w.isdigit() for w in typed.split()):
            parts = typed.split()  # "1 3": numbers of the menu
        return Answered(choices=tuple(dict.fromkeys(_choice(question, p.strip()) for p in parts)))
    if kind == "number":
        compact = _SPACES.sub("", typed)
        if not _NUMBER.match(compact):
            raise BadAnswer(f"{typed!r} is not a number; write 12 or 12,5")
        return Answered(compact.replace(",", "."))
    if kind == "bool":
        word = typed.lower()
        if word in (*TRUE_WORDS, "y", "o"):
            return Answered("true")
        if word in (*FALSE_WORDS, "n"):
            return Answered("false")
        raise BadAnswer(f"{typed!r} is not a yes or no; write oui/non or yes/no")
    if kind == "date":
        for form in DATE_FORMATS:
            try:
                return Answered(dt.datetime.strptime(typed, form).date().isoformat())
            except ValueError:
                continue
        raise BadAnswer(f"{typed!r} is not a date; write 2026-03-12 or 12/03/2026")
    return Answered(typed)


def _choice(question: CallQuestion, typed: str) -> str:
    """A choice by its text (any case) or its number in the menu."""
    for choice in question.choices:
        if choice.lower() == typed.lower():
            return choice
    if typed.isdigit() and 1 <= int(typed) <= len(question.choices):
        return question.choices[int(typed) - 1]
    menu = ", ".join(f"{n} {c}" for n, c in enumerate(question.choices, start=1))
    raise BadAnswer(f"{typed!r} is not a choice; answer one of {menu}")


def parse_callback_at(session: Session, step: PhoningStep, typed: str,
                      now: dt.datetime | None = None) -> dt.datetime:
    """A callback date and time in the future, read in the operation's time zone."""
    try:
        when = parse_callback(session, typed.strip(), step.timezone)
    except CampflowError:
        raise BadAnswer(f"{typed.strip()!r} is not a date and time; {CALLBACK_HINT} "
                        f"(read in {step.timezone})") from None
    if when <= (now or dt.datetime.now(dt.timezone.utc)):
        raise BadAnswer(f"{typed.strip()!r} is past; a callback is a date and time to come")
    return when


# -- the card -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ContactLine:
    id: int
    code: str
    title: str | None
    first_name: str | None
    last_name: str | None
    function: str | None
    phone: str | None
    email: str | None

    @property
    def name(self) -> str:
        return " ".join(filter(None, (self.title, self.first_name, self.last_name)))


@dataclass(frozen=True)
class Card:
    """One call to make: the party, the contact to ask for (phoning_contact), what is known."""

    party_id: int
    party_code: str
    kind: str
    name: str
    phone: str | None
    fax: str | None
    email: str | None
    address: str | None
    postal_code: str | None
    city: str | None
    contacts: tuple[ContactLine, ...]
    contact: ContactLine | None  # the contact called, in a phoning_contact step
    attempts: int
    callback_at: dt.datetime | None
    answers: Mapping[int, Answered] = field(default_factory=dict)  # question id → previous answer

    @property
    def call(self) -> tuple[int, int | None]:
        return self.party_id, self.contact.id if self.contact else None

    @property
    def who(self) -> str:
        return f"{self.party_code}/{self.contact.code}" if self.contact else self.party_code


def load_card(session: Session, step: PhoningStep, party_id: int, contact_id: int | None, *,
              due_only: bool = True) -> Card | None:
    """The card of a call still to make (due now when `due_only`); None when it is not."""
    found = session.execute(text(f"""
        select u.attempts, u.callback_at from ({CALLS_SQL}) u
        where u.party_id = :party and u.contact_id is not distinct from cast(:contact as int)
          and (not :due_only or u.callback_at is null or u.callback_at <= now())"""),
        _params(step, party=party_id, contact=contact_id, due_only=due_only)).one_or_none()
    if found is None:
        return None
    party = session.execute(text("select code, kind, name, phone, fax, email, address, postal_code, city "
                                 "from party where id = :id"), {"id": party_id}).one()
    contacts = tuple(ContactLine(*row) for row in session.execute(text("""
        select c.id, c.code, c.title, c.first_name, c.last_name, c.function, c.phone, c.email
        from contact c
        left join operation_target_contact otc on otc.operation_id = :op and otc.contact_id = c.id
        where c.party_id = :party order by otc.contact_id is null, c.code"""),
        {"op": step.operation_id, "party": party_id}))
    contact = next((c for c in contacts if c.id == contact_id), None)
    answers = {row.question_id: Answered(row.value, tuple(row.choices) if row.choices is not None else None)
               for row in session.execute(text("""
                   select question_id, value, choices from answer
                   where operation_id = :op and party_id = :party
                     and contact_id is not distinct from cast(:contact as int)"""),
                   {"op": step.operation_id, "party": party_id, "contact": contact_id})}
    return Card(party_id, *party, contacts=contacts, contact=contact, attempts=found.attempts,
                callback_at=found.callback_at, answers=answers)


@dataclass(frozen=True)
class CallCounts:
    due: int  # to call now: never called, no answer, or a callback that is due
    callbacks_due: int
    later: int  # callbacks to come
    next_callback: dt.datetime | None


def count_calls(session: Session, step: PhoningStep) -> CallCounts:
    row = session.execute(text(f"""
        select count(*) filter (where callback_at is null or callback_at <= now()),
               count(*) filter (where callback_at <= now()),
               count(*) filter (where callback_at > now()),
               min(callback_at) filter (where callback_at > now())
        from ({CALLS_SQL}) u"""), _params(step)).one()
    return CallCounts(*row)


# -- who is next --------------------------------------------------------------------------


class CallClaims:
    """The calls this operator has on screen, as session-level advisory locks.

    Keys use PostgreSQL's one-bigint form, a key space apart from the (namespace, id) pairs
    of the other advisory locks: step id × 2³¹ + party id, bit 62 set for a contact id.
    """

    def __init__(self, engine: Engine) -> None:
        self.connection: Connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    @staticmethod
    def key(step_id: int, party_id: int, contact_id: int | None) -> int:
        return (_CONTACT_BIT if contact_id is not None else 0) | step_id << 31 | (contact_id or party_id)

    def claim(self, step_id: int, party_id: int, contact_id: int | None) -> bool:
        return bool(self.connection.scalar(text("select pg_try_advisory_lock(:key)"),
                                           {"key": self.key(step_id, party_id, contact_id)}))

    def release(self, step_id: int, party_id: int, contact_id: int | None) -> None:
        self.connection.execute(text("select pg_advisory_unlock(:key)"),
                                {"key": self.key(step_id, party_id, contact_id)})

    def close(self) -> None:
        """Release every claim; the pool keeps the connection, so its locks must go first."""
        try:
            self.connection.execute(text("select pg_advisory_unlock_all()"))
        finally:
            self.connection.close()

    def __enter__(self) -> CallClaims:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def next_call(session: Session, step: PhoningStep, claims: CallClaims,
              passed: Iterable[tuple[int, int | None]] = ()) -> Card | None:
    """Claim the next due call and return its card; None when none is left.

    Due callbacks come first (the oldest first), then the calls never made (by party code),
    then those that went unanswered (fewest attempts first). Calls with a callback to come,
    calls another operator has on screen and the `passed` ones (skipped or unanswered in this
    session) are not offered.
    """
    passed = list(passed)
    offset = 0
    while True:
        batch = session.execute(text(f"""
            select u.party_id, u.contact_id from ({CALLS_SQL}) u
            join party p on p.id = u.party_id left join contact c on c.id = u.contact_id
            where (u.callback_at is null or u.callback_at <= now())
              and not exists (select from unnest(cast(:passed_parties as int[]), cast(:passed_contacts as int[]))
                              s(party_id, contact_id)
                              where s.party_id = u.party_id and s.contact_id is not distinct from u.contact_id)
            order by u.callback_at is null, u.callback_at, u.attempts, p.code, c.code
            limit :limit offset :offset"""),
            _params(step, passed_parties=[p for p, _ in passed], passed_contacts=[c for _, c in passed],
                    limit=_OFFER_BATCH, offset=offset)).all()
        for party_id, contact_id in batch:
            if not claims.claim(step.step_id, party_id, contact_id):
                continue  # on another operator's screen
            # read after the claim: a call saved by the operator who just released it is seen
            card = load_card(session, step, party_id, contact_id)
            if card is not None:
                return card
            claims.release(step.step_id, party_id, contact_id)
        if len(batch) < _OFFER_BATCH:
            return None
        offset += _OFFER_BATCH


def _params(step: PhoningStep, **more: Any) -> dict[str, Any]:
    return {"step": step.step_id, "by_contact": step.by_contact, **more}
