"""What a run that failed says: why it stopped, and what it did before (read back from the outbox).

A step's attempts may each have sent part of its messages before the last one failed, so
the counts are the run's, from the database: messages sent since the run took its lock,
messages left of unknown fate, and the parties that still wait (those a new run would
process, less those whose message already went out: a new run only settles them).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from campflow.core.compiler import OperationPlan
from campflow.errors import CampflowError
from campflow.store import db, routing
from campflow.store.catalog import load_field_catalog

_MESSAGES = text("""
    select s.code, count(*) filter (where o.state = 'sent' and o.sent_at >= :since),
           count(*) filter (where o.state = 'sending' and o.claimed_at >= :since)
    from outbox o join step s on s.id = o.step_id
    where o.operation_id = :op and (o.sent_at >= :since or o.claimed_at >= :since)
    group by s.code""")

_WAITING = text("""
    select count(*) from step_target st
    where st.step_id = :step and st.status = 'to_process'
      and not exists (select from outbox o where o.step_id = st.step_id and o.party_id = st.party_id
                      and o.state = 'sent')""")


class RunFailed(CampflowError):
    """A run that failed or lost its lock; `reports` is its funnel, shown before the message."""

    def __init__(self, message: str, reports: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.reports = reports


def run_failure(plan: OperationPlan, op_id: int, reports: list[dict[str, Any]], since: dt.datetime | None,
                lost: str) -> RunFailed:
    """The one error of a run: the lost lock or the failed steps, then what the run did."""
    unfinished = [r for r in reports if r["state"] not in ("Completed", "Skipped")]
    failed = [r for r in unfinished if r["state"] == "Failed"]
    parts = []
    if lost:
        parts.append(f"the run lost its lock on operation {plan.code}: {lost}; it stopped claiming work "
                     "so that no other run could do the same work twice")
    for report in failed:
        reason = report["reason"].removeprefix(f"step {plan.code}/{report['code']}: ") or "no reason given"
        if not (lost and reason.startswith(("the run lost its lock", "database error"))):  # said already
            parts.append(f"step {report['code']} of {plan.code} failed: {reason}")
    parts.append(_what_was_done(plan, op_id, unfinished, since))
    return RunFailed(". ".join(parts), reports)


def _what_was_done(plan: OperationPlan, op_id: int, unfinished: list[dict[str, Any]],
                   since: dt.datetime | None) -> str:
    try:
        messages = _messages(op_id, since) if since else {}
        waiting = {r["code"]: _waiting(plan, op_id, r["code"]) for r in unfinished}
    except DBAPIError:  # the database is gone too, or busy with another run: the outbox holds what went out
        return "What went out is recorded in the outbox; run again to finish (no message is sent twice)"
    for report in unfinished:  # its own counts were rolled back with it: the funnel shows what waits
        report["after"] = report["after"] or {"to_process": waiting[report["code"]]}
    counts = []
    for code in dict.fromkeys([*messages, *waiting]):
        sent, unknown = messages.get(code, (0, 0))
        said = [f"{sent} message{'s' if sent != 1 else ''} sent and recorded in this run"] if code in messages else []
        if unknown:
            said.append(f"{unknown} of unknown fate (sent again only with --resend-unknown)")
        if waiting.get(code):
            said.append(f"{waiting[code]} part{'ies' if waiting[code] != 1 else 'y'} wait")
        if said:
            counts.append(f"{code}: {', '.join(said)}")
    again = "Run again to finish" + (" (no message is sent twice)" if messages else "")
    return f"{'; '.join(counts)}. {again}" if counts else again


def _messages(op_id: int, since: dt.datetime) -> dict[str, tuple[int, int]]:
    """Step code → (messages sent, messages left of unknown fate) since the run took its lock."""
    with db.engine().connect() as connection:
        return {code: (sent, unknown) for code, sent, unknown in
                connection.execute(_MESSAGES, {"op": op_id, "since": since})}


def _waiting(plan: OperationPlan, op_id: int, code: str) -> int:
    """The parties a new run of the step would process, less those whose message went out."""
    step = plan.step(code)
    with db.session() as session:
        # the lock is lost: another run may hold the rows entering would touch; do not wait for it
        session.execute(text("set local lock_timeout = '2s'"))
        ids = routing.step_ids(session, op_id)
        if step.entry:  # the failed step's own entry was rolled back with it
            routing.enter_targets(session, plan, step, op_id, ids, load_field_catalog(session))
        count = session.scalar(_WAITING, {"step": ids[code]}) or 0
        session.rollback()
    return count
