"""Declarative base: stable constraint names and timezone-aware timestamps."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import MetaData, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import Text

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

PARTY_KINDS = ("client", "prospect", "supplier", "sales_rep", "other")
BUILTIN_TARGET_STATUSES = ("to_process", "ok_continue", "not_processed_continue", "failed", "excluded")
BUILTIN_OPERATION_STATES = ("in_preparation", "in_progress", "finished")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dt.datetime: TIMESTAMP(timezone=True),
        dict[str, Any]: JSONB,
        list[str]: ARRAY(Text),
        str: Text,
    }


def created_at_column() -> Mapped[dt.datetime]:
    return mapped_column(server_default=func.now())


def updated_at_column() -> Mapped[dt.datetime]:
    return mapped_column(server_default=func.now(), onupdate=func.now())
