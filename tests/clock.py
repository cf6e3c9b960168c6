"""Moving the product's clock (``timeutil.set_clock``) in tests."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta


@contextmanager
def running_past(iso_moment: str, by: timedelta = timedelta(minutes=1)) -> Iterator[None]:
    """The clock jumps to ``by`` after ``iso_moment`` (``...Z``, e.g. a period's end) and runs on
    from there at real speed; the real clock comes back on exit."""
    from stcloud import timeutil

    target = datetime.fromisoformat(iso_moment.replace("Z", "+00:00")).astimezone(UTC) + by
    start = datetime.now(UTC)
    timeutil.set_clock(lambda: target + (datetime.now(UTC) - start))
    try:
        yield
    finally:
        timeutil.set_clock(None)
