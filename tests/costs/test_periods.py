"""Calendar periods in UTC and in other time zones (pure)."""
from __future__ import annotations

from datetime import timedelta

import pytest

from stcloud.costs import periods

from .conftest import at


@pytest.mark.parametrize("period, tz, instant, start, end", [
    # UTC
    ("daily", "UTC", "2025-06-15T13:00:00Z", "2025-06-15T00:00:00Z", "2025-06-16T00:00:00Z"),
    ("weekly", "UTC", "2025-06-15T13:00:00Z", "2025-06-09T00:00:00Z", "2025-06-16T00:00:00Z"),  # Sun -> Mon..Mon
    ("monthly", "UTC", "2025-06-15T13:00:00Z", "2025-06-01T00:00:00Z", "2025-07-01T00:00:00Z"),
    ("monthly", "UTC", "2025-12-31T23:59:59Z", "2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z"),
    ("monthly", "UTC", "2024-02-29T12:00:00Z", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"),
    # Los Angeles (PDT = UTC-7 in June, PST = UTC-8 in January)
    ("daily", "America/Los_Angeles", "2025-06-15T06:59:59Z", "2025-06-14T07:00:00Z", "2025-06-15T07:00:00Z"),
    ("daily", "America/Los_Angeles", "2025-06-15T07:00:00Z", "2025-06-15T07:00:00Z", "2025-06-16T07:00:00Z"),
    ("daily", "America/Los_Angeles", "2025-01-15T12:00:00Z", "2025-01-15T08:00:00Z", "2025-01-16T08:00:00Z"),
    # the day DST starts is 23 hours long, the day it ends 25 hours
    ("daily", "America/Los_Angeles", "2025-03-09T12:00:00Z", "2025-03-09T08:00:00Z", "2025-03-10T07:00:00Z"),
    ("daily", "America/Los_Angeles", "2025-11-02T12:00:00Z", "2025-11-02T07:00:00Z", "2025-11-03T08:00:00Z"),
    ("monthly", "America/Los_Angeles", "2025-07-01T03:00:00Z", "2025-06-01T07:00:00Z", "2025-07-01T07:00:00Z"),
    ("monthly", "America/Los_Angeles", "2025-03-20T00:00:00Z", "2025-03-01T08:00:00Z", "2025-04-01T07:00:00Z"),
    ("weekly", "America/Los_Angeles", "2025-06-16T06:00:00Z", "2025-06-09T07:00:00Z", "2025-06-16T07:00:00Z"),
    # Tokyo (UTC+9, no DST): Monday 00:00 JST is Sunday 15:00 UTC
    ("daily", "Asia/Tokyo", "2025-06-15T14:59:59Z", "2025-06-14T15:00:00Z", "2025-06-15T15:00:00Z"),
    ("daily", "Asia/Tokyo", "2025-06-15T15:00:00Z", "2025-06-15T15:00:00Z", "2025-06-16T15:00:00Z"),
    ("weekly", "Asia/Tokyo", "2025-06-15T16:00:00Z", "2025-06-15T15:00:00Z", "2025-06-22T15:00:00Z"),
    ("weekly", "Asia/Tokyo", "2025-06-15T14:00:00Z", "2025-06-08T15:00:00Z", "2025-06-15T15:00:00Z"),
    ("monthly", "Asia/Tokyo", "2025-06-30T15:30:00Z", "2025-06-30T15:00:00Z", "2025-07-31T15:00:00Z"),
    ("monthly", "Asia/Tokyo", "2025-12-31T15:00:00Z", "2025-12-31T15:00:00Z", "2026-01-31T15:00:00Z"),
])
def test_period_bounds(period, tz, instant, start, end):
    s, e = periods.period_bounds(period, tz, at(instant))
    assert (s, e) == (at(start), at(end))
    assert s <= at(instant) < e
    assert periods.next_boundary(period, tz, at(instant)) == at(end)


@pytest.mark.parametrize("tz", ["UTC", "America/Los_Angeles", "Asia/Tokyo", "America/Santiago", "Australia/Lord_Howe"])
@pytest.mark.parametrize("period", periods.PERIODS)
def test_periods_tile_across_a_year(period, tz):
    """Consecutive periods share their boundary: no gap, no overlap — through DST changes."""
    t = at("2025-01-01T12:00:00Z")
    start, end = periods.period_bounds(period, tz, t)
    for _ in range(60 if period == "daily" else 20):
        nxt_start, nxt_end = periods.period_bounds(period, tz, end)
        assert nxt_start == end and nxt_end > nxt_start
        just_before = periods.period_bounds(period, tz, end - timedelta(microseconds=1))
        assert just_before == (start, end)
        start, end = nxt_start, nxt_end


def test_local_date_and_midnight():
    assert periods.local_date(at("2025-06-15T15:00:00Z"), "Asia/Tokyo").isoformat() == "2025-06-16"
    assert periods.local_date(at("2025-06-15T06:00:00Z"), "America/Los_Angeles").isoformat() == "2025-06-14"
    assert periods.local_midnight(at("2025-06-16T00:00:00Z").date(), "Asia/Tokyo") == at("2025-06-15T15:00:00Z")


@pytest.mark.parametrize("bad", ["Mars/Olympus", "", "../etc/passwd", None, "UTC+5"])
def test_bad_timezone(bad):
    assert not periods.is_valid_timezone(bad)
    with pytest.raises(ValueError):
        periods.period_bounds("daily", bad, at("2025-01-01T00:00:00Z"))


def test_bad_period_and_naive_datetime():
    with pytest.raises(ValueError):
        periods.period_bounds("yearly", "UTC", at("2025-01-01T00:00:00Z"))
    with pytest.raises(ValueError):
        periods.period_bounds("daily", "UTC", at("2025-01-01T00:00:00Z").replace(tzinfo=None))
