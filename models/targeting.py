"""Who an operation targets, each party's status per step, answers and events.

The four per-party tables (operation_target, operation_target_contact, step_target,
step_target_contact) hold millions of rows written by set-based SQL that always joins the
parent tables. They have no row-level foreign keys: each such key checks and locks the parent
row once per inserted row (FOR KEY SHARE), 12 of the 16 seconds of a million-party target
import. Statement-level triggers (migration 0002) delete their rows when a party, contact,
operation or step is deleted, as ON DELETE CASCADE would.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import Integer

from models.base import Base, created_at_column


def _operation_key() -> Mapped[int]:
    return mapped_column(primary_key=True)


class OperationTarget(Base):
    """A party targeted by an operation (MANIFTIERS)."""

    __tablename__ = "operation_target"

    operation_id: Mapped[int] = _operation_key()
    party_id: Mapped[int] = mapped_column(
        primary_key=True, index=True
    )
    added_at: Mapped[dt.datetime] = created_at_column()
    source: Mapped[str | None]  # "import:FILE", "step:OP/STEP", "where:…"


class OperationTargetContact(Base):
    """A contact chosen among a targeted party's contacts (MANIFCONTACT)."""

    __tablename__ = "operation_target_contact"
    __table_args__ = (
        # a party's chosen contacts: targets list counts them per party, routing joins on them
        Index("ix_operation_target_contact_operation_party", "operation_id", "party_id"),
    )

    operation_id: Mapped[int] = _operation_key()
    contact_id: Mapped[int] = mapped_column(
        primary_key=True, index=True
    )
    party_id: Mapped[int] = mapped_column(index=True)  # the party delete trigger's lookup
    added_at: Mapped[dt.datetime] = created_at_column()


class _StatusColumns:
    """Status of one party (or contact) in one step."""

    status: Mapped[str] = mapped_column(server_default="to_process")
    attempts: Mapped[int] = mapped_column(server_default="0")
    callback_at: Mapped[dt.datetime | None]
    processed_at: Mapped[dt.datetime | None]
    reason: Mapped[str | None]
    entered_at: Mapped[dt.datetime] = created_at_column()


class StepTarget(_StatusColumns, Base):
    """A party's status in a step; one row per (step, party)."""

    __tablename__ = "step_target"
    __table_args__ = (
        Index("ix_step_target_step_status", "step_id", "status"),
        CheckConstraint("attempts >= 0", name="attempts"),
    )

    step_id: Mapped[int] = mapped_column(
        primary_key=True
    )
    party_id: Mapped[int] = mapped_column(
        primary_key=True, index=True
    )
    operation_id: Mapped[int] = mapped_column(index=True)  # the operation delete trigger's lookup


class StepTargetContact(_StatusColumns, Base):
    """A contact's status in a step, when contacts are processed one by one."""

    __tablename__ = "step_target_contact"
    __table_args__ = (
        Index("ix_step_target_contact_step_party", "step_id", "party_id"),
        CheckConstraint("attempts >= 0", name="attempts"),
    )

    step_id: Mapped[int] = mapped_column(
        primary_key=True
    )
    contact_id: Mapped[int] = mapped_column(
        primary_key=True, index=True
    )
    party_id: Mapped[int] = mapped_column(index=True)  # the party delete trigger's lookup


class Answer(Base):
    """A party's (or contact's) answer to a question within an operation."""

    __tablename__ = "answer"
    __table_args__ = (
        Index("uq_answer_operation_party_contact_question", "operation_id", "party_id",
              "contact_id", "question_id", unique=True, postgresql_nulls_not_distinct=True),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    operation_id: Mapped[int] = mapped_column(ForeignKey("operation.id", ondelete="CASCADE"))
    step_id: Mapped[int | None] = mapped_column(ForeignKey("step.id", ondelete="SET NULL"))
    party_id: Mapped[int] = mapped_column(ForeignKey("party.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"))
    question_id: Mapped[int] = mapped_column(ForeignKey("question.id", ondelete="CASCADE"))
    # text of the answer; multi_choice answers are kept in `choices`
    value: Mapped[str | None]
    choices: Mapped[list[str] | None]
    answered_at: Mapped[dt.datetime] = created_at_column()


class Event(Base):
    """What happened to a party in a step with an event code; one per (step, party)."""

    __tablename__ = "event"
    __table_args__ = (
        Index("uq_event_step_party", "step_id", "party_id", unique=True),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    operation_id: Mapped[int] = mapped_column(ForeignKey("operation.id", ondelete="CASCADE"))
    step_id: Mapped[int] = mapped_column(ForeignKey("step.id", ondelete="CASCADE"))
    party_id: Mapped[int] = mapped_column(ForeignKey("party.id", ondelete="CASCADE"), index=True)
    contact_ids: Mapped[list[int]] = mapped_column(ARRAY(Integer), server_default="{}")
    code: Mapped[str]
    occurred_at: Mapped[dt.datetime] = created_at_column()
    message_path: Mapped[str | None]
    details: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
