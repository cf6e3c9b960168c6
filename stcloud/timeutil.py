"""ISO-8601 timestamps as the APIs we talk to write them (``...Z``), the clock, and durations
as people read them. Pure."""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

_clock: Callable[[], datetime] | None = None


def now() -> datetime:
    """The current UTC time: ``models.utcnow`` and the spend periods read it. Tests move it
    with ``set_clock`` (e.g. to the next budget period); production never sets a clock."""
    return _clock() if _clock is not None else datetime.now(UTC)


def set_clock(clock: Callable[[], datetime] | None) -> None:
    """Replace the clock (a function returning an aware datetime); None restores the real one."""
    global _clock
    _clock = clock


def parse_iso(value) -> datetime | None:
    """An aware UTC-or-offset datetime, or None for empty/unparseable values; naive values
    are taken as UTC."""
    if not value:
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def iso_z(dt: datetime | None) -> str | None:
    """``2026-01-02T03:04:05.123456Z`` (UTC), or None."""
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def duration_text(seconds) -> str:
    """``1h 05m``, ``4m 07s``, ``9s``; ``—`` for None (the pages and the notifications)."""
    if seconds is None:
        return "—"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s}s")
