"""Dates as an operation's users write and read them: local to its timezone, without offset."""

from __future__ import annotations

import datetime as dt
import zoneinfo


def local_text(value: dt.datetime, zone: zoneinfo.ZoneInfo) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(zone).replace(tzinfo=None)
    return value.isoformat(timespec="seconds" if value.second else "minutes")


def aware(text: str | None, zone: zoneinfo.ZoneInfo) -> dt.datetime | None:
    if not text:
        return None
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=zone)
