"""Costs: rates, estimates, spend limits and reservations.

FIRST VERSION (foundation): fixed default rates and a steps-based estimate; no limits yet.
The cost issue replaces the bodies; the signatures are the contract the submit path uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

DEFAULT_RATES = {  # $/s for the whole machine of a profile (seeds: L40S ~$3.50/h, A100 ~$5.00/h)
    ("replicate", "gpu-l40s"): 3.50 / 3600,
    ("replicate", "gpu-a100-large"): 5.00 / 3600,
    ("worker", None): 0.0,
    ("local", None): 0.0,
}
DEFAULT_SECONDS_PER_STEP = 1.8


@dataclass(frozen=True)
class Estimate:
    estimated_cost_usd: float
    rate_usd_per_second: float
    seconds: float
    basis: str  # "history" | "steps"
    p50_usd: float | None = None
    p90_usd: float | None = None
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LimitCheck:
    would_warn: bool = False
    would_block: bool = False
    warnings: tuple[str, ...] = ()


def rate_for(s: Session, provider: str, hardware: str | None) -> float:
    return DEFAULT_RATES.get((provider, hardware), DEFAULT_RATES.get((provider, None), 0.0))


def estimate(s: Session, provider: str, hardware: str | None, config: dict) -> Estimate:
    steps = int((config or {}).get("max_train_steps") or 1000)
    seconds = steps * DEFAULT_SECONDS_PER_STEP
    rate = rate_for(s, provider, hardware)
    return Estimate(round(seconds * rate, 4), rate, seconds, "steps",
                    detail={"steps": steps, "seconds_per_step": DEFAULT_SECONDS_PER_STEP})


def check_and_reserve(s: Session, provider: str, amount_usd: float) -> LimitCheck:
    """Check the spend limits for ``provider`` (and the global one) with ``amount_usd``
    more reserved. MUST be called inside the ``db.transaction()`` that inserts the job
    row, so the check and the reservation are one atomic step. Raises PaymentRequired
    when a block limit would be exceeded."""
    return LimitCheck()
