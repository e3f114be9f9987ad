"""When schedules run: cron strings in time zones (DST included), periods in calendar units, refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from onshore.errors import InvalidArgument
from onshore.models import ScheduleSpec
from onshore.services.schedule_times import describe, next_after, validate


def _ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def cron(expression: str, timezone: str = "") -> ScheduleSpec:
    return ScheduleSpec(kind="cron", cron=expression, timezone=timezone)


@pytest.mark.parametrize(
    ("spec", "after", "expected"),
    [
        # Every minute: the next whole minute; a run at t itself is not repeated; sub-seconds do not matter.
        (cron("* * * * *"), _ts(2024, 1, 1, 12, 0, 30), "2024-01-01 12:01:00"),
        (cron("* * * * *"), _ts(2024, 1, 1, 12, 1, 0), "2024-01-01 12:02:00"),
        (cron("* * * * *"), _ts(2024, 1, 1, 12, 1, 0) + 0.4, "2024-01-01 12:02:00"),
        (cron("5 4 * * *"), _ts(2024, 1, 1, 12, 0), "2024-01-02 04:05:00"),
        (cron("0 9 * * 1-5"), _ts(2024, 1, 5, 10, 0), "2024-01-08 09:00:00"),  # Friday -> Monday
        (cron("@hourly"), _ts(2024, 1, 1, 12, 0, 1), "2024-01-01 13:00:00"),
        (cron("@daily"), _ts(2024, 1, 1, 12, 0), "2024-01-02 00:00:00"),
        # 6 am in New York: 11:00 UTC in winter, 10:00 UTC in summer.
        (cron("0 6 * * *", "America/New_York"), _ts(2024, 1, 15, 12, 0), "2024-01-16 11:00:00"),
        (cron("0 6 * * *", "America/New_York"), _ts(2024, 7, 15, 12, 0), "2024-07-16 10:00:00"),
        (cron("0 9 * * *", "Asia/Tokyo"), _ts(2024, 1, 1, 0, 30), "2024-01-02 00:00:00"),
        # Spring forward (2024-03-10, 02:00 -> 03:00 in New York): 02:30 does not exist that day; it runs at
        # 03:00 EDT instead, then at 02:30 local again the next day.
        (cron("30 2 * * *", "America/New_York"), _ts(2024, 3, 9, 12, 0), "2024-03-10 07:00:00"),
        (cron("30 2 * * *", "America/New_York"), _ts(2024, 3, 10, 7, 0), "2024-03-11 06:30:00"),
        # Fall back (2024-11-03, 02:00 -> 01:00): 01:30 happens twice; a fixed-time job runs once, in the
        # first pass (05:30 UTC), even when asked from inside the second pass.
        (cron("30 1 * * *", "America/New_York"), _ts(2024, 11, 3, 4, 0), "2024-11-03 05:30:00"),
        (cron("30 1 * * *", "America/New_York"), _ts(2024, 11, 3, 5, 30), "2024-11-04 06:30:00"),
        (cron("30 1 * * *", "America/New_York"), _ts(2024, 11, 3, 6, 10), "2024-11-04 06:30:00"),
        # An hourly job keeps running every real hour through the repeated one.
        (cron("0 * * * *", "America/New_York"), _ts(2024, 11, 3, 5, 10), "2024-11-03 06:00:00"),
        (cron("0 * * * *", "America/New_York"), _ts(2024, 11, 3, 6, 10), "2024-11-03 07:00:00"),
    ],
)
def test_cron_next_run(spec: ScheduleSpec, after: float, expected: str) -> None:
    validate(spec)
    assert _utc(next_after(spec, 0.0, after)) == expected


ANCHOR = _ts(2024, 1, 31, 10, 0)


@pytest.mark.parametrize(
    ("spec", "after", "expected"),
    [
        # The first run is one period after the anchor (the deployment), never at it.
        (ScheduleSpec(seconds=1), ANCHOR, "2024-01-31 10:00:01"),
        (ScheduleSpec(seconds=1), ANCHOR - 50, "2024-01-31 10:00:01"),
        (ScheduleSpec(seconds=1), ANCHOR + 1000.5, "2024-01-31 10:16:41"),
        (ScheduleSpec(hours=4), ANCHOR + 5 * 3600, "2024-01-31 18:00:00"),
        (ScheduleSpec(hours=1, minutes=30), ANCHOR + 3600, "2024-01-31 11:30:00"),
        (ScheduleSpec(days=1), ANCHOR + 86400, "2024-02-02 10:00:00"),
        (ScheduleSpec(weeks=1), ANCHOR, "2024-02-07 10:00:00"),
        # Months count from the anchor: the 31st clamps to each month's last day and comes back to the 31st.
        (ScheduleSpec(months=1), ANCHOR, "2024-02-29 10:00:00"),
        (ScheduleSpec(months=1), _ts(2024, 2, 29, 10, 0), "2024-03-31 10:00:00"),
        (ScheduleSpec(months=1), _ts(2024, 3, 31, 10, 0), "2024-04-30 10:00:00"),
        (ScheduleSpec(months=1), _ts(2026, 6, 15), "2026-06-30 10:00:00"),
        (ScheduleSpec(months=1, days=1), ANCHOR, "2024-03-01 10:00:00"),
        (ScheduleSpec(years=1), _ts(2024, 6, 1), "2025-01-31 10:00:00"),
        (ScheduleSpec(years=1), _ts(2024, 2, 29), "2025-01-31 10:00:00"),
    ],
)
def test_period_next_run(spec: ScheduleSpec, after: float, expected: str) -> None:
    validate(spec)
    assert _utc(next_after(spec, ANCHOR, after)) == expected


def test_a_leap_day_anchor_clamps_in_other_years() -> None:
    leap = _ts(2024, 2, 29, 0, 0)
    assert _utc(next_after(ScheduleSpec(years=1), leap, leap)) == "2025-02-28 00:00:00"
    assert _utc(next_after(ScheduleSpec(years=1), leap, _ts(2027, 6, 1))) == "2028-02-29 00:00:00"


def test_a_long_way_from_the_anchor_is_found_without_walking_every_period() -> None:
    spec = ScheduleSpec(seconds=1.5)
    t = ANCHOR + 10 * 365 * 86400 + 0.7
    run = next_after(spec, ANCHOR, t)
    assert t < run <= t + 1.5
    monthly = ScheduleSpec(months=1)
    assert _utc(next_after(monthly, ANCHOR, _ts(2099, 12, 31, 12))) == "2100-01-31 10:00:00"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (cron("61 * * * *"), r"Invalid cron string '61 \* \* \* \*': Bad minute"),
        (cron("* * *"), "a cron string has five fields.*this one has 3"),
        (cron("* * * * * *"), "this one has 6"),
        (cron(""), "this one has 0"),
        (cron("@reboot"), "five fields"),
        (cron("0 0 30 2 *"), "Invalid cron string"),
        (cron("* * * * *", "Mars/Olympus_Mons"), "Unknown timezone 'Mars/Olympus_Mons'"),
        (cron("* * * * *", "America"), "Unknown timezone 'America'"),
        (cron("* * * * *", "../../etc/passwd"), "Unknown timezone"),
        (cron("* * * * *", "/etc/localtime"), "Unknown timezone"),
        (ScheduleSpec(), "every unit is zero"),
        (ScheduleSpec(hours=-1), "hours=-1: a period cannot be negative"),
        (ScheduleSpec(seconds=0.5), "too short"),
        (ScheduleSpec(seconds=float("nan")), "not a number"),
        (ScheduleSpec(seconds=float("inf")), "not a number"),
        (ScheduleSpec(years=101), "too long"),
    ],
)
def test_bad_schedules_are_refused_with_what_is_wrong(spec: ScheduleSpec, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        validate(spec)


def test_descriptions_read_like_the_clients() -> None:
    assert describe(cron("0 9 * * *", "Europe/Paris")) == "0 9 * * * (Europe/Paris)"
    assert describe(cron("* * * * *")) == "* * * * * (UTC)"
    assert describe(ScheduleSpec(seconds=1)) == "Every 1 second"
    assert describe(ScheduleSpec(hours=1, minutes=30)) == "Every 1 hour, 30 minutes"
