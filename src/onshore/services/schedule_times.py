"""When a schedule runs: the next time after t of a cron expression (in its time zone) or a period; pure."""

from __future__ import annotations

import calendar
import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from onshore.errors import InvalidArgument, quoted
from onshore.models import ScheduleSpec

# crontab's nicknames (@reboot has no meaning for a server-side schedule).
_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MIN_PERIOD_SECONDS = 1.0  # the scheduler looks at its schedules about once a second
MAX_PERIOD_YEARS = 100
_MAX_CRON_CHARS = 200
_MAX_ZONE_CHARS = 64
_MAX_CRON_STEPS = 1000
# Bounds on a month's length, for the search of a period's next occurrence.
_MONTH_MIN_DAYS, _MONTH_MAX_DAYS = 28, 31


def _expression(cron: str) -> str:
    """The five-field expression a cron string means (nicknames expanded), or InvalidArgument."""
    text = cron.strip()
    if len(text) > _MAX_CRON_CHARS:
        raise InvalidArgument(f"Invalid cron string {quoted(cron)}: longer than {_MAX_CRON_CHARS} characters")
    text = _NICKNAMES.get(text.lower(), text)
    fields = text.split()
    if len(fields) != 5:
        raise InvalidArgument(
            f"Invalid cron string {quoted(cron)}: a cron string has five fields (minute hour day-of-month "
            f"month day-of-week), e.g. '0 9 * * 1-5'; this one has {len(fields)}"
        )
    return " ".join(fields)


def zone(name: str) -> ZoneInfo:
    """The time zone an IANA name means ("" is UTC), or InvalidArgument."""
    if not name:
        return ZoneInfo("UTC")
    bad = InvalidArgument(
        f"Unknown timezone {quoted(name)}: use an IANA time zone name such as 'UTC' or 'America/New_York'"
    )
    if len(name) > _MAX_ZONE_CHARS or name.startswith("/") or ".." in name:
        raise bad
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError, UnicodeError):
        raise bad from None


def _period_parts(spec: ScheduleSpec) -> tuple[int, int, float]:
    """(months, days, seconds) of one period."""
    months = spec.years * 12 + spec.months
    days = spec.weeks * 7 + spec.days
    seconds = spec.hours * 3600 + spec.minutes * 60 + spec.seconds
    return months, days, seconds


def validate(spec: ScheduleSpec) -> None:
    """InvalidArgument naming what is wrong with a schedule, if anything is."""
    if spec.kind == "cron":
        expression = _expression(spec.cron)
        tz = zone(spec.timezone)
        try:
            next(iter(CronSim(expression, datetime.now(tz))))
        except (CronSimError, StopIteration) as exc:
            raise InvalidArgument(
                f"Invalid cron string {quoted(spec.cron)}: {exc or 'it never fires'}"
            ) from None
        return
    units = {
        "years": spec.years,
        "months": spec.months,
        "weeks": spec.weeks,
        "days": spec.days,
        "hours": spec.hours,
        "minutes": spec.minutes,
        "seconds": spec.seconds,
    }
    if not math.isfinite(spec.seconds):
        raise InvalidArgument(f"Invalid Period: seconds={spec.seconds} is not a number of seconds")
    negative = [f"{k}={v:g}" for k, v in units.items() if v < 0]
    if negative:
        raise InvalidArgument(f"Invalid Period: {', '.join(negative)}: a period cannot be negative")
    months, days, seconds = _period_parts(spec)
    if months == 0 and days == 0 and seconds == 0:
        raise InvalidArgument("Invalid Period: every unit is zero; give a period such as Period(hours=1)")
    length = months * _MONTH_MIN_DAYS * 86400 + days * 86400 + seconds
    if length < MIN_PERIOD_SECONDS:
        raise InvalidArgument(
            f"Period of {length:g} seconds is too short: Onshore runs schedules at most once a second"
        )
    if months > MAX_PERIOD_YEARS * 12 or length > MAX_PERIOD_YEARS * 366 * 86400:
        raise InvalidArgument(f"Period is too long: at most {MAX_PERIOD_YEARS} years")


def _add_months(moment: datetime, months: int) -> datetime:
    """The same day and time `months` later, the day clamped to the target month's last day."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def _occurrence(spec: ScheduleSpec, anchor: float, n: int) -> float:
    """The period's n-th run: n periods after the anchor, as relativedelta(periods) * n would add them."""
    months, days, seconds = _period_parts(spec)
    moment = datetime.fromtimestamp(anchor, UTC)
    if months:
        moment = _add_months(moment, n * months)
    return (moment + timedelta(days=n * days, seconds=n * seconds)).timestamp()


def _next_period(spec: ScheduleSpec, anchor: float, t: float) -> float:
    """The first run after t: anchor + n periods for the least n >= 1 past t."""
    if t < anchor:
        return _occurrence(spec, anchor, 1)
    months, days, seconds = _period_parts(spec)
    shortest = months * _MONTH_MIN_DAYS * 86400 + days * 86400 + seconds
    longest = months * _MONTH_MAX_DAYS * 86400 + days * 86400 + seconds
    # occurrence(n) grows with n: search between the counts the shortest and longest months allow.
    low = max(1, int((t - anchor) // longest))
    high = max(low, int((t - anchor) // shortest) + 2)
    while _occurrence(spec, anchor, high) <= t:  # float rounding: never assume the bound holds
        high *= 2
    while low < high:
        mid = (low + high) // 2
        if _occurrence(spec, anchor, mid) > t:
            high = mid
        else:
            low = mid + 1
    return _occurrence(spec, anchor, low)


def _next_cron(spec: ScheduleSpec, t: float) -> float:
    tz = zone(spec.timezone)
    # cron's resolution is a minute: start from t's whole second, so a run at t itself is not repeated.
    start = datetime.fromtimestamp(math.floor(t), tz)
    runs = iter(CronSim(_expression(spec.cron), start))
    for _ in range(_MAX_CRON_STEPS):
        # In the second pass through a repeated (autumn) hour, cronsim may answer the first pass's time,
        # which lies before t: a fixed-time job runs once in that hour, as cron runs it.
        when = next(runs).timestamp()
        if when > t:
            return when
    raise InvalidArgument(f"Cron string {quoted(spec.cron)} finds no run after {start.isoformat()}")


def next_after(spec: ScheduleSpec, anchor: float, t: float) -> float:
    """When the schedule runs next after t (a UNIX time); anchor: when a period counts from."""
    if spec.kind == "cron":
        return _next_cron(spec, t)
    return _next_period(spec, anchor, t)


def describe(spec: ScheduleSpec) -> str:
    """A schedule as `modal app info` prints one: "0 9 * * * (Europe/Paris)", "Every 1 hour, 30 minutes"."""
    if spec.kind == "cron":
        return f"{spec.cron} ({spec.timezone or 'UTC'})"
    units = [
        ("years", spec.years),
        ("months", spec.months),
        ("weeks", spec.weeks),
        ("days", spec.days),
        ("hours", spec.hours),
        ("minutes", spec.minutes),
        ("seconds", spec.seconds),
    ]
    parts = [f"{value:g} {name.removesuffix('s') if value == 1 else name}" for name, value in units if value]
    return "Every " + ", ".join(parts)
