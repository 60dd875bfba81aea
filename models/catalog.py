"""Reference data: collaborators, families, entity types, states, fields, questionnaires."""

from __future__ import annotations

from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base


class Collaborator(Base):
    """A person of the company: operation responsible, operator, reviewer."""

    __tablename__ = "collaborator"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(unique=True)
    name: Mapped[str]
    email: Mapped[str | None]
    groups: Mapped[list[str]] = mapped_column(server_default="{}")


class Family(Base):
    """Family of operations: a filter, and the groups allowed to see its operations."""

    __tablename__ = "family"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(unique=True)
    label: Mapped[str]
    groups: Mapped[list[str]] = mapped_column(server_default="{}")


class EntityType(Base):
    """Type of an operation or a step: which of its fields are unused, optional or mandatory."""

    __tablename__ = "entity_type"
    __table_args__ = (
        CheckConstraint("applies_to in ('operation', 'step')", name="applies_to"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(unique=True)
    label: Mapped[str]
    applies_to: Mapped[str]
    # field name -> "unused" | "optional" | "mandatory"
    field_requirements: Mapped[dict[str, Any]] = mapped_column(server_default="{}")


class State(Base):
    """A configurable state of operations, steps, targeted parties or operation types."""

    __tablename__ = "state"
    __table_args__ = (
        UniqueConstraint("applies_to", "code"),
        CheckConstraint(
            "applies_to in ('operation', 'step', 'target', 'operation_type')", name="applies_to"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str]
    label: Mapped[str]
    applies_to: Mapped[str]
    final: Mapped[bool] = mapped_column(server_default="false")
    position: Mapped[int] = mapped_column(server_default="0")


class EventCode(Base):
    """An event code (GRTEVT): what an Event of a step says happened."""

    __tablename__ = "event_code"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(unique=True)
    label: Mapped[str | None]


class CustomField(Base):
    """A custom field of parties or contacts, known from an import or a field dictionary."""

    __tablename__ = "custom_field"
    __table_args__ = (
        UniqueConstraint("table_name", "name"),
        CheckConstraint("table_name in ('party', 'contact')", name="table_name"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    table_name: Mapped[str]
    name: Mapped[str]  # lowercase; an indexed field is stored as keys "name(1)", "name(2)"…
    indexed: Mapped[bool] = mapped_column(server_default="false")
    label: Mapped[str | None]
    source: Mapped[str] = mapped_column(server_default="import")


class FieldAlias(Base):
    """A field dictionary entry: another name (e.g. an ODBC name) for a field."""

    __tablename__ = "field_alias"
    __table_args__ = (UniqueConstraint("alias_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dictionary: Mapped[str]
    alias: Mapped[str]
    alias_key: Mapped[str]  # lowercase alias: names are looked up case-insensitively
    target: Mapped[str]  # canonical "table.field"


class Questionnaire(Base):
    """Questions asked to parties, mostly in phoning steps."""

    __tablename__ = "questionnaire"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(unique=True)
    label: Mapped[str]
    questions: Mapped[list[Question]] = relationship(
        back_populates="questionnaire",
        cascade="all, delete-orphan",
        order_by="Question.position",
        lazy="raise",
    )


class Question(Base):
    __tablename__ = "question"
    __table_args__ = (
        UniqueConstraint("questionnaire_id", "code"),
        CheckConstraint(
            "type in ('text', 'choice', 'multi_choice', 'number', 'date', 'bool')", name="type"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    questionnaire_id: Mapped[int] = mapped_column(
        ForeignKey("questionnaire.id", ondelete="CASCADE"), index=True
    )
    code: Mapped[str]
    label: Mapped[str]
    type: Mapped[str] = mapped_column(server_default="text")
    choices: Mapped[list[str]] = mapped_column(server_default="{}")
    required: Mapped[bool] = mapped_column(server_default="false")
    position: Mapped[int]
    questionnaire: Mapped[Questionnaire] = relationship(back_populates="questions", lazy="raise")
