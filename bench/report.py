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
                per_round: int, sample_ms: float = 1.0) -> dict[str, tuple[list[float], list[float]]]:
    """Time each (ours, peer) pair alternately: ``rounds`` × (``per_round`` samples of one side,
    then of the other), all cases in turn each round, so drift on a shared machine hits both
    alike. The side that goes first swaps every round: the first calls after another case
    run with cold caches, and that cost falls on both sides alike, not always on ours.

    A sample is one call, or for a pair whose peer takes less than ``sample_ms`` a batch of
    calls lasting about that long (as ``timeit`` does): a single call of a few microseconds is
    below what one timer reading resolves, and the batch size is the same for both sides.
    Returns milliseconds per call for each side."""
    batches = {name: _batch(peer, sample_ms) for name, (_ours, peer) in pairs.items()}
    out = {name: ([], []) for name in pairs}
    for k in range(rounds):
        for name, (ours, peer) in pairs.items():
            n = batches[name]
            for side, fn in ((0, ours), (1, peer))[::1 if k % 2 == 0 else -1]:
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    for _ in range(n):
                        fn()
                    out[name][side].append((time.perf_counter() - t0) * 1000 / n)
    return out


def _batch(fn: Callable[[], object], sample_ms: float) -> int:
    """Calls of ``fn`` that last about ``sample_ms`` (the best of three single calls)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t0) * 1000)
    return max(1, min(1000, int(sample_ms / best))) if best > 0 else 1000


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


COLUMNS = ("bench", "figure", "ours", "peer", "unit", "ratio", "goal", "met?", "min ours / peer")


def num(x: float) -> str:
    """Two decimals, or three significant digits under 0.1 (a 12 µs read is 0.0120 ms, not 0.01)."""
    return f"{x:.2f}" if abs(x) >= 0.1 or x == 0 else f"{x:.3g}"


def _cells(r: Row) -> list[str]:
    mins = f"{num(r.ours_min)} / {num(r.peer_min)}" if r.ours_min is not None and r.peer_min is not None else ""
    met = "" if r.met is None else ("yes" if r.met else "NO")
    return [r.bench, r.what, num(r.ours), num(r.peer), r.unit, f"{r.ratio:.2f}", r.goal, met, mins]


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
