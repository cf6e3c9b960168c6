"""Jinja filters and globals shared by every page."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Flask


def money(value, digits: int = 2) -> str:
    if value is None:
        return "—"
    if 0 < abs(value) < 0.01:
        return f"${value:.4f}"
    return f"${value:,.{digits}f}"


def when(dt: datetime | None) -> str:
    if dt is None:
        return "—"
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(dt: datetime | None) -> str:
    return dt.isoformat().replace("+00:00", "Z") if dt else ""


def duration(seconds) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s}s")


def bytes_h(n) -> str:
    if n is None:
        return "—"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def init_app(app: Flask) -> None:
    app.jinja_env.filters.update(money=money, when=when, iso=iso, duration=duration, bytes=bytes_h)
