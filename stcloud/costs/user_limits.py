"""Per-user limits, checked inside the submit transaction with the spend limits (one atomic
step: SQLite's BEGIN IMMEDIATE, or the user row locked FOR UPDATE on PostgreSQL).

- ``max_concurrent_jobs``: how many unfinished jobs the user may have (429 beyond).
- ``spend_limit_usd`` per ``spend_period`` (daily/weekly/monthly, in the instance time zone)
  with ``spend_action`` ``warn`` or ``block`` (402): the user's jobs' spend plus what their
  unfinished jobs hold reserved, plus this job's estimate.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stcloud import states
from stcloud.costs import limits as cost_limits
from stcloud.costs import periods
from stcloud.errors import PaymentRequired, RateLimited, ValidationError
from stcloud.models import Job, User, utcnow

FIELDS = ("max_concurrent_jobs", "spend_limit_usd", "spend_period", "spend_action", "approval_threshold_usd")


def to_dict(user: User) -> dict:
    return {"max_concurrent_jobs": user.max_concurrent_jobs, "spend_limit_usd": user.spend_limit_usd,
            "spend_period": user.spend_period or "monthly", "spend_action": user.spend_action or "block",
            "approval_threshold_usd": user.approval_threshold_usd}


def validate(changes: dict) -> dict:
    """The limit fields of a user PATCH, checked. Raises ValidationError naming the field."""
    out: dict = {}
    if "max_concurrent_jobs" in changes:
        v = changes["max_concurrent_jobs"]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 10_000):
            raise ValidationError("max_concurrent_jobs must be a whole number from 0 to 10000, or null (no cap)",
                                  extra={"field": "max_concurrent_jobs"})
        out["max_concurrent_jobs"] = v
    if "spend_limit_usd" in changes:
        v = changes["spend_limit_usd"]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise ValidationError("spend_limit_usd must be a number >= 0, or null (no limit)",
                                  extra={"field": "spend_limit_usd"})
        out["spend_limit_usd"] = float(v) if v is not None else None
    if "spend_period" in changes:
        if changes["spend_period"] not in periods.PERIODS:
            raise ValidationError(f"spend_period must be one of {', '.join(periods.PERIODS)}",
                                  extra={"field": "spend_period"})
        out["spend_period"] = changes["spend_period"]
    if "spend_action" in changes:
        if changes["spend_action"] not in cost_limits.ACTIONS:
            raise ValidationError(f"spend_action must be one of {', '.join(cost_limits.ACTIONS)}",
                                  extra={"field": "spend_action"})
        out["spend_action"] = changes["spend_action"]
    if "approval_threshold_usd" in changes:  # None: the instance's threshold (jobs/approval.py)
        v = changes["approval_threshold_usd"]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1_000_000):
            raise ValidationError("approval_threshold_usd must be a number of dollars from 0 to 1000000, or null "
                                  "(the instance's threshold)", extra={"field": "approval_threshold_usd"})
        out["approval_threshold_usd"] = float(v) if v is not None else None
    return out


def user_spend(s: Session, user_id: str, start: datetime, end: datetime, now: datetime) -> float:
    """Spent in ``[start, end)`` plus what unfinished jobs hold reserved, for one owner."""
    finished = s.scalars(select(Job).where(Job.owner_id == user_id, Job.status.in_(states.TERMINAL),
                                           Job.completed_at >= start, Job.completed_at < end)).all()
    active = s.scalars(select(Job).where(Job.owner_id == user_id, Job.status.in_(states.ACTIVE))).all()
    total = sum(cost_limits.actual_cost(j, now) for j in finished)
    for j in active:
        used = cost_limits.running_cost(j, now)
        total += used + max(0.0, float(j.estimated_cost_usd or 0.0) - used)
    return round(total, 6)


def check(s: Session, user_id: str | None, amount_usd: float, now: datetime | None = None) -> list[str]:
    """Check ``user_id``'s limits for one more job reserving ``amount_usd``; returns
    warnings. No user (the scheduler, the admin token, auth off): nothing to check.

    Raises RateLimited (429, concurrent jobs) or PaymentRequired (402, a block spend limit).
    """
    if user_id is None:
        return []
    stmt = select(User).where(User.id == user_id)
    if s.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()  # one submit per user at a time through this check
    user = s.scalars(stmt).first()
    if user is None:
        return []
    warnings: list[str] = []
    with s.no_autoflush:
        if user.max_concurrent_jobs is not None:
            active = s.scalar(select(func.count()).select_from(Job).where(
                Job.owner_id == user_id, Job.status.in_(states.ACTIVE))) or 0
            if active >= user.max_concurrent_jobs:
                raise RateLimited(f"{user.username} already has {active} unfinished job(s); the limit is "
                                  f"{user.max_concurrent_jobs} at a time — wait for one to finish or cancel one",
                                  extra={"active_jobs": active, "max_concurrent_jobs": user.max_concurrent_jobs})
        if user.spend_limit_usd is not None:
            now = now or utcnow()
            period = user.spend_period or "monthly"
            start, end = periods.period_bounds(period, cost_limits.default_timezone(s), now)
            after = user_spend(s, user_id, start, end, now) + max(0.0, float(amount_usd or 0.0))
            if after > user.spend_limit_usd + cost_limits.EPS:
                message = (f"{user.username}'s {period} spending limit of ${user.spend_limit_usd:.2f} would be "
                           f"exceeded: ${after:.2f} with this job")
                if (user.spend_action or "block") == "block" and amount_usd > 0:
                    raise PaymentRequired(message, extra={"limit_scope": f"user:{user.username}",
                                                          "limit_usd": user.spend_limit_usd,
                                                          "after_usd": round(after, 6)})
                warnings.append(message)
    return warnings


class SpendByUser:
    """Accumulates spend per job owner for the Spend page / ``costs/summary``."""

    def __init__(self):
        self._by: dict[str | None, dict] = {}

    def _row(self, owner_id: str | None) -> dict:
        return self._by.setdefault(owner_id, {"cost_usd": 0.0, "running_usd": 0.0, "reserved_usd": 0.0,
                                              "finished_jobs": 0, "active_jobs": 0})

    def finished(self, owner_id: str | None, cost: float) -> None:
        row = self._row(owner_id)
        row["cost_usd"] += cost
        row["finished_jobs"] += 1

    def active(self, owner_id: str | None, used: float, reserved: float) -> None:
        row = self._row(owner_id)
        row["running_usd"] += used
        row["reserved_usd"] += reserved
        row["active_jobs"] += 1

    def rows(self, s: Session) -> list[dict]:
        """Largest spender first; ``username`` None for jobs without an owner (before
        accounts, the admin token, auth off)."""
        ids = [i for i in self._by if i is not None]
        names = dict(s.execute(select(User.id, User.username).where(User.id.in_(ids))).all()) if ids else {}
        out = [{"user_id": uid, "username": names.get(uid) if uid else None,
                **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}}
               for uid, row in self._by.items()]
        return sorted(out, key=lambda r: (-(r["cost_usd"] + r["running_usd"]), r["username"] or ""))
