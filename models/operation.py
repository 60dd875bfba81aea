"""The operation tree (folders and operations) and each operation's step tree."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, created_at_column, updated_at_column


class Folder(Base):
    """A title line of the operation tree; folders nest without limit."""

    __tablename__ = "folder"
    __table_args__ = (
        Index("uq_folder_parent_label", "parent_id", "label", unique=True,
              postgresql_nulls_not_distinct=True),
        CheckConstraint("kind is null or kind in ('plan', 'program')", name="kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("folder.id", ondelete="CASCADE"))
    label: Mapped[str]
    kind: Mapped[str | None]
    position: Mapped[int] = mapped_column(server_default="0")
    children: Mapped[list[Folder]] = relationship(
        cascade="all, delete-orphan", back_populates="parent", lazy="raise"
    )
    parent: Mapped[Folder | None] = relationship(
        back_populates="children", remote_side=[id], lazy="raise"
    )


class Operation(Base):
    """A runnable marketing operation: a final line of the operation tree."""

    __tablename__ = "operation"
    __table_args__ = (
        CheckConstraint("progress between 0 and 100", name="progress"),
        CheckConstraint("ends_at is null or starts_at is null or ends_at >= starts_at",
                        name="dates"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(unique=True)
    label: Mapped[str]
    folder_id: Mapped[int | None] = mapped_column(
        ForeignKey("folder.id", ondelete="SET NULL"), index=True
    )
    family_id: Mapped[int | None] = mapped_column(ForeignKey("family.id"), index=True)
    # collaborator groups that may see it; empty: its family's (campflow.store.access)
    groups: Mapped[list[str]] = mapped_column(server_default="{}")
    type_id: Mapped[int | None] = mapped_column(ForeignKey("entity_type.id"))
    state: Mapped[str] = mapped_column(server_default="in_preparation", index=True)
    starts_at: Mapped[dt.datetime | None]
    ends_at: Mapped[dt.datetime | None]
    timezone: Mapped[str] = mapped_column(server_default="UTC")
    cadence: Mapped[str | None]
    responsible_id: Mapped[int | None] = mapped_column(ForeignKey("collaborator.id"))
    location: Mapped[str | None]
    description: Mapped[str | None]
    progress: Mapped[int] = mapped_column(server_default="0")
    party_kinds: Mapped[list[str]] = mapped_column(server_default="{}")
    is_template: Mapped[bool] = mapped_column(server_default="false")
    attach_messages_to_events: Mapped[bool] = mapped_column(server_default="false")
    # where the spec was applied from, so relative template paths can be explained
    source_file: Mapped[str | None]
    # distributed marketing: the entity that owns and runs it (None: the central one), and for
    # a local entity's child operation (by_campaign package), the reference operation it copies
    owner_entity_id: Mapped[int | None] = mapped_column(ForeignKey("entity.id"), index=True)
    parent_operation_id: Mapped[int | None] = mapped_column(ForeignKey("operation.id", ondelete="SET NULL"),
                                                            index=True)
    created_at: Mapped[dt.datetime] = created_at_column()
    updated_at: Mapped[dt.datetime] = updated_at_column()

    steps: Mapped[list[Step]] = relationship(
        back_populates="operation", cascade="all, delete-orphan",
        order_by="Step.position", lazy="raise",
    )


class Step(Base):
    """A step of an operation: a group (has sub-steps) or an action (has a kind)."""

    __tablename__ = "step"
    __table_args__ = (
        UniqueConstraint("operation_id", "code"),
        Index("ix_step_operation_position", "operation_id", "position"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    operation_id: Mapped[int] = mapped_column(ForeignKey("operation.id", ondelete="CASCADE"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("step.id", ondelete="CASCADE"))
    position: Mapped[int]  # document order within the operation (pre-order)
    code: Mapped[str]
    label: Mapped[str]
    kind: Mapped[str | None]  # None for a group
    state: Mapped[str | None]
    type_id: Mapped[int | None] = mapped_column(ForeignKey("entity_type.id"))
    event_code: Mapped[str | None]
    questionnaire_id: Mapped[int | None] = mapped_column(ForeignKey("questionnaire.id"))
    run_at: Mapped[dt.datetime | None]
    is_template: Mapped[bool] = mapped_column(server_default="false")
    # False when the spec says `next:`: then only the step's routes move parties on
    default_route: Mapped[bool] = mapped_column(server_default="true")
    where_formula: Mapped[str | None]
    # kind-specific settings as written in the spec (email, document, columns…)
    settings: Mapped[dict[str, Any]] = mapped_column(server_default="{}")

    operation: Mapped[Operation] = relationship(back_populates="steps", lazy="raise")
    routes: Mapped[list[Route]] = relationship(
        back_populates="step", cascade="all, delete-orphan", order_by="Route.position",
        foreign_keys="Route.step_id", lazy="raise",
    )


class Route(Base):
    """A way out of a step: parties whose conditions hold move to `to_step`."""

    __tablename__ = "route"
    __table_args__ = (UniqueConstraint("step_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("step.id", ondelete="CASCADE"))
    to_step_id: Mapped[int] = mapped_column(ForeignKey("step.id", ondelete="CASCADE"), index=True)
    position: Mapped[int]
    formula: Mapped[str | None]  # None: all conditions must hold
    when_status: Mapped[list[str]] = mapped_column(server_default="{ok_continue}")

    step: Mapped[Step] = relationship(back_populates="routes", foreign_keys=[step_id], lazy="raise")
    conditions: Mapped[list[Condition]] = relationship(
        cascade="all, delete-orphan", order_by="Condition.position", lazy="raise"
    )


class Condition(Base):
    """A named condition of a route, or of a step's `where:` (who may enter it)."""

    __tablename__ = "condition"
    __table_args__ = (
        CheckConstraint("(route_id is null) <> (where_step_id is null)", name="owner"),
        CheckConstraint("kind in ('answer', 'field', 'party_kind', 'status')", name="kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    route_id: Mapped[int | None] = mapped_column(
        ForeignKey("route.id", ondelete="CASCADE"), index=True
    )
    where_step_id: Mapped[int | None] = mapped_column(
        ForeignKey("step.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int]
    code: Mapped[str]
    kind: Mapped[str]
    # the condition as the spec writes it, e.g. {"answer": "Q1.CATALOGUE", "op": "equals", "value": "oui"}
    definition: Mapped[dict[str, Any]]
