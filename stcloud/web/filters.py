"""Jinja filters and globals shared by every page."""
from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask, url_for
from markupsafe import Markup

from stcloud import timeutil


def money(value, digits: int = 2) -> str:
    if value is None:
        return "—"
    if 0 < abs(value) < 0.01:
        return f"${value:.4f}"
    return f"${value:,.{digits}f}"


def when(dt) -> str:
    """The one way a timestamp is shown on every page: ``2026-12-06 20:15:45 UTC``. Takes a
    datetime (naive = UTC) or an ISO-8601 string (as stored in JSON, e.g. snapshots)."""
    if not dt:  # None, "", or a missing key (jinja Undefined)
        return "—"
    if isinstance(dt, str):
        try:
            dt = datetime.fromisoformat(dt.replace("Z", "+00:00"))
        except ValueError:
            return dt
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(dt: datetime | None) -> str:
    return dt.isoformat().replace("+00:00", "Z") if dt else ""


duration = timeutil.duration_text


def bytes_h(n) -> str:
    if n is None:
        return "—"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


CHART_JS = "vendor/chart-4.5.1.umd.min.js"


def chart_js() -> Markup:
    """The Chart.js script tag, for the pages that draw charts (not loaded elsewhere)."""
    return Markup('<script src="%s" defer></script>') % url_for("static", filename=CHART_JS)


def init_app(app: Flask) -> None:
    app.jinja_env.filters.update(money=money, when=when, iso=iso, duration=duration, bytes=bytes_h)
    app.jinja_env.globals.update(chart_js=chart_js)
