"""Shared by the benchmarks: interleaved timing and the table of ratios ``python -m bench``
prints at the end."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Row:
    bench: str
    what: str
    ours: float  # median
    peer: float  # median, measured in the same run
    unit: str
    ours_min: float | None = None
    peer_min: float | None = None
    higher_is_better: bool = False
    goal: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float:
        """ours/peer for times, ours/peer for rates (read with ``higher_is_better``)."""
        return self.ours / self.peer if self.peer else float("inf")


ROWS: list[Row] = []  # every benchmark appends here; ``python -m bench`` prints them


def interleaved(pairs: dict[str, tuple[Callable[[], object], Callable[[], object]]], rounds: int,
                per_round: int) -> dict[str, tuple[list[float], list[float]]]:
    """Time each (ours, peer) pair alternately: ``rounds`` × (``per_round`` calls of ours, then of
    peer), all cases in turn each round, so drift on a shared machine hits both alike.
    Returns milliseconds per call for each side."""
    out = {name: ([], []) for name in pairs}
    for _ in range(rounds):
        for name, (ours, peer) in pairs.items():
            for side, fn in ((0, ours), (1, peer)):
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    fn()
                    out[name][side].append((time.perf_counter() - t0) * 1000)
    return out


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


COLUMNS = ("bench", "figure", "ours", "peer", "unit", "ratio", "goal", "met?", "min ours / peer")


def _cells(r: Row) -> list[str]:
    mins = f"{r.ours_min:.2f} / {r.peer_min:.2f}" if r.ours_min is not None and r.peer_min is not None else ""
    met = "" if r.met is None else ("yes" if r.met else "NO")
    return [r.bench, r.what, f"{r.ours:.2f}", f"{r.peer:.2f}", r.unit, f"{r.ratio:.2f}", r.goal, met, mins]


def table(rows: list[Row]) -> str:
    """Plain columns for the terminal: each figure, its peer from the same run, the ratio, the
    goal and whether it is met."""
    cells = [list(COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    right = {2, 3, 5}
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                        strict=True)))
                     .rstrip())
        if n == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def markdown(rows: list[Row]) -> str:
    """The same table as Markdown (docs/performance.md)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---:" if i in (2, 3, 5) else "---"
                                                            for i in range(len(COLUMNS))) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def summary(rows: list[Row]) -> str:
    judged = [r for r in rows if r.met is not None]
    missed = [f"{r.bench}: {r.what}" for r in judged if not r.met]
    return (f"{len(judged) - len(missed)}/{len(judged)} goals met" +
            (": not met — " + "; ".join(missed) if missed else ""))
