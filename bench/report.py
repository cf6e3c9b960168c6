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


def table(rows: list[Row]) -> str:
    head = f"{'benchmark':10s} {'figure':44s} {'ours':>10s} {'peer':>10s} {'unit':6s} {'ratio':>7s}  goal"
    lines = [head, "-" * len(head)]
    for r in rows:
        mins = (f"  (min {r.ours_min:.2f} / {r.peer_min:.2f})" if r.ours_min is not None and r.peer_min is not None
                else "")
        verdict = "" if r.met is None else (" ok" if r.met else " NOT MET")
        lines.append(f"{r.bench:10s} {r.what:44s} {r.ours:10.2f} {r.peer:10.2f} {r.unit:6s} {r.ratio:7.2f}  "
                     f"{r.goal}{verdict}{mins}")
    return "\n".join(lines)
