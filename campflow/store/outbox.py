"""The outbox protocol: a message is claimed before it is sent and settled right after.

The step's own transaction commits only when the step ends, so the outbox is written on
separate connections, in transactions of their own:

1. `register`: a batch's messages are inserted (or taken back from `pending` / `failed`, and
   from `sending` when unknown messages are to be sent again) as `pending`, or `failed` when
   they cannot be sent; messages already `sent`, or `sending` since a run that died, are left
   alone and reported. A `pending` message was never handed to a server: any run sends it.
2. `advance` (campflow.store.sending's window, a few messages at a time): claims the next messages
   (`sending`) just before they go to the server, in the same transaction as it settles those
   whose outcome came back: `sent`, `failed` (with the server's reply), or back to `pending`
   when the server deferred them or they were never attempted. A message whose fate a crash
   made unknown stays `sending`. No more than the sender's window is ever `sending`, so a
   killed run leaves at most that many messages of unknown fate.

`settle_statuses` then sets the parties' and contacts' statuses set-based from the outbox,
in the step's transaction, over the messages of this run (kept in a temporary table).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from campflow.delivery.senders import DEFERRED, FAILED, SENT, UNKNOWN, Delivery
from campflow.store import db

SENDING = "sending"
PENDING = "pending"

_CLAIM = text("""
    with batch as (
        select * from unnest(cast(:party_ids as integer[]), cast(:contact_ids as integer[]),
                             cast(:recipients as text[]), cast(:states as text[]), cast(:errors as text[]))
            as b(party_id, contact_id, recipient, state, error)
    ), added as (
        insert into outbox (operation_id, step_id, party_id, contact_id, recipient, state, error, channel,
                            attempts, claimed_at)
        select :op, :step, b.party_id, b.contact_id, b.recipient, b.state, b.error, :channel,
               (b.state = 'sending')::int, case when b.state = 'sending' then now() end
        from batch b
        on conflict do nothing
        returning id, party_id, contact_id, state
    ), taken as (
        update outbox o set state = b.state, error = b.error, recipient = b.recipient, channel = :channel,
               attempts = o.attempts + (b.state = 'sending')::int,
               claimed_at = case when b.state = 'sending' then now() end, updated_at = now()
        from batch b
        where o.step_id = :step and o.party_id = b.party_id and o.contact_id is not distinct from b.contact_id
          and o.state = any(cast(:claimable as text[]))
        returning o.id, o.party_id, o.contact_id, o.state
    ), kept as (
        select o.id, o.party_id, o.contact_id, o.state from outbox o join batch b
          on o.step_id = :step and o.party_id = b.party_id and o.contact_id is not distinct from b.contact_id
        where not o.state = any(cast(:claimable as text[]))
    )
    select id, party_id, contact_id, state, true from added
    union all select id, party_id, contact_id, state, true from taken
    union all select id, party_id, contact_id, state, false from kept""")

# one statement, so one round trip and (in autocommit) one transaction: the send window's
# keeper runs it for every few messages. Both updates find their rows by primary key whatever
# the statistics say: `o.id = any(…)` is there for the index, and the state is compared through
# coalesce so that the (step_id, state) index, which holds every pending row, is never chosen.
_ADVANCE = text("""
    with settled as (
        update outbox o set state = u.state, error = u.error, message_id = coalesce(u.message_id, o.message_id),
               message_path = coalesce(u.path, o.message_path),
               sent_at = case when u.state = 'sent' then now() else o.sent_at end,
               claimed_at = case when u.state = 'pending' then null else o.claimed_at end, updated_at = now()
        from unnest(cast(:settled as bigint[]), cast(:states as text[]), cast(:errors as text[]),
                    cast(:message_ids as text[]), cast(:paths as text[])) as u(id, state, error, message_id, path)
        where o.id = u.id and o.id = any(cast(:settled as bigint[]))
        returning o.id
    )
    update outbox set state = 'sending', attempts = attempts + 1, claimed_at = now(), updated_at = now()
    where id = any(cast(:ids as bigint[])) and coalesce(state, '') = 'pending'
    returning id""")
NOTHING_SETTLED = {"settled": [], "states": [], "errors": [], "message_ids": [], "paths": []}


@dataclass(frozen=True, slots=True)
class Claimed:
    """An outbox row of the batch: `mine` when this run registered it (to send, or failed), else left as `state`."""

    id: int
    party_id: int
    contact_id: int | None
    state: str
    mine: bool


@dataclass(frozen=True)
class Settlement:
    """The settling part of one `advance` (None: nothing to write)."""

    params: dict[str, Any] | None


@dataclass
class OutboxTally:
    """What the run did with its messages, for the step's outcome."""

    sent: int = 0
    failed: int = 0
    deferred: int = 0
    unknown: int = 0  # left `sending` by an earlier run that died; not sent again
    lost: int = 0  # made unknown by this run (the connection died while a message went out)
    already_sent: int = 0
    released: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def count_reason(self, reason: str | None) -> None:
        key = (reason or "").split(":", 1)[0] or "failed"
        self.reasons[key] = self.reasons.get(key, 0) + 1


class OutboxWriter:
    """The outbox rows of one step run, claimed and settled in their own committed transactions."""

    def __init__(self, operation_id: int, step_id: int, channel: str, resend_unknown: bool,
                 connect: bool = True, check_lock: Callable[[], None] = lambda: None) -> None:
        self.operation_id = operation_id
        self.check_lock = check_lock  # the step's StepContext.check_lock: raises once the run lost its lock
        self.step_id = step_id
        self.channel = channel
        self.claimable = ["pending", "failed", SENDING] if resend_unknown else ["pending", "failed"]
        self.connection: Any = None
        self.window_connection: Any = None  # the send window's (campflow.store.sending), used by its keeper thread
        self.tally = OutboxTally()
        if connect:
            self.open()

    def open(self) -> None:
        """Its own connection: what it writes commits at once, apart from the step's transaction."""
        if self.connection is None:
            self.connection = db.engine().connect()

    def register(self, rows: Sequence[tuple[int, int | None, str | None, str | None]]) -> list[Claimed]:
        """Register (party_id, contact_id, recipient, error) rows: `pending`, or `failed` when an error is given."""
        states = [FAILED if error else PENDING for _, _, _, error in rows]
        params = {"op": self.operation_id, "step": self.step_id, "channel": self.channel,
                  "claimable": self.claimable, "party_ids": [r[0] for r in rows],
                  "contact_ids": [r[1] for r in rows], "recipients": [r[2] for r in rows],
                  "states": states, "errors": [r[3] for r in rows]}
        with self.connection.begin():
            found = [Claimed(*row) for row in self.connection.execute(_CLAIM, params)]
        for row in found:
            if not row.mine:
                if row.state == SENT:
                    self.tally.already_sent += 1
                else:
                    self.tally.unknown += 1
        return found

    def advance(self, settled: Settlement, ids: Sequence[int]) -> set[int]:
        """Settle messages and claim the next ones (`ids`, registered `pending`) in one transaction,
        on the send window's own connection; the ids claimed.

        On a new connection when that one died (a terminated backend): what went out must be
        recorded as sent. The transaction that failed changed nothing, so it is simply done again.
        A run that lost its lock on the operation claims nothing more (`check_lock` raises): what
        came back is still settled, the rest stays `pending`; the step's thread raises the error.
        """
        ids = self._still_locked(ids)
        try:
            claimed = self._advance(settled, ids)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            self.window_connection.close()
            self.window_connection = None
            # the lock's connection may have died with this one: ask again before claiming anew
            claimed = self._advance(settled, self._still_locked(ids))
        return claimed

    def _still_locked(self, ids: Sequence[int]) -> Sequence[int]:
        """`ids`, or none once the run lost its lock on the operation."""
        if ids:
            try:
                self.check_lock()
            except Exception:
                return ()
        return ids

    def _advance(self, settled: Settlement, ids: Sequence[int]) -> set[int]:
        if self.window_connection is None:
            self.window_connection = db.engine().connect().execution_options(isolation_level="AUTOCOMMIT")
        params = NOTHING_SETTLED if settled.params is None else {
            "settled": settled.params["ids"], **{k: v for k, v in settled.params.items() if k != "ids"}}
        return set(self.window_connection.execute(_ADVANCE, {**params, "ids": list(ids)}).scalars())

    def settlement(self, ids: Sequence[int], deliveries: Sequence[Delivery | None],
                   message_ids: Sequence[str | None]) -> Settlement:
        """What to write of each claimed message's fate: `sent`, `failed`, back to `pending` when
        deferred or never attempted; a message of unknown fate stays `sending`."""
        rows: list[tuple[int, str, str | None, str | None, str | None]] = []
        for id_, delivery, message_id in zip(ids, deliveries, message_ids):
            if delivery is None:
                rows.append((id_, "pending", None, None, None))
                self.tally.released += 1
            elif delivery.state == UNKNOWN:
                self.tally.lost += 1
            elif delivery.state == SENT:
                rows.append((id_, SENT, None, message_id, delivery.path))
                self.tally.sent += 1
            elif delivery.state == DEFERRED:
                rows.append((id_, "pending", delivery.reply, None, None))
                self.tally.deferred += 1
            else:
                rows.append((id_, FAILED, delivery.reply, None, delivery.path))
                self.tally.failed += 1
                self.tally.count_reason(delivery.reply)
        if not rows:
            return Settlement(None)
        return Settlement({"ids": [r[0] for r in rows], "states": [r[1] for r in rows],
                           "errors": [r[2] for r in rows], "message_ids": [r[3] for r in rows],
                           "paths": [r[4] for r in rows]})

    def close(self) -> None:
        for connection in (self.connection, self.window_connection):
            if connection is not None:
                connection.close()
        self.connection = self.window_connection = None


# --- statuses, in the step's transaction --------------------------------------------------------


def start_run(session: Session) -> None:
    """The temporary table of this run's messages (outbox ids), dropped at commit."""
    session.execute(text("drop table if exists pg_temp.step_message"))
    session.execute(text("create temporary table step_message (outbox_id bigint primary key) on commit drop"))


def remember(session: Session, ids: Sequence[int]) -> None:
    if ids:
        session.execute(text("insert into pg_temp.step_message select unnest(cast(:ids as bigint[])) "
                             "on conflict do nothing"), {"ids": list(ids)})


_PARTY_STATUSES = text("""
    with messages as (
        select o.party_id, o.state, o.error, c.code as contact_code
        from pg_temp.step_message m join outbox o on o.id = m.outbox_id
        left join contact c on c.id = o.contact_id
    ), verdict as (
        select party_id,
               case when bool_or(state = 'sent') then 'ok_continue'
                    when bool_and(state = 'failed') then 'failed' end as status,
               string_agg(case when contact_code is null then error else 'contact ' || contact_code || ': ' || error
                          end, '; ' order by contact_code) filter (where state in ('failed', 'pending')) as errors,
               count(*) filter (where state = 'sending') as unknown
        from messages group by party_id
    )
    update step_target st
    set status = coalesce(v.status, st.status),
        reason = case when v.status = 'ok_continue' then null
                      when v.status = 'failed' then left(v.errors, 2000)
                      when v.unknown > 0 then :unknown_reason
                      else left('waiting: ' || coalesce(v.errors, 'not sent yet'), 2000) end,
        processed_at = case when v.status is null then st.processed_at else now() end
    from verdict v
    where st.step_id = :step and st.party_id = v.party_id and st.status = 'to_process'
    returning st.status""")

_CONTACT_STATUSES = text("""
    insert into step_target_contact (step_id, contact_id, party_id, status, reason, processed_at)
    select :step, o.contact_id, o.party_id,
           case o.state when 'sent' then 'ok_continue' when 'failed' then 'failed' else 'to_process' end,
           case when o.state in ('failed', 'pending') then left(o.error, 2000) end,
           case when o.state in ('sent', 'failed') then now() end
    from pg_temp.step_message m join outbox o on o.id = m.outbox_id
    where o.contact_id is not null
    on conflict (step_id, contact_id) do update
        set status = excluded.status, reason = excluded.reason, processed_at = excluded.processed_at
        where step_target_contact.status = 'to_process'""")

_NOT_RECIPIENTS = text("""
    update step_target_contact stc
    set status = 'not_processed_continue', reason = :reason, processed_at = now()
    from pg_temp.claimed_party cp
    where stc.step_id = :step and stc.party_id = cp.party_id and stc.status = 'to_process'
      and not exists (select from pg_temp.step_message m join outbox o on o.id = m.outbox_id
                      where o.contact_id = stc.contact_id)""")


def settle_statuses(session: Session, step_id: int, operation_code: str,
                    functions: Sequence[str] | None) -> dict[str, int]:
    """Parties and contacts take their messages' outcome; how many parties ended in each status.

    A party with a message sent is `ok_continue`; one whose messages all failed is `failed`
    (the reasons in step_target.reason); one with a message of unknown fate or deferred stays
    `to_process`. With `functions`, each recipient contact gets its own status, and the
    party's targeted contacts that were not recipients `not_processed_continue`.
    """
    unknown = (f"message fate unknown after an interrupted run; not sent again unless asked: "
               f"campflow run {operation_code} --resend-unknown")
    counts: dict[str, int] = {}
    for (status,) in session.execute(_PARTY_STATUSES, {"step": step_id, "unknown_reason": unknown}):
        if status != "to_process":
            counts[status] = counts.get(status, 0) + 1
    if functions:
        session.execute(_CONTACT_STATUSES, {"step": step_id})
        session.execute(_NOT_RECIPIENTS, {"step": step_id,
                                          "reason": f"not a recipient (functions {', '.join(functions)})"})
    return counts
