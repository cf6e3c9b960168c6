"""Duration forecasts from history. Pure: no Flask, no database.

The ≥3 most similar finished jobs (same provider and hardware — the caller selects those —
and a step count within ×2 of the new job's) each give a duration scaled to the new step
count; p50 and p90 of those durations price the new job.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

MIN_HISTORY = 3  # fewer similar jobs than this: fall back to steps × seconds-per-step
MAX_HISTORY = 10  # the most similar N jobs are used
MAX_STEP_RATIO = 2.0  # "close step count": within ×2 either way
DEFAULT_STEPS = 1000  # when the config names no max_train_steps
STEP_KEYS = ("max_train_steps", "--max_train_steps", "max-train-steps")
# stcloud's built-in reference trainer (model_family "reference", CPU, tiny) paces itself: its
# own compute per step (measured: the 200-step sample runs in ~8 s with its 0.03 s delay) plus
# the config's step_delay_seconds. The GPU seconds-per-step table does not describe it.
REFERENCE_FAMILY = "reference"
REFERENCE_COMPUTE_SECONDS_PER_STEP = 0.01


@dataclass(frozen=True)
class Sample:
    job_id: str
    steps: int
    seconds: float


def steps_of(config: dict | None) -> int | None:
    """``max_train_steps`` of a SimpleTuner config (plain or ``--flag`` style keys)."""
    if not isinstance(config, dict):
        return None
    for key in STEP_KEYS:
        value = config.get(key)
        if value is None or isinstance(value, bool):
            continue
        try:
            n = int(float(value))
        except (TypeError, ValueError, OverflowError):
            continue
        if n > 0:
            return n
    return None


def reference_seconds_per_step(config: dict | None) -> float | None:
    """Seconds per step of a config for the reference trainer; None for any other config."""
    if not isinstance(config, dict):
        return None
    family = next((config[k] for k in ("model_family", "--model_family") if k in config), None)
    if family != REFERENCE_FAMILY:
        return None
    delay = next((config[k] for k in ("step_delay_seconds", "--step_delay_seconds") if k in config), 0) or 0
    try:
        delay = max(0.0, float(delay))
    except (TypeError, ValueError):
        delay = 0.0
    return REFERENCE_COMPUTE_SECONDS_PER_STEP + delay


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100) of a non-empty list."""
    if not values:
        raise ValueError("percentile of an empty list")
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def pick_similar(samples: list[Sample], steps: int, *, k: int = MAX_HISTORY,
                 max_ratio: float = MAX_STEP_RATIO) -> list[Sample]:
    """The ``k`` samples whose step count is closest to ``steps`` (by ratio), among those
    within ``max_ratio``; ties keep the input order (callers pass newest first)."""
    close = [(abs(math.log(smp.steps / steps)), i, smp) for i, smp in enumerate(samples)
             if smp.steps > 0 and smp.seconds > 0 and 1 / max_ratio <= smp.steps / steps <= max_ratio]
    close.sort(key=lambda t: (t[0], t[1]))
    return [smp for _, _, smp in close[:k]]


@dataclass(frozen=True)
class HistoryForecast:
    p50_seconds: float
    p90_seconds: float
    used: list[Sample]
    scaled_seconds: list[float]


def from_history(samples: list[Sample], steps: int, *, minimum: int = MIN_HISTORY) -> HistoryForecast | None:
    """p50/p90 duration for ``steps`` from the most similar samples; None with fewer than
    ``minimum`` similar ones."""
    used = pick_similar(samples, steps)
    if len(used) < minimum:
        return None
    scaled = [smp.seconds * steps / smp.steps for smp in used]
    return HistoryForecast(percentile(scaled, 50), percentile(scaled, 90), used, scaled)
