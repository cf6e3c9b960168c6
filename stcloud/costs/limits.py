"""Spending limits: per provider and one global (``all``), over calendar periods.

Spend in a period (SPEC §6) = the actual cost of jobs that finished in the period + for each
accepted job that has not finished, the larger of its reservation (``estimated_cost_usd``)
and its running cost so far. We report that as two figures:

- ``spent_usd``: money actually used — finished jobs' cost + running jobs' cost so far;
- ``reserved_usd``: the part of unfinished jobs' reservations not used yet.

``spent + reserved`` (``committed_usd``) is what a new submit is checked against;
``spent`` alone is what ``stop_running`` acts on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, load_only

from stcloud import db, settings, states
from stcloud.costs import periods
from stcloud.errors import BadRequest
from stcloud.models import CostLimit, Job, utcnow
from stcloud.providers import registry

ALL = "all"  # the global limit, beside one per registered provider
ACTIONS = ("warn", "block")
WARN_AT = 80.0  # percent
EPS = 1e-6  # dollars: float sums of reservations must not refuse an exact fit
READ_ONLY = frozenset({"configured", "spent_usd", "reserved_usd", "committed_usd", "finished_usd", "running_usd",
                       "active_jobs", "percent_used", "percent_spent", "is_warning", "is_exceeded",
                       "period_start", "period_end", "as_of"})


@dataclass(frozen=True)
class LimitCheck:
    would_warn: bool = False
    would_block: bool = False
    warnings: tuple[str, ...] = ()
    # per enabled limit that applies: scope, action, amount, spent, reserved, after, percent_after
    limits: tuple[dict, ...] = ()
    block_reason: str | None = None
    block_extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Spend:
    finished_usd: float = 0.0  # actual cost of jobs finished in the period
    running_usd: float = 0.0  # cost so far of unfinished jobs
    reserved_usd: float = 0.0  # unused part of unfinished jobs' reservations
    finished_jobs: int = 0
    active_jobs: int = 0

    @property
    def spent_usd(self) -> float:
        return self.finished_usd + self.running_usd

    @property
    def committed_usd(self) -> float:
        return self.spent_usd + self.reserved_usd


# ---- per-job cost --------------------------------------------------------------------------

def job_rate(job: Job) -> float:
    return float(job.rate_usd_per_second or 0.0)


def running_cost(job: Job, now: datetime | None = None) -> float:
    """Cost so far. Finished: the billed cost (``cost_usd``), else — until the provider
    reports it — run time × the recorded rate. Unfinished: the larger of any billed figure
    and elapsed run time × the recorded rate."""
    rate = job_rate(job)
    billed = (float(job.cost_usd) if job.cost_usd is not None
              else float(job.billed_seconds) * rate if job.billed_seconds is not None else None)
    if states.is_terminal(job.status):
        if billed is not None:
            return billed
        if job.started_at is not None and job.completed_at is not None:
            return max(0.0, (job.completed_at - job.started_at).total_seconds()) * rate
        return 0.0
    elapsed = 0.0
    if job.started_at is not None:
        elapsed = max(0.0, ((now or utcnow()) - job.started_at).total_seconds()) * rate
    return max(billed or 0.0, elapsed)


def actual_cost(job: Job, now: datetime | None = None) -> float:
    """A finished job's cost: billed (``cost_usd``) or, until the provider reports it, its
    run time × its recorded rate."""
    return running_cost(job, now)


COST_COLUMNS = (Job.id, Job.name, Job.status, Job.provider, Job.hardware, Job.cost_usd, Job.billed_seconds,
                 Job.rate_usd_per_second, Job.estimated_cost_usd, Job.max_cost_usd, Job.started_at,
                 Job.completed_at, Job.created_at)


def _scope_filter(stmt, scope: str):
    stmt = stmt.options(load_only(*COST_COLUMNS))
    return stmt if scope == "all" else stmt.where(Job.provider == scope)


def spend_in_period(s: Session, scope: str, start: datetime, end: datetime,
                    now: datetime | None = None, *, exclude_job_id: str | None = None) -> Spend:
    """Spend of ``scope`` (a provider or ``all``) in ``[start, end)`` as of ``now``."""
    now = now or utcnow()
    finished = s.scalars(_scope_filter(
        select(Job).where(Job.status.in_(states.TERMINAL), Job.completed_at >= start, Job.completed_at < end),
        scope)).all()
    active = s.scalars(_scope_filter(select(Job).where(Job.status.in_(states.ACTIVE)), scope)).all()
    fin = sum(actual_cost(j, now) for j in finished if j.id != exclude_job_id)
    running = reserved = 0.0
    n_active = 0
    for j in active:
        if j.id == exclude_job_id:
            continue
        n_active += 1
        used = running_cost(j, now)
        running += used
        reserved += max(0.0, float(j.estimated_cost_usd or 0.0) - used)
    return Spend(round(float(fin), 6), round(running, 6), round(reserved, 6),
                 sum(1 for j in finished if j.id != exclude_job_id), n_active)


# ---- limit rows ----------------------------------------------------------------------------

def scopes() -> tuple[str, ...]:
    """``all`` and every registered provider."""
    return (ALL, *registry.display_order())


def validate_scope(scope: str) -> str:
    if scope not in scopes():
        raise BadRequest(f"unknown provider {scope!r}; expected one of {', '.join(scopes())}",
                         extra={"field": "provider"})
    return scope


def default_timezone(s: Session | None = None) -> str:
    tz = settings.get("timezone", s=s) if s is not None else settings.get("timezone")
    return tz if periods.is_valid_timezone(tz) else "UTC"


def limit_config(s: Session, scope: str, row: CostLimit | None = None) -> dict:
    row = row if row is not None else s.get(CostLimit, scope)
    if row is None:
        return {"provider": scope, "enabled": False, "amount_usd": 0.0, "period": "monthly",
                "action": "warn", "timezone": default_timezone(s), "stop_running": False,
                "configured": False}
    return {"provider": scope, "enabled": bool(row.enabled), "amount_usd": float(row.amount_usd),
            "period": row.period, "action": row.action, "timezone": row.timezone,
            "stop_running": bool(row.stop_running), "configured": True}


def validate_limit(body: dict, current: dict) -> dict:
    """Merge ``body`` into ``current``; raises BadRequest naming the first bad field."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    known = {"enabled", "amount_usd", "period", "action", "timezone", "stop_running", "provider"}
    for key in body:
        if key not in known and key not in READ_ONLY:  # a GET answer can be PUT back as is
            raise BadRequest(f"unknown field {key!r}; expected {', '.join(sorted(known - {'provider'}))}",
                             extra={"field": key})
    out = dict(current)
    for key in ("enabled", "stop_running"):
        if key in body:
            if not isinstance(body[key], bool):
                raise BadRequest(f"{key} must be true or false", extra={"field": key})
            out[key] = body[key]
    if "amount_usd" in body:
        v = body["amount_usd"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"),):
            raise BadRequest("amount_usd must be a number >= 0", extra={"field": "amount_usd"})
        if v < 0:
            raise BadRequest("amount_usd must be >= 0", extra={"field": "amount_usd"})
        out["amount_usd"] = float(v)
    if "period" in body:
        if body["period"] not in periods.PERIODS:
            raise BadRequest(f"period must be one of {', '.join(periods.PERIODS)}", extra={"field": "period"})
        out["period"] = body["period"]
    if "action" in body:
        if body["action"] not in ACTIONS:
            raise BadRequest(f"action must be one of {', '.join(ACTIONS)}", extra={"field": "action"})
        out["action"] = body["action"]
    if "timezone" in body:
        if not periods.is_valid_timezone(body["timezone"]):
            raise BadRequest(f"timezone {body['timezone']!r} is not a known IANA time zone (e.g. UTC, "
                             f"America/Los_Angeles)", extra={"field": "timezone"})
        out["timezone"] = body["timezone"]
    return out


def put_limit(scope: str, body: dict) -> dict:
    """Create or update the limit of ``scope`` (fields not in ``body`` keep their value; a
    new limit is enabled unless ``enabled: false``). Raises BadRequest naming the field."""
    validate_scope(scope)
    with db.transaction() as s:
        row = s.get(CostLimit, scope)
        current = limit_config(s, scope, row)
        if row is None and isinstance(body, dict) and "enabled" not in body:
            current["enabled"] = True  # creating a limit without saying otherwise switches it on
        clean = validate_limit(body, current)
        if row is None:
            row = CostLimit(provider=scope)
            s.add(row)
        for key in ("enabled", "amount_usd", "period", "action", "timezone", "stop_running"):
            setattr(row, key, clean[key])
        row.updated_at = utcnow()
    with db.session() as s:
        return limit_config(s, scope)


# ---- status and checks ---------------------------------------------------------------------

def _percent(value: float, amount: float) -> float:
    if amount <= 0:
        return 100.0 if value > EPS else 0.0
    return round(value / amount * 100.0, 2)


def limit_status(s: Session, scope: str, now: datetime | None = None,
                 cfg: dict | None = None) -> dict:
    """SPEC §6 status of ``scope``'s limit (a not-configured limit reports its spend over the
    default monthly period, enabled false)."""
    now = now or utcnow()
    cfg = cfg or limit_config(s, validate_scope(scope))
    start, end = periods.period_bounds(cfg["period"], cfg["timezone"], now)
    spend = spend_in_period(s, scope, start, end, now)
    pct = _percent(spend.committed_usd, cfg["amount_usd"]) if cfg["enabled"] else 0.0
    return {
        **cfg,
        "spent_usd": round(spend.spent_usd, 4),
        "reserved_usd": round(spend.reserved_usd, 4),
        "committed_usd": round(spend.committed_usd, 4),
        "finished_usd": round(spend.finished_usd, 4),
        "running_usd": round(spend.running_usd, 4),
        "active_jobs": spend.active_jobs,
        "percent_used": pct,
        "percent_spent": _percent(spend.spent_usd, cfg["amount_usd"]) if cfg["enabled"] else 0.0,
        "is_warning": bool(cfg["enabled"] and pct >= WARN_AT),
        "is_exceeded": bool(cfg["enabled"] and pct >= 100.0),
        "period_start": periods.iso(start),
        "period_end": periods.iso(end),
        "as_of": periods.iso(now),
    }


def all_statuses(s: Session, now: datetime | None = None) -> list[dict]:
    return [limit_status(s, scope, now) for scope in scopes()]


def _money(v: float) -> str:
    return f"${v:,.2f}" if v >= 0.01 or v == 0 else f"${v:.4f}"


def evaluate(s: Session, provider: str, amount_usd: float, now: datetime | None = None, *,
             lock: bool = False, exclude_job_id: str | None = None) -> LimitCheck:
    """What accepting one more job of ``provider`` reserving ``amount_usd`` would do to the
    limits that apply (the provider's and ``all``). ``lock`` takes the limit rows FOR UPDATE
    (PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes). Never raises for a limit."""
    now = now or utcnow()
    wanted = [provider, ALL] if provider != ALL else [ALL]
    stmt = select(CostLimit).where(CostLimit.provider.in_(wanted))
    if lock:
        stmt = stmt.with_for_update()
    warnings: list[str] = []
    details: list[dict] = []
    block_reason, block_extra = None, {}
    with s.no_autoflush:  # a job added but not flushed by the caller is not yet "accepted"
        rows = {r.provider: r for r in s.scalars(stmt).all()}
        for scope in wanted:
            row = rows.get(scope)
            if row is None or not row.enabled:
                continue
            cfg = limit_config(s, scope, row)
            start, end = periods.period_bounds(cfg["period"], cfg["timezone"], now)
            spend = spend_in_period(s, scope, start, end, now, exclude_job_id=exclude_job_id)
            after = spend.committed_usd + max(0.0, amount_usd)
            pct_after = _percent(after, cfg["amount_usd"])
            label = "global" if scope == "all" else scope
            info = {"provider": scope, "action": cfg["action"], "period": cfg["period"],
                    "timezone": cfg["timezone"], "limit_usd": cfg["amount_usd"],
                    "spent_usd": round(spend.spent_usd, 6), "reserved_usd": round(spend.reserved_usd, 6),
                    "requested_usd": round(amount_usd, 6), "after_usd": round(after, 6),
                    "percent_after": pct_after, "period_start": periods.iso(start),
                    "period_end": periods.iso(end)}
            details.append(info)
            over = after > cfg["amount_usd"] + EPS
            if cfg["action"] == "block" and over and amount_usd > 0 and block_reason is None:
                block_reason = (
                    f"{label} {cfg['period']} spending limit of {_money(cfg['amount_usd'])} would be exceeded: "
                    f"spent {_money(spend.spent_usd)} + reserved {_money(spend.reserved_usd)} + this job "
                    f"{_money(amount_usd)} = {_money(after)} (period {info['period_start']} to "
                    f"{info['period_end']})")
                block_extra = {"limit_provider": scope, "spent_usd": info["spent_usd"],
                               "reserved_usd": info["reserved_usd"], "limit_usd": cfg["amount_usd"],
                               "requested_usd": info["requested_usd"], "period": cfg["period"],
                               "period_start": info["period_start"], "period_end": info["period_end"]}
                continue
            if pct_after >= 100.0 and (over or cfg["amount_usd"] <= 0):
                warnings.append(f"this job would take the {label} {cfg['period']} limit over 100% "
                                f"({_money(after)} of {_money(cfg['amount_usd'])})")
            elif pct_after >= 100.0:
                warnings.append(f"this job would use 100% of the {label} {cfg['period']} limit "
                                f"({_money(after)} of {_money(cfg['amount_usd'])})")
            elif pct_after >= WARN_AT:
                warnings.append(f"this job would take the {label} {cfg['period']} limit to "
                                f"{pct_after:.0f}% ({_money(after)} of {_money(cfg['amount_usd'])})")
    return LimitCheck(would_warn=bool(warnings), would_block=block_reason is not None,
                      warnings=tuple(warnings), limits=tuple(details), block_reason=block_reason,
                      block_extra=block_extra)
