"""Portal accounts and the audit trail (SPEC section 12): who may log in, for which entity or
collaborator, with which roles; and what people did and were refused."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, created_at_column, updated_at_column

ROLES = ("admin", "central_operator", "reviewer", "local_operator", "partner", "collaborator")


class Account(Base):
    """A person who logs in to the portal (and whose login `--as` names on the CLI)."""

    __tablename__ = "account"
    __table_args__ = (
        CheckConstraint("cardinality(roles) > 0", name="roles"),
        CheckConstraint("login ~ '^[a-z0-9][a-z0-9._-]{0,63}$'", name="login"),
        Index("uq_account_email", "email", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(unique=True)
    email: Mapped[str]
    name: Mapped[str | None]
    # argon2 hash; None until the person sets a password from the invitation link
    password_hash: Mapped[str | None]
    disabled: Mapped[bool] = mapped_column(server_default="false")
    # the network entity it acts for (local operators, central operators, reviewers)
    entity_id: Mapped[int | None] = mapped_column(ForeignKey("entity.id"), index=True)
    # the collaborator it is (its groups open confidential families and operations)
    collaborator_id: Mapped[int | None] = mapped_column(ForeignKey("collaborator.id"))
    roles: Mapped[list[str]]
    # bumped whenever the password is set or reset: a used link, and older sessions, stop working
    generation: Mapped[int] = mapped_column(server_default="0")
    failed_logins: Mapped[int] = mapped_column(server_default="0")
    locked_until: Mapped[dt.datetime | None]
    last_login_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = created_at_column()
    updated_at: Mapped[dt.datetime] = updated_at_column()


class AuditEvent(Base):
    """One thing done or refused: a login, a logout, a decision, a refusal, a change."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = created_at_column()
    login: Mapped[str | None] = mapped_column(index=True)
    entity_id: Mapped[int | None] = mapped_column(ForeignKey("entity.id", ondelete="SET NULL"), index=True)
    action: Mapped[str]  # login, login_failed, logout, approve_order, refused, …
    subject: Mapped[str | None]  # what it was about: "order 12", "list MAIL/S2"
    outcome: Mapped[str] = mapped_column(server_default="ok")  # ok | refused | failed
    detail: Mapped[dict[str, Any] | None]
    source: Mapped[str] = mapped_column(server_default="portal")  # portal | cli | flow
    address: Mapped[str | None]  # the client's IP address (portal)
    # the operation it is about: the log shows it only to those who may see that operation
    operation_id: Mapped[int | None] = mapped_column(ForeignKey("operation.id", ondelete="SET NULL"), index=True)
