"""What the REST-client commands print: JSON for scripts, and for people tables, bars,
durations, money and times formatted like the dashboard. No HTTP here."""
from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import click

from stcloud.timeutil import parse_iso
from stcloud.web.filters import bytes_h, duration, money

__all__ = ["bytes_h", "duration", "echo_json", "first_line", "is_tty", "money", "seconds_between", "table",
           "text_bar", "when"]


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2))


def is_tty(stream=None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def when(value) -> str:
    """An API timestamp as the dashboard shows it: ``2026-12-06 19:27:33 UTC``."""
    dt = parse_iso(value)
    return "—" if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds_between(start, end=None, now: datetime | None = None) -> float | None:
    """Seconds from ``start`` to ``end`` (API timestamps); to ``now`` while ``end`` is unset."""
    a = parse_iso(start)
    if a is None:
        return None
    b = parse_iso(end) or now or datetime.now(UTC)
    return max(0.0, (b - a).total_seconds())


def text_bar(fraction: float, width: int = 30) -> str:
    fraction = min(1.0, max(0.0, fraction))
    filled = round(width * fraction)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def table(headers: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    """Aligned columns (two spaces apart); the last column is not padded. Columns whose index
    is in ``right`` are right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    out = []
    for r in [headers, *rows]:
        cells = []
        for i, cell in enumerate(r):
            cell = str(cell)
            if i == len(r) - 1:
                cells.append(cell)
            else:
                cells.append(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]))
        out.append("  ".join(cells).rstrip())
    return out


def first_line(text: str | None, limit: int = 200) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"
