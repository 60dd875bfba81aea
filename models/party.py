"""Third parties and their contacts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import PARTY_KINDS, Base, created_at_column, updated_at_column

_KINDS_SQL = ", ".join(f"'{k}'" for k in PARTY_KINDS)


class Party(Base):
    """A third party: client, prospect, supplier, sales rep or other."""

    __tablename__ = "party"
    __table_args__ = (
        CheckConstraint(f"kind in ({_KINDS_SQL})", name="kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(unique=True)
    kind: Mapped[str]
    name: Mapped[str]
    email: Mapped[str | None]
    phone: Mapped[str | None]
    fax: Mapped[str | None]
    address: Mapped[str | None]
    postal_code: Mapped[str | None]
    city: Mapped[str | None]
    country: Mapped[str | None]
    # custom fields by lowercase name; indexed fields as "stat(1)", "stat(2)"…
    fields: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    created_at: Mapped[dt.datetime] = created_at_column()
    updated_at: Mapped[dt.datetime] = updated_at_column()


class Contact(Base):
    """A person of a party; the code is unique within its party."""

    __tablename__ = "contact"
    __table_args__ = (UniqueConstraint("party_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    party_id: Mapped[int] = mapped_column(ForeignKey("party.id", ondelete="CASCADE"))
    code: Mapped[str]
    title: Mapped[str | None]
    last_name: Mapped[str | None]
    first_name: Mapped[str | None]
    function: Mapped[str | None] = mapped_column(index=True)
    email: Mapped[str | None]
    phone: Mapped[str | None]
    fields: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    created_at: Mapped[dt.datetime] = created_at_column()
    updated_at: Mapped[dt.datetime] = updated_at_column()
