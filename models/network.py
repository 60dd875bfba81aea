"""Distributed marketing: a network of entities (a central head office, local stores or
agencies), packages the central entity offers them, their orders, and the distributions that
split a target between local entities (SPEC section 9, after Adobe Campaign's Distributed
Marketing)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, ForeignKeyConstraint, Index, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, created_at_column, updated_at_column

ENTITY_TYPES = ("central", "local")
COLLABORATIONS = ("simple", "by_form", "by_campaign", "by_target_approval")
APPROVAL_MODES = ("manual", "automatic")
ORDER_STATUSES = ("pending", "approved", "rejected", "cancelled")
LIVE_ORDER_STATUSES = ("pending", "approved")  # one per package and entity; after the others, order again
LOCAL_APPROVAL_STATUSES = ("pending", "approved", "expired")


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


class Entity(Base):
    """A node of the network: the central entity or a local one (store, agency, franchise)."""

    __tablename__ = "entity"
    __table_args__ = (CheckConstraint(f"type in ({_in(ENTITY_TYPES)})", name="type"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(unique=True)
    label: Mapped[str]
    type: Mapped[str]
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("entity.id"), index=True)
    # logins of the people who act for the entity (the CLI's --as / CAMPFLOW_OPERATOR)
    operators: Mapped[list[str]] = mapped_column(server_default="{}")
    # e-mail addresses of the central people who approve orders
    reviewers: Mapped[list[str]] = mapped_column(server_default="{}")
    # where the entity's notifications go (packages published, decisions, lists to approve)
    emails: Mapped[list[str]] = mapped_column(server_default="{}")
    created_at: Mapped[dt.datetime] = created_at_column()
    updated_at: Mapped[dt.datetime] = updated_at_column()


class Distribution(Base):
    """How a target splits between local entities: a party field's value → a local entity."""

    __tablename__ = "distribution"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(unique=True)
    label: Mapped[str]
    field: Mapped[str]  # TABLE.FIELD as written in the spec, e.g. PCFIDX.VILLE
    created_at: Mapped[dt.datetime] = created_at_column()
    updated_at: Mapped[dt.datetime] = updated_at_column()


class DistributionRule(Base):
    """Parties whose field equals `value` go to `entity`, at most `limit_count` of them or
    `limit_percent` of the parties with that value."""

    __tablename__ = "distribution_rule"
    __table_args__ = (
        UniqueConstraint("distribution_id", "value"),
        CheckConstraint("limit_count is null or limit_percent is null", name="one_limit"),
        CheckConstraint("limit_percent is null or (limit_percent > 0 and limit_percent <= 100)",
                        name="percent"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    distribution_id: Mapped[int] = mapped_column(ForeignKey("distribution.id", ondelete="CASCADE"))
    position: Mapped[int]
    value: Mapped[str]
    entity_id: Mapped[int] = mapped_column(ForeignKey("entity.id"), index=True)
    limit_count: Mapped[int | None]
    limit_percent: Mapped[float | None]


class Package(Base):
    """A reference operation the central entity offers to local entities."""

    __tablename__ = "package"
    __table_args__ = (
        CheckConstraint(f"collaboration in ({_in(COLLABORATIONS)})", name="collaboration"),
        CheckConstraint(f"approval in ({_in(APPROVAL_MODES)})", name="approval"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(unique=True)
    label: Mapped[str]
    operation_id: Mapped[int] = mapped_column(ForeignKey("operation.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("entity.id"))
    collaboration: Mapped[str]
    approval: Mapped[str] = mapped_column(server_default="manual")
    timezone: Mapped[str] = mapped_column(server_default="UTC")
    visible_from: Mapped[dt.datetime | None]
    visible_until: Mapped[dt.datetime | None]
    registration_deadline: Mapped[dt.datetime | None]
    personalization_deadline: Mapped[dt.datetime | None]  # informative: never blocks
    # which parties belong to which local entity (simple and by_form packages)
    distribution_id: Mapped[int | None] = mapped_column(ForeignKey("distribution.id"))
    # personalisation fields of by_form packages: [{code, label, type, required, choices}]
    form: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    description: Mapped[str | None]
    documents: Mapped[list[str]] = mapped_column(server_default="{}")  # absolute paths
    # the head office's own notification texts for this package: {notice name: Jinja2 template}
    notices: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    published_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = created_at_column()
    updated_at: Mapped[dt.datetime] = updated_at_column()


class PackageAudience(Base):
    """A local entity a package is offered to."""

    __tablename__ = "package_audience"

    package_id: Mapped[int] = mapped_column(ForeignKey("package.id", ondelete="CASCADE"), primary_key=True)
    entity_id: Mapped[int] = mapped_column(ForeignKey("entity.id"), primary_key=True)


class Order(Base):
    """A local entity's registration to a package, with its personalisation values."""

    __tablename__ = "package_order"
    __table_args__ = (
        CheckConstraint(f"status in ({_in(ORDER_STATUSES)})", name="status"),
        # one live order per package and entity; rejected and cancelled ones stay as history
        Index("uq_package_order_live", "package_id", "entity_id", unique=True,
              postgresql_where=f"status in ({_in(LIVE_ORDER_STATUSES)})"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    package_id: Mapped[int] = mapped_column(ForeignKey("package.id", ondelete="CASCADE"), index=True)
    entity_id: Mapped[int] = mapped_column(ForeignKey("entity.id"), index=True)
    status: Mapped[str] = mapped_column(server_default="pending")
    values: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    comment: Mapped[str | None]  # the reviewer's, with the decision
    child_operation_id: Mapped[int | None] = mapped_column(ForeignKey("operation.id", ondelete="SET NULL"))
    created_by: Mapped[str]
    decided_by: Mapped[str | None]
    decided_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = created_at_column()
    updated_at: Mapped[dt.datetime] = updated_at_column()


class OrderEvent(Base):
    """The history of an order: who did what, when (created, edited, approved, …)."""

    __tablename__ = "order_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("package_order.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = created_at_column()
    actor: Mapped[str]
    action: Mapped[str]
    comment: Mapped[str | None]
    values: Mapped[dict[str, Any] | None]


class LocalApproval(Base):
    """A local entity's approval of its part of a `local_approval` step's target."""

    __tablename__ = "local_approval"
    __table_args__ = (
        UniqueConstraint("step_id", "entity_id"),
        CheckConstraint(f"status in ({_in(LOCAL_APPROVAL_STATUSES)})", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("step.id", ondelete="CASCADE"), index=True)
    entity_id: Mapped[int] = mapped_column(ForeignKey("entity.id"))
    status: Mapped[str] = mapped_column(server_default="pending")
    deadline: Mapped[dt.datetime]
    sent_at: Mapped[dt.datetime | None]
    reminders_sent: Mapped[int] = mapped_column(server_default="0")
    approved_by: Mapped[str | None]
    approved_at: Mapped[dt.datetime | None]


class LocalApprovalParty(Base):
    """A party of a `local_approval` step, assigned to a local entity (removed: dropped by it)."""

    __tablename__ = "local_approval_party"

    step_id: Mapped[int] = mapped_column(ForeignKey("step.id", ondelete="CASCADE"), primary_key=True)
    party_id: Mapped[int] = mapped_column(ForeignKey("party.id", ondelete="CASCADE"), primary_key=True)
    entity_id: Mapped[int] = mapped_column(ForeignKey("entity.id"), index=True)
    removed: Mapped[bool] = mapped_column(server_default="false")
    removed_by: Mapped[str | None]


class LocalApprovalContact(Base):
    """A contact its local entity removed from a party it keeps: the party is still contacted,
    not this person. Removing every listed contact of a party removes the party instead."""

    __tablename__ = "local_approval_contact"
    __table_args__ = (
        ForeignKeyConstraint(["step_id", "party_id"], ["local_approval_party.step_id", "local_approval_party.party_id"],
                             ondelete="CASCADE"),
    )

    step_id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"), primary_key=True)
    party_id: Mapped[int]
    removed_by: Mapped[str]
    removed_at: Mapped[dt.datetime] = created_at_column()
