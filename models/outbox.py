"""The outbox: one row per message a step sends, so that no message is ever sent twice.

A message is `pending` (known not sent), `sending` (claimed by a run: being sent, or — when
the run died — of unknown fate), `sent` or `failed` (refused for good). Rows are claimed and
settled in their own committed transactions, apart from the step's, so a crash leaves a
trace of what was on the wire. Like the per-party tables it has no row-level foreign keys
(rows are written by the thousand); statement-level triggers (migration 0003) delete a
deleted party's, contact's, step's or operation's messages.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, CheckConstraint, Index
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, created_at_column

OUTBOX_STATES = ("pending", "sending", "sent", "failed")
_STATES_SQL = ", ".join(f"'{s}'" for s in OUTBOX_STATES)


class Outbox(Base):
    """One message of a step to one recipient of a party (its own address or a contact's)."""

    __tablename__ = "outbox"
    __table_args__ = (
        # contact_id is null for a message to the party's own address: still one per party
        Index("uq_outbox_step_party_contact", "step_id", "party_id", "contact_id", unique=True,
              postgresql_nulls_not_distinct=True),
        Index("ix_outbox_step_state", "step_id", "state"),
        CheckConstraint(f"state in ({_STATES_SQL})", name="state"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    operation_id: Mapped[int] = mapped_column()
    step_id: Mapped[int] = mapped_column()
    party_id: Mapped[int] = mapped_column()
    contact_id: Mapped[int | None] = mapped_column()
    recipient: Mapped[str | None]  # the address as found; null when there was none
    state: Mapped[str] = mapped_column(server_default="pending")
    error: Mapped[str | None]  # why it failed (or was deferred): "refused by smtp: 550 …"
    message_id: Mapped[str | None]
    message_path: Mapped[str | None]  # the .eml written for the message, when one was
    channel: Mapped[str | None]  # "smtp:emailing (mail.example.com:587)", "file:…"
    attempts: Mapped[int] = mapped_column(server_default="0")
    created_at: Mapped[dt.datetime] = created_at_column()
    claimed_at: Mapped[dt.datetime | None]
    sent_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = created_at_column()
