"""Calendar spend periods in a time zone. Pure: no Flask, no database.

A period is a half-open UTC interval ``[start, end)`` whose ends are local midnights in the
limit's time zone: daily (midnight to midnight), weekly (ISO weeks, Monday 00:00) and
monthly (the 1st, 00:00). Local midnights are turned into instants with ``zoneinfo``; on a
day whose midnight does not exist (a DST jump at 00:00) the instant is the moment the clock
jumps, and the same instant ends one period and starts the next, so periods always tile.
"""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PERIODS = ("daily", "weekly", "monthly")
UTC = UTC


def zone(name: str) -> ZoneInfo:
    """The ``ZoneInfo`` for an IANA name. Raises ValueError for an unknown or malformed name."""
    if not isinstance(name, str) or not name or len(name) > 64:
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}; use an IANA name like UTC or Europe/Berlin") from None


def is_valid_timezone(name) -> bool:
    try:
        zone(name)
        return True
    except ValueError:
        return False


def _as_utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("naive datetime: pass an aware (UTC) datetime")
    return at.astimezone(UTC)


def local_midnight(day: date, tz: str) -> datetime:
    """The instant (UTC) at which ``day`` starts in ``tz``."""
    return datetime(day.year, day.month, day.day, tzinfo=zone(tz)).astimezone(UTC)


def local_date(at: datetime, tz: str) -> date:
    """The calendar date of instant ``at`` in ``tz``."""
    return _as_utc(at).astimezone(zone(tz)).date()


def _first_day(period: str, day: date) -> date:
    if period == "daily":
        return day
    if period == "weekly":
        return day - timedelta(days=day.weekday())  # ISO week: Monday
    if period == "monthly":
        return day.replace(day=1)
    raise ValueError(f"unknown period {period!r}; expected one of {', '.join(PERIODS)}")


def _next_first_day(period: str, first: date) -> date:
    if period == "daily":
        return first + timedelta(days=1)
    if period == "weekly":
        return first + timedelta(days=7)
    return date(first.year + (first.month == 12), first.month % 12 + 1, 1)


def period_bounds(period: str, tz: str, at: datetime) -> tuple[datetime, datetime]:
    """``(start, end)`` in UTC of the ``period`` in ``tz`` that contains instant ``at``.

    Raises ValueError for an unknown period or time zone, or a naive ``at``.
    """
    first = _first_day(period, local_date(at, tz))
    start, end = local_midnight(first, tz), local_midnight(_next_first_day(period, first), tz)
    at_utc = _as_utc(at)
    # A nonexistent local midnight maps to an instant after the wall-clock jump; an instant
    # in that gap belongs to the previous period.
    if at_utc < start:
        prev = _first_day(period, first - timedelta(days=1))
        start, end = local_midnight(prev, tz), start
    return start, end


def next_boundary(period: str, tz: str, at: datetime) -> datetime:
    """The first period boundary strictly after ``at`` (UTC)."""
    return period_bounds(period, tz, at)[1]


def day_starts(first: date, last: date, tz: str) -> list[tuple[date, datetime]]:
    """``[(day, its start instant in UTC), ...]`` for every day from ``first`` to ``last``."""
    out = []
    d = first
    while d <= last:
        out.append((d, local_midnight(d, tz)))
        d += timedelta(days=1)
    return out


def iso(dt: datetime | None) -> str | None:
    return _as_utc(dt).isoformat().replace("+00:00", "Z") if dt else None
