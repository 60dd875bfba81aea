"""An operation's cadence (a word or a cron line) as RRule lines bounded by its dates.

Pure functions: the spec schema checks cadences with them, `campflow.orchestration.schedules` builds the
Prefect schedules from them. RRule (not cron) because only RRule carries DTSTART and UNTIL, and
its local times in the operation's timezone keep 09:00 at 09:00 across daylight-saving days.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Iterable

from cronsim import CronSim, CronSimError

CADENCE_RULES = {"hourly": "FREQ=HOURLY", "daily": "FREQ=DAILY", "weekly": "FREQ=WEEKLY",
                 "monthly": "FREQ=MONTHLY"}
CADENCE_WORDS = tuple(CADENCE_RULES)
_RRULE_DAYS = ("SU", "MO", "TU", "WE", "TH", "FR", "SA")
_RRULE_TIME = "%Y%m%dT%H%M%S"


def cadence_rules(cadence: str) -> list[str]:
    """The RRULE lines (without DTSTART/UNTIL) for a cadence word or a five-field cron line.

    A cron line restricting both day of month and day of week means either (cron's rule), which
    takes two RRULE lines. Raises ValueError naming what RRule cannot express and the fix.
    """
    word = cadence.strip()
    if word in CADENCE_RULES:
        return [CADENCE_RULES[word]]
    fields = word.split()
    if len(fields) != 5:
        raise ValueError(f"must be one of {', '.join(CADENCE_WORDS)} or a cron line "
                         f"(minute hour day month weekday); got {cadence!r}")
    day, weekday = fields[2].upper(), fields[4].upper()
    unbounded = [t for t in (day, weekday) if "?" in t]
    unbounded += [day] if "L" in day or "W" in day else []
    unbounded += [weekday] if "#" in weekday or re.search(r"\dL|^L$", weekday) else []
    if unbounded:
        raise ValueError(f"cron token {unbounded[0]!r} in {cadence!r} cannot be bounded by the operation's "
                         "dates; use numbers, ranges (1-5), lists (1,15) and steps (*/10)")
    try:
        cron = CronSim(word, dt.datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ValueError(f"invalid cron cadence {cadence!r}: {exc}") from None
    weekdays = {d % 7 for d in cron.weekdays}
    freq = "FREQ=MINUTELY" if len(cron.minutes) == 60 else "FREQ=HOURLY" if len(cron.hours) == 24 else "FREQ=DAILY"
    parts = [freq]
    if len(cron.minutes) < 60:
        parts.append("BYMINUTE=" + _numbers(cron.minutes))
    if len(cron.hours) < 24:
        parts.append("BYHOUR=" + _numbers(cron.hours))
    if len(cron.months) < 12:
        parts.append("BYMONTH=" + _numbers(cron.months))
    parts.append("BYSECOND=0")
    base = ";".join(parts)
    by_day = "BYMONTHDAY=" + _numbers(cron.days) if len(cron.days) < 31 else ""
    by_weekday = "BYDAY=" + ",".join(_RRULE_DAYS[d] for d in sorted(weekdays)) if len(weekdays) < 7 else ""
    if by_day and by_weekday and not cron.day_and:
        return [f"{base};{by_day}", f"{base};{by_weekday}"]
    return [";".join(filter(None, [base, by_day, by_weekday]))]


def _numbers(values: Iterable[int]) -> str:
    return ",".join(str(v) for v in sorted(values))


def rrule_text(starts_at: dt.datetime, ends_at: dt.datetime | None, timezone: str, cadence: str) -> str:
    """An RRule string from the operation's local start to its local end (both inclusive)."""
    zone = zoneinfo.ZoneInfo(timezone)
    until = f";UNTIL={local_minute(ends_at, zone):{_RRULE_TIME}}" if ends_at else ""
    lines = [f"DTSTART:{local_minute(starts_at, zone):{_RRULE_TIME}}"]
    lines += [f"RRULE:{rule}{until}" for rule in cadence_rules(cadence)]
    return "\n".join(lines)


def local_minute(moment: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """`moment` as a naive local time in `zone`, to the minute (naive input is taken as UTC)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)
    return aware.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
