"""Schedules on the operations' dates: one RRule per operation on the run-operation deployment.

Every operation with a `starts_at` and a `cadence` gets a schedule from `starts_at` to `ends_at`
in its own timezone (RRule DTSTART/UNTIL, so a 09:00 run stays at 09:00 across daylight-saving
changes). The schedules live on one deployment (`run-operation/campflow`), each with the
slug `operation-<CODE>` and the parameters `{operation: CODE, scheduled: true}`, so one served
process or one worker pool runs them all and the deployment's page in the Prefect UI lists them in
one place (`campflow schedules show` prints what the database asks for).

`sync()` makes Prefect match the database. It reads the database and the deployment first, so
an unreachable server or a missing deployment changes nothing; then it creates the new schedules
in one request, updates the changed ones in place and deletes the others. It is idempotent: an
unchanged schedule is not written, and a sync cut short is finished by the next one.
"""

from __future__ import annotations

import datetime as dt
import os
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from campflow.core.cadence import local_minute, rrule_text
from campflow.errors import CampflowError
from campflow.store import db

DEPLOYMENT = "run-operation/campflow"
SLUG_PREFIX = "operation-"
DEFAULT_API_URL = "http://127.0.0.1:4200/api"


# ---------------------------------------------------------------- what the database wants


@dataclass(frozen=True)
class Wanted:
    """An operation's schedule as the database says it should be (rrule None: no schedule)."""

    operation: str
    rrule: str | None
    timezone: str
    reason: str  # why there is no schedule, or a reading of the one there is

    @property
    def slug(self) -> str:
        return slug_of(self.operation)

    @property
    def parameters(self) -> dict[str, Any]:
        return {"operation": self.operation, "scheduled": True}


def slug_of(operation: str) -> str:
    return f"{SLUG_PREFIX}{operation}"


def wanted_schedule(row: dict[str, Any], now: dt.datetime) -> Wanted:
    """The schedule one operation row calls for at `now` (reasons are shown to users)."""
    code, zone = row["code"], row["timezone"] or "UTC"
    none = lambda reason: Wanted(code, None, zone, reason)  # noqa: E731
    if row["is_template"]:
        return none("template")
    if not row["cadence"]:
        return none("no cadence")
    if not row["starts_at"]:
        return none("no starts_at")
    if row["final"]:
        return none(f"state {row['state']}")
    if row["ends_at"] and row["ends_at"] <= now:
        return none(f"ended {local_minute(row['ends_at'], zoneinfo.ZoneInfo(zone)):%Y-%m-%d %H:%M} {zone}")
    rule = rrule_text(row["starts_at"], row["ends_at"], zone, row["cadence"])
    local = zoneinfo.ZoneInfo(zone)
    until = f" to {local_minute(row['ends_at'], local):%Y-%m-%d %H:%M}" if row["ends_at"] else ""
    return Wanted(code, rule, zone, f"{row['cadence']} from {local_minute(row['starts_at'], local):%Y-%m-%d %H:%M}"
                                    f"{until} {zone}")


def wanted_schedules(codes: Sequence[str] | None = None, now: dt.datetime | None = None) -> list[Wanted]:
    """Every operation's wanted schedule (or only `codes`'), read in one query."""
    now = now or dt.datetime.now(dt.timezone.utc)
    sql = ("select o.code, o.timezone, o.cadence, o.starts_at, o.ends_at, o.state, o.is_template, "
           "o.state = 'finished' or exists (select 1 from state s where s.applies_to = 'operation' "
           "and s.code = o.state and s.final) as final from operation o")
    params: dict[str, Any] = {}
    if codes is not None:
        sql += " where o.code = any(:codes)"
        params["codes"] = list(codes)
    with db.engine().connect() as conn:
        rows = conn.execute(text(sql + " order by o.code"), params).mappings().all()
    return [wanted_schedule(dict(row), now) for row in rows]


# ---------------------------------------------------------------- what Prefect has, and the sync


@dataclass(frozen=True)
class Change:
    operation: str
    action: str  # created | updated | removed | unchanged | none
    detail: str


def plan_changes(wanted: Sequence[Wanted], existing: dict[str, tuple[str, str, dict[str, Any]]],
                 codes: Sequence[str] | None) -> list[Change]:
    """Compare wanted schedules with the deployment's campflow schedules (slug → rrule, tz, params).

    With `codes`, only those operations are considered; otherwise a schedule whose operation is
    gone from the database is removed too.
    """
    changes = []
    seen = set()
    for want in wanted:
        seen.add(want.slug)
        have = existing.get(want.slug)
        if want.rrule is None:
            changes.append(Change(want.operation, "removed" if have else "none", want.reason))
        elif have is None:
            changes.append(Change(want.operation, "created", want.reason))
        elif have != (want.rrule, want.timezone, want.parameters):
            changes.append(Change(want.operation, "updated", want.reason))
        else:
            changes.append(Change(want.operation, "unchanged", want.reason))
    for slug in sorted(set(existing) - seen):
        code = slug.removeprefix(SLUG_PREFIX)
        if codes is None or code in codes:
            changes.append(Change(code, "removed", "operation deleted"))
    return changes


def api_url() -> str:
    """The Prefect API campflow talks to: PREFECT_API_URL, else the local server when it runs
    (campflow.orchestration.local_server), else the one `campflow server` starts."""
    from prefect.settings import PREFECT_API_URL

    from campflow.orchestration.local_server import running_api

    return PREFECT_API_URL.value() or running_api() or DEFAULT_API_URL


def sync(codes: Sequence[str] | None = None, *, deployment: str = DEPLOYMENT,
         now: dt.datetime | None = None, check_only: bool = False) -> list[Change]:
    """Make the deployment's operation schedules match the database (all, or only `codes`)."""
    wanted = wanted_schedules(codes, now)
    return _sync(wanted, codes, deployment, check_only)


def _sync(wanted: list[Wanted], codes: Sequence[str] | None, deployment: str, check_only: bool) -> list[Change]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import RRuleSchedule
    from prefect.exceptions import ObjectNotFound

    url = api_url()
    with _client(get_client, url) as client:
        problem = client.api_healthcheck()
        if problem is not None:
            raise CampflowError(f"the Prefect server at {url} is unreachable ({_short(problem)}); start it "
                                "with `campflow server` or set PREFECT_API_URL; no schedule was changed")
        try:
            found = client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise CampflowError(f"the Prefect server at {url} has no deployment {deployment}; create it with "
                                "`prefect deploy --all` or `campflow serve`; no schedule was changed") from None
        existing = {s.slug: (s.schedule.rrule, s.schedule.timezone, s.parameters)
                    for s in found.schedules
                    if s.slug and s.slug.startswith(SLUG_PREFIX) and isinstance(s.schedule, RRuleSchedule)}
        changes = plan_changes(wanted, existing, codes)
        if check_only or all(c.action in ("unchanged", "none") for c in changes):
            return changes
        by_slug = {w.slug: w for w in wanted if w.rrule}
        ids = {s.slug: s.id for s in found.schedules}
        fresh = [by_slug[slug_of(c.operation)] for c in changes if c.action == "created"]
        if fresh:  # one request: all created or none
            client.create_deployment_schedules(found.id, [DeploymentScheduleCreate(
                schedule=RRuleSchedule(rrule=w.rrule, timezone=w.timezone), active=True, parameters=w.parameters,
                slug=w.slug) for w in fresh])
        for change in changes:
            slug = slug_of(change.operation)
            if change.action == "updated":
                want = by_slug[slug]
                client.update_deployment_schedule(found.id, ids[slug], active=True, parameters=want.parameters,
                                                  schedule=RRuleSchedule(rrule=want.rrule, timezone=want.timezone))
            elif change.action == "removed":
                client.delete_deployment_schedule(found.id, ids[slug])  # its scheduled runs go with it
    return changes


def _client(get_client, url: str):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        return get_client(sync_client=True)
    with temporary_settings(updates={PREFECT_API_URL: url}):
        return get_client(sync_client=True)


def _short(problem: BaseException) -> str:
    return str(problem).splitlines()[0][:200] if str(problem) else type(problem).__name__


def configured() -> bool:
    """Whether the user pointed campflow at a Prefect server (environment or Prefect profile);
    then `campflow apply` syncs the schedules of the operations it wrote."""
    from prefect.context import get_settings_context
    from prefect.settings import PREFECT_API_URL

    profile = get_settings_context().profile.settings
    return bool(os.environ.get("PREFECT_API_URL") or profile.get(PREFECT_API_URL))


def after_apply(codes: Sequence[str], *, inside_flow: bool = False) -> list[tuple[str, str]]:
    """What applying these operations means for their schedules, as (level, message) lines.

    An operation whose end is already past gets no schedule and a warning. When a Prefect
    server is configured (or inside a flow run), the operations' schedules are synced; a server
    that cannot be reached leaves the schedules unchanged, with a warning saying what to run.
    """
    if not codes:
        return []
    wanted = wanted_schedules(codes)
    lines = [("warning", f"{w.operation} {w.reason}: no schedule; change ends_at to run it on a schedule")
             for w in wanted if w.reason.startswith("ended")]
    if not (inside_flow or configured()):
        return lines
    try:
        changes = sync(codes)
    except CampflowError as exc:
        return lines + [("warning", f"schedules not synced: {exc}; run `campflow schedules sync` later")]
    return lines + [("info", f"{c.operation}: schedule {c.action} ({c.detail})")
                    for c in changes if c.action not in ("unchanged", "none")]
