"""Schedules on operation dates: RRule generation (window, timezone, DST, cadences) and what
applying a spec says about them. Syncing against a real Prefect server is in test_served.py."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from prefect.server.schemas.schedules import RRuleSchedule

from campflow.core.cadence import cadence_rules, rrule_text
from campflow.orchestration import schedules

PARIS = zoneinfo.ZoneInfo("Europe/Paris")
UTC = dt.timezone.utc


def run_times(rule: str, timezone: str, n: int = 500) -> list[dt.datetime]:
    """The run times Prefect's scheduler derives from the rule (the server's own code)."""
    import asyncio

    dates = RRuleSchedule(rrule=rule, timezone=timezone).get_dates(
        n=n, start=dt.datetime(2020, 1, 1, tzinfo=UTC), end=dt.datetime(2030, 1, 1, tzinfo=UTC))
    return list(asyncio.run(dates) if asyncio.iscoroutine(dates) else dates)


def paris(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=PARIS)


class TestWindow:
    def test_runs_start_at_starts_at_and_stop_at_ends_at(self):
        rule = rrule_text(paris(2026, 3, 2, 9, 0), paris(2026, 3, 4, 18, 0), "Europe/Paris", "daily")
        assert rule == "DTSTART:20260302T090000\nRRULE:FREQ=DAILY;UNTIL=20260304T180000"
        assert [t.astimezone(PARIS) for t in run_times(rule, "Europe/Paris")] == [
            paris(2026, 3, 2, 9), paris(2026, 3, 3, 9), paris(2026, 3, 4, 9)]

    def test_hourly_stops_at_the_end_inclusive(self):
        rule = rrule_text(paris(2026, 3, 2, 9, 0), paris(2026, 3, 2, 12, 0), "Europe/Paris", "hourly")
        assert [t.astimezone(PARIS).hour for t in run_times(rule, "Europe/Paris")] == [9, 10, 11, 12]

    def test_no_end_means_no_until(self):
        rule = rrule_text(paris(2026, 3, 2, 9, 0), None, "Europe/Paris", "weekly")
        assert rule == "DTSTART:20260302T090000\nRRULE:FREQ=WEEKLY"
        assert len(run_times(rule, "Europe/Paris", n=10)) == 10

    def test_dates_are_read_in_the_operation_timezone(self):
        # stored in UTC, 08:00 UTC is 09:00 in Paris in winter and 17:00 in Tokyo
        start, end = dt.datetime(2026, 1, 5, 8, 0, tzinfo=UTC), dt.datetime(2026, 1, 6, 8, 0, tzinfo=UTC)
        assert rrule_text(start, end, "Europe/Paris", "daily").startswith("DTSTART:20260105T090000")
        assert rrule_text(start, end, "Asia/Tokyo", "daily").startswith("DTSTART:20260105T170000")
        times = run_times(rrule_text(start, end, "Asia/Tokyo", "daily"), "Asia/Tokyo")
        assert [t.astimezone(UTC) for t in times] == [start, end]


class TestDaylightSaving:
    def test_a_daily_run_stays_at_nine_across_the_spring_change(self):
        # Paris moves from UTC+1 to UTC+2 on 2026-03-29
        rule = rrule_text(paris(2026, 3, 27, 9, 0), paris(2026, 3, 31, 9, 0), "Europe/Paris", "daily")
        times = run_times(rule, "Europe/Paris")
        assert [t.astimezone(PARIS).strftime("%d %H:%M") for t in times] == [
            "27 09:00", "28 09:00", "29 09:00", "30 09:00", "31 09:00"]
        assert [t.astimezone(UTC).hour for t in times] == [8, 8, 7, 7, 7]

    def test_a_cron_cadence_follows_local_time_across_the_autumn_change(self):
        # back to UTC+1 on 2026-10-25
        rule = rrule_text(paris(2026, 10, 23, 0, 0), paris(2026, 10, 27, 23, 0), "Europe/Paris", "30 8 * * *")
        times = run_times(rule, "Europe/Paris")
        assert {t.astimezone(PARIS).strftime("%H:%M") for t in times} == {"08:30"}
        assert [t.astimezone(UTC).hour for t in times] == [6, 6, 7, 7, 7]

    def test_hourly_over_the_missing_hour_gives_distinct_runs(self):
        rule = rrule_text(paris(2026, 3, 29, 0, 0), paris(2026, 3, 29, 5, 0), "Europe/Paris", "hourly")
        times = [t.astimezone(UTC) for t in run_times(rule, "Europe/Paris")]
        assert len(set(times)) == len(times)
        assert times[0] == dt.datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
        assert times[-1] == dt.datetime(2026, 3, 29, 3, 0, tzinfo=UTC)


class TestCadences:
    @pytest.mark.parametrize(("cadence", "rules"), [
        ("hourly", ["FREQ=HOURLY"]),
        ("monthly", ["FREQ=MONTHLY"]),
        ("* * * * *", ["FREQ=MINUTELY;BYSECOND=0"]),
        ("0 * * * *", ["FREQ=HOURLY;BYMINUTE=0;BYSECOND=0"]),
        ("*/15 9-17 * * 1-5", ["FREQ=DAILY;BYMINUTE=0,15,30,45;BYHOUR=9,10,11,12,13,14,15,16,17;BYSECOND=0;"
                               "BYDAY=MO,TU,WE,TH,FR"]),
        ("0 9 * jul sun", ["FREQ=DAILY;BYMINUTE=0;BYHOUR=9;BYMONTH=7;BYSECOND=0;BYDAY=SU"]),
        ("0 9 1 * 1", ["FREQ=DAILY;BYMINUTE=0;BYHOUR=9;BYSECOND=0;BYMONTHDAY=1",
                       "FREQ=DAILY;BYMINUTE=0;BYHOUR=9;BYSECOND=0;BYDAY=MO"]),
    ])
    def test_cadence_rules(self, cadence, rules):
        assert cadence_rules(cadence) == rules

    def test_day_of_month_or_weekday_as_cron_means(self):
        rule = rrule_text(paris(2026, 6, 1, 0, 0), paris(2026, 6, 30, 23, 0), "Europe/Paris", "0 9 1,15 * 1")
        days = [t.astimezone(PARIS).day for t in run_times(rule, "Europe/Paris")]
        assert days == [1, 8, 15, 22, 29]  # the 1st and 15th, and every Monday (1 June is a Monday)

    def test_a_cron_cadence_runs_on_its_times_within_the_window(self):
        rule = rrule_text(paris(2026, 6, 1, 10, 7), paris(2026, 6, 1, 11, 0), "Europe/Paris", "*/20 * * * *")
        assert [t.astimezone(PARIS).strftime("%H:%M") for t in run_times(rule, "Europe/Paris")] == [
            "10:20", "10:40", "11:00"]

    @pytest.mark.parametrize(("cadence", "message"), [
        ("every day", "must be one of hourly, daily, weekly, monthly or a cron line"),
        ("61 * * * *", "invalid cron cadence '61 * * * *'"),
        ("0 9 L * *", "cron token 'L'"),
        ("0 9 * * 1#2", "cron token '1#2'"),
        ("0 9 15W * *", "cron token '15W'"),
    ])
    def test_cadences_rrule_cannot_express_are_refused(self, cadence, message):
        with pytest.raises(ValueError, match="^" + message.replace("*", r"\*")):
            cadence_rules(cadence)


def row(**values):
    base = {"code": "OP", "timezone": "Europe/Paris", "cadence": "daily", "starts_at": paris(2026, 3, 1, 9),
            "ends_at": paris(2026, 3, 31, 18), "state": "in_progress", "is_template": False, "final": False}
    return base | values


class TestWantedSchedule:
    NOW = paris(2026, 3, 10, 12)

    def test_an_operation_with_dates_and_cadence_gets_a_schedule(self):
        wanted = schedules.wanted_schedule(row(), self.NOW)
        assert wanted.rrule == "DTSTART:20260301T090000\nRRULE:FREQ=DAILY;UNTIL=20260331T180000"
        assert (wanted.slug, wanted.parameters) == ("operation-OP", {"operation": "OP", "scheduled": True})
        assert wanted.reason == "daily from 2026-03-01 09:00 to 2026-03-31 18:00 Europe/Paris"

    @pytest.mark.parametrize(("values", "reason"), [
        ({"cadence": None}, "no cadence"),
        ({"starts_at": None}, "no starts_at"),
        ({"is_template": True}, "template"),
        ({"state": "finished", "final": True}, "state finished"),
        ({"ends_at": paris(2026, 3, 9, 18)}, "ended 2026-03-09 18:00 Europe/Paris"),
    ])
    def test_no_schedule(self, values, reason):
        wanted = schedules.wanted_schedule(row(**values), self.NOW)
        assert (wanted.rrule, wanted.reason) == (None, reason)

    def test_a_cadence_change_changes_the_rule(self):
        daily = schedules.wanted_schedule(row(), self.NOW)
        hourly = schedules.wanted_schedule(row(cadence="hourly"), self.NOW)
        existing = {daily.slug: (daily.rrule, daily.timezone, daily.parameters)}
        assert [c.action for c in schedules.plan_changes([hourly], existing, None)] == ["updated"]
        assert [c.action for c in schedules.plan_changes([daily], existing, None)] == ["unchanged"]

    def test_plan_removes_schedules_of_deleted_operations_only_in_a_full_sync(self):
        existing = {"operation-GONE": ("DTSTART:20260301T090000\nRRULE:FREQ=DAILY", "UTC", {})}
        assert [(c.operation, c.action) for c in schedules.plan_changes([], existing, None)] == [("GONE", "removed")]
        assert schedules.plan_changes([], existing, ["OTHER"]) == []


SPEC = """kind: Operation
code: {code}
label: Scheduled
timezone: {tz}
starts_at: 2026-03-01T09:00
ends_at: {end}
cadence: "{cadence}"
"""


class TestApply:
    def test_applying_an_operation_already_ended_warns_and_schedules_nothing(self, database, cli, tmp_path,
                                                                            monkeypatch):
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
        spec = tmp_path / "op.yaml"
        spec.write_text(SPEC.format(code="OLD", tz="Europe/Paris", end="2026-03-02T18:00", cadence="daily"))
        result = cli("apply", spec)
        assert result.code == 0, result.err
        assert "warning: OLD ended 2026-03-02 18:00 Europe/Paris: no schedule" in result.err
        shown = cli("schedules", "show", "OLD", "--json")
        assert '"rrule": null' in shown.out

    @pytest.mark.parametrize(("tz", "cadence", "message"), [
        ("Europe/Pariss", "daily", "op.yaml:4: timezone: unknown timezone 'Europe/Pariss'; use an IANA name like Europe/Paris"),
        ("Europe/Paris", "every day", "op.yaml:7: cadence: must be one of hourly, daily, weekly, monthly or a cron"),
        ("Europe/Paris", "0 25 * * *", "op.yaml:7: cadence: invalid cron cadence '0 25 * * *': Bad hour"),
    ])
    def test_a_bad_timezone_or_cadence_is_refused_with_its_line(self, database, cli, tmp_path, tz, cadence,
                                                                message):
        spec = tmp_path / "op.yaml"
        spec.write_text(SPEC.format(code="BAD", tz=tz, end="2026-03-31T18:00", cadence=cadence))
        result = cli("apply", spec)
        assert result.code == 1
        assert message in result.err.replace("\n", " ")
        assert cli("ops", "show", "BAD").code == 1
