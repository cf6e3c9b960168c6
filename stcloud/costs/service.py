"""Costs: rates, estimates, spend limits and reservations — the API the rest of stcloud uses.

Contract for the submit path (SPEC §3 step 4), inside the ``db.transaction()`` that inserts
the job row::

    est = costs.estimate(s, provider, hardware, config)
    check = costs.check_and_reserve(s, provider, est.estimated_cost_usd)   # may raise 402
    job = Job(..., **est.job_fields())      # rate, estimated_cost_usd (= the reservation), estimate
    s.add(job)

Call ``check_and_reserve`` before adding the job, or pass ``job_id=`` so the new row is not
counted twice. The reservation *is* the job row: an unfinished job reserves its
``estimated_cost_usd`` until it finishes, so the check and the reservation are one commit.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, load_only

from stcloud import db, states
from stcloud.costs import estimates as est_mod
from stcloud.costs import limits, periods, rates, user_limits
from stcloud.costs.limits import LimitCheck, actual_cost, running_cost  # noqa: F401  (re-exported)
from stcloud.errors import BadRequest, PaymentRequired
from stcloud.models import Job, JobEvent, utcnow
from stcloud.providers import registry

DEFAULT_SECONDS_PER_STEP = rates.DEFAULT_SECONDS_PER_STEP

__all__ = ["Estimate", "LimitCheck", "rate_for", "estimate", "check_limits", "check_and_reserve",
           "running_cost", "actual_cost", "finalize_worker_cost", "estimate_for_submit",
           "limit_status", "summary"]


@dataclass(frozen=True)
class Estimate:
    estimated_cost_usd: float
    rate_usd_per_second: float
    seconds: float
    basis: str  # "history" | "steps"
    p50_usd: float | None = None
    p90_usd: float | None = None
    detail: dict = field(default_factory=dict)

    @property
    def basis_text(self) -> str:
        return self.detail.get("basis_text") or self.basis

    def to_dict(self) -> dict:
        """The JSON stored in ``Job.estimate`` and returned by the API."""
        d = asdict(self)
        d["basis_text"] = self.basis_text
        return d

    def job_fields(self) -> dict:
        """Columns to set on a new job: the rate recorded at submit, the reservation, the basis."""
        return {"rate_usd_per_second": self.rate_usd_per_second,
                "estimated_cost_usd": self.estimated_cost_usd, "estimate": self.to_dict()}


def rate_for(s: Session, provider: str, hardware: str | None, at: datetime | None = None) -> float:
    """$/s for the whole machine of ``provider``/``hardware`` (the newest dated rate in force
    at ``at``, default now). Raises BadRequest for a Replicate profile without a rate."""
    return rates.rate_at(s, provider, hardware, at)


def _history_samples(s: Session, provider: str, hardware: str) -> list[est_mod.Sample]:
    hw_match = Job.hardware == hardware
    if hardware == rates.default_hardware(s, provider):
        hw_match = or_(hw_match, Job.hardware.is_(None))
    rows = s.execute(
        select(Job.id, Job.config, Job.progress, Job.billed_seconds, Job.started_at, Job.completed_at)
        .where(Job.provider == provider, hw_match, Job.status == states.COMPLETED)
        .order_by(Job.completed_at.desc()).limit(500)
    ).all()
    out = []
    for job_id, config, progress, billed, started, completed in rows:
        seconds = billed if billed is not None else (
            (completed - started).total_seconds() if started and completed else None)
        steps = est_mod.steps_of(config) or (progress or {}).get("total_steps")
        if seconds and seconds > 0 and isinstance(steps, int) and steps > 0:
            out.append(est_mod.Sample(job_id, steps, float(seconds)))
    return out


def estimate(s: Session, provider: str, hardware: str | None, config: dict) -> Estimate:
    """Cost forecast for a job: p50/p90 of the ≥3 most similar finished jobs (same provider
    and hardware, step count within ×2, scaled to this step count), else steps × the
    configured seconds-per-step. ``estimated_cost_usd`` is the p50 (history) or the steps
    figure; it is what the job reserves. Raises BadRequest (unknown provider/hardware)."""
    profile = rates.resolve(s, provider, hardware)
    hw = hardware or rates.default_hardware(s, provider)
    rate = float(profile["usd_per_second"])
    steps = est_mod.steps_of(config)
    assumed = steps is None
    steps = steps or est_mod.DEFAULT_STEPS
    base = {"provider": provider, "hardware": hw, "steps": steps, "steps_assumed": assumed,
            "rate_profile": profile["hardware"], "rate_source": profile["source"],
            "usd_per_hour": round(rate * 3600, 6)}
    forecast = est_mod.from_history(_history_samples(s, provider, hw), steps)
    if forecast is not None:
        p50, p90 = forecast.p50_seconds, forecast.p90_seconds
        lo = min(smp.steps for smp in forecast.used)
        hi = max(smp.steps for smp in forecast.used)
        text = (f"history: p50 of {len(forecast.used)} similar finished {provider}/{hw} jobs "
                f"({lo}–{hi} steps), scaled to {steps} steps")
        detail = {**base, "jobs": [smp.job_id for smp in forecast.used], "n": len(forecast.used),
                  "p50_seconds": round(p50, 3), "p90_seconds": round(p90, 3), "basis_text": text}
        return Estimate(round(p50 * rate, 6), rate, round(p50, 3), "history",
                        round(p50 * rate, 6), round(p90 * rate, 6), detail)
    reference = est_mod.reference_seconds_per_step(config)
    sps = reference if reference is not None else rates.seconds_per_step(s, provider, hw)
    seconds = steps * sps
    text = (f"steps: {steps} steps{' (assumed: no max_train_steps in the config)' if assumed else ''}"
            f" × {sps:g} s/step{' (the reference trainer)' if reference is not None else ''}"
            f" (fewer than {est_mod.MIN_HISTORY} similar finished jobs)")
    detail = {**base, "seconds_per_step": sps, "basis_text": text}
    return Estimate(round(seconds * rate, 6), rate, round(seconds, 3), "steps", None, None, detail)


def check_limits(s: Session, provider: str, amount_usd: float, now: datetime | None = None) -> LimitCheck:
    """What a submit reserving ``amount_usd`` would meet (no lock, never raises)."""
    return limits.evaluate(s, provider, float(amount_usd or 0.0), now)


def check_and_reserve(s: Session, provider: str, amount_usd: float, *, job_id: str | None = None,
                      user_id: str | None = None, now: datetime | None = None) -> LimitCheck:
    """Check the spend limits for ``provider`` (and the global one) with ``amount_usd``
    more reserved. MUST be called inside the ``db.transaction()`` that inserts the job
    row, so the check and the reservation are one atomic step (SQLite: BEGIN IMMEDIATE;
    PostgreSQL: the limit rows are locked FOR UPDATE here). Pass ``job_id`` if the job row
    was already flushed. Returns the warnings (≥80%, ≥100%). Raises PaymentRequired (402,
    naming spent_usd / reserved_usd / limit_usd) when a block limit would be exceeded.
    ``user_id`` (the submitting user) adds that user's own limits (429 concurrent jobs, 402
    spend) to the same atomic step."""
    check = limits.evaluate(s, provider, float(amount_usd or 0.0), now, lock=True, exclude_job_id=job_id)
    if check.would_block:
        raise PaymentRequired(check.block_reason, extra={**check.block_extra,
                                                         "warnings": list(check.warnings)})
    # the submitting user's own limits (concurrent jobs, spend), in the same transaction
    mine = user_limits.check(s, user_id, float(amount_usd or 0.0), now)
    return replace(check, warnings=check.warnings + tuple(mine), would_warn=check.would_warn or bool(mine))


def finalize_worker_cost(s: Session, job: Job) -> float | None:
    """Set ``billed_seconds`` (run time, summed over attempts when the job was re-queued)
    and ``cost_usd`` (× the recorded rate) on a finished worker/local job; returns the cost.
    Idempotent. Jobs of a provider that reports its own cost (``supports_cost_tracking``)
    are left alone; an unfinished job returns None."""
    service = registry.maybe_get(job.provider)
    if service is None or service.supports_cost_tracking:
        return job.cost_usd
    if not states.is_terminal(job.status):
        return None
    events = s.scalars(select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.accepted.is_(True))
                       .order_by(JobEvent.id)).all()
    earlier = 0.0  # attempts that ended with a re-queue
    opened = None
    for ev in events:
        if ev.to_status == states.RUNNING:
            opened = ev.at
        elif ev.from_status == states.RUNNING and opened is not None:
            if ev.to_status == states.QUEUED:
                earlier += max(0.0, (ev.at - opened).total_seconds())
            opened = None
    last = 0.0
    if job.started_at is not None and job.completed_at is not None:
        last = max(0.0, (job.completed_at - job.started_at).total_seconds())
    seconds = round(earlier + last, 3)
    job.billed_seconds = seconds
    job.cost_usd = round(seconds * float(job.rate_usd_per_second or 0.0), 6)
    return job.cost_usd


# ---- API helpers (own sessions) ------------------------------------------------------------

def hardware_choices(services: list) -> list[dict]:
    """The hardware profiles of ``[(name, adapter)]`` with the rate in force now:
    ``[{provider, provider_label, name, label, rate, per_hour}]`` (rate None when unknown)."""
    out = []
    with db.session() as s:
        for name, svc in services:
            for hw, prof in rates.hardware_profiles(name).items():
                try:
                    rate = rates.rate_at(s, name, hw)
                except BadRequest:  # a rate we cannot read is shown as unknown
                    rate = None
                out.append({"provider": name, "provider_label": svc.label, "name": hw,
                            "label": prof.get("label") or hw, "rate": rate,
                            "per_hour": rate * 3600 if rate is not None else None})
    return out


def provider_spend(provider: str, now: datetime | None = None) -> dict:
    """Spend of ``provider`` from stcloud's own records: today, the last 7 and 30 days, all
    time, jobs billed, and the active jobs with their estimates."""
    now = now or utcnow()
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    windows = {"today_usd": day, "last_7_days_usd": now - timedelta(days=7),
               "last_30_days_usd": now - timedelta(days=30), "all_time_usd": None}
    spend: dict = {}
    with db.session() as s:
        for key, start in windows.items():
            stmt = select(func.coalesce(func.sum(Job.cost_usd), 0.0)).where(
                Job.provider == provider, Job.cost_usd.is_not(None))
            if start is not None:
                stmt = stmt.where(Job.completed_at >= start)
            spend[key] = round(float(s.scalar(stmt) or 0.0), 4)
        spend["jobs_billed"] = int(s.scalar(select(func.count()).select_from(Job).where(
            Job.provider == provider, Job.cost_usd.is_not(None))) or 0)
        active_n, active_est = s.execute(
            select(func.count(), func.coalesce(func.sum(Job.estimated_cost_usd), 0.0))
            .where(Job.provider == provider, Job.status.in_(tuple(states.ACTIVE)))).one()
    return {"spend": spend, "active": {"jobs": int(active_n), "estimated_usd": round(float(active_est or 0.0), 4)}}


def parse_submit_body(body: dict) -> dict:
    """The fields of a submit body that pricing needs. Raises BadRequest naming the field."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    provider = body.get("provider")
    if provider not in rates.providers():
        raise BadRequest(f"provider must be one of {', '.join(rates.providers())}", extra={"field": "provider"})
    config = body.get("config") if body.get("config") is not None else {}
    if not isinstance(config, dict):
        raise BadRequest("config must be a JSON object", extra={"field": "config"})
    hardware = body.get("hardware") or None
    if hardware is not None and (not isinstance(hardware, str) or len(hardware) > 64):
        raise BadRequest("hardware must be a hardware profile name", extra={"field": "hardware"})
    max_cost = body.get("max_cost_usd")
    if max_cost in ("", None):
        max_cost = None
    else:
        if isinstance(max_cost, bool) or not isinstance(max_cost, (int, float)) or max_cost < 0:
            raise BadRequest("max_cost_usd must be a number >= 0", extra={"field": "max_cost_usd"})
        max_cost = float(max_cost)
    return {"provider": provider, "hardware": _priced_hardware(provider, hardware, body.get(provider)),
            "config": config, "max_cost_usd": max_cost}


def _priced_hardware(provider: str, hardware: str | None, options) -> str | None:
    """The profile the submit would price (the per-job settings under the provider's name
    may change it, e.g. Slurm's ``gpus_per_job``). Raises BadRequest naming the field."""
    if options in (None, {}, ""):
        return hardware
    service = registry.get(provider)
    if not isinstance(options, dict):
        raise BadRequest(f"{provider} must be an object of per-job settings", extra={"field": provider})
    try:
        return service.hardware_for_options(hardware, service.validate_options(dict(options)))
    except ValueError as exc:
        raise BadRequest(f"{provider}: {exc}", extra={"field": provider}) from None


def estimate_for_submit(body: dict, now: datetime | None = None) -> dict:
    """``POST /api/cloud/cost-estimate``: the estimate a submit of ``body`` would get and
    what it would meet at the limits. Raises BadRequest."""
    req = parse_submit_body(body)
    with db.session() as s:
        est = estimate(s, req["provider"], req["hardware"], req["config"])
        check = check_limits(s, req["provider"], est.estimated_cost_usd, now)
    warnings = list(check.warnings)
    cap = req["max_cost_usd"]
    if cap is not None:
        if est.estimated_cost_usd > cap:
            warnings.append(f"the estimate (${est.estimated_cost_usd:,.2f}) is above this job's max_cost_usd "
                            f"(${cap:,.2f}): it will be cancelled when its running cost reaches the cap")
        elif est.p90_usd is not None and est.p90_usd > cap:
            warnings.append(f"the p90 estimate (${est.p90_usd:,.2f}) is above this job's max_cost_usd "
                            f"(${cap:,.2f}): a slow run would be cancelled at the cap")
    return {
        "estimated_cost_usd": est.estimated_cost_usd,
        "p50_usd": est.p50_usd,
        "p90_usd": est.p90_usd,
        "basis": est.basis,
        "basis_text": est.basis_text,
        "rate_usd_per_second": est.rate_usd_per_second,
        "usd_per_hour": round(est.rate_usd_per_second * 3600, 6),
        "seconds": est.seconds,
        "hardware": est.detail.get("hardware"),
        "steps": est.detail.get("steps"),
        "detail": est.detail,
        "would_warn": bool(warnings),
        "would_block": check.would_block,
        "block_reason": check.block_reason,
        "warnings": warnings,
        "limits": list(check.limits),
        "max_cost_usd": cap,
    }


def limit_status(provider: str, now: datetime | None = None) -> dict:
    """SPEC §6 ``cost-limit/status`` of ``provider`` (or ``all``). Raises BadRequest."""
    limits.validate_scope(provider)
    with db.session() as s:
        return limits.limit_status(s, provider, now)


def _chart_limit(statuses: list[dict]) -> dict | None:
    enabled = [st for st in statuses if st["enabled"]]
    if not enabled:
        return None
    return next((st for st in enabled if st["provider"] == "all"), enabled[0])


def summary(days: int = 30, tz: str | None = None, now: datetime | None = None) -> dict:
    """``GET /api/cloud/costs/summary``: spend per day (stacked by provider, in ``tz``), per
    provider, totals, jobs by status, estimate vs actual, limit statuses and the chart data.
    A finished job counts on the day it finished; unfinished jobs' running cost counts today."""
    now = now or utcnow()
    with db.session() as s:
        statuses = limits.all_statuses(s, now)
        chart_limit = _chart_limit(statuses)
        tz = tz or (chart_limit["timezone"] if chart_limit else limits.default_timezone(s))
        periods.zone(tz)
        today = periods.local_date(now, tz)
        first = today - timedelta(days=days - 1)
        start = periods.local_midnight(first, tz)
        finished = s.scalars(select(Job).options(load_only(*limits.COST_COLUMNS, Job.estimate, Job.owner_id))
                             .where(Job.status.in_(states.TERMINAL), Job.completed_at >= start)
                             .order_by(Job.completed_at)).all()
        active = s.scalars(select(Job).where(Job.status.in_(states.ACTIVE)).order_by(Job.created_at.desc())).all()
        by_status = dict(s.execute(select(Job.status, func.count()).where(Job.created_at >= start)
                                   .group_by(Job.status)).all())

        day_list = [first + timedelta(days=i) for i in range(days)]
        providers = list(rates.providers())
        per_day = {d: {p: 0.0 for p in providers} for d in day_list}
        per_provider = {p: {"cost_usd": 0.0, "finished_jobs": 0, "running_usd": 0.0, "reserved_usd": 0.0,
                            "active_jobs": 0, "estimated_usd": 0.0} for p in providers}
        comparisons = []
        per_user = user_limits.SpendByUser()
        for j in finished:
            cost = actual_cost(j, now)
            per_user.finished(j.owner_id, cost)
            d = periods.local_date(j.completed_at, tz)
            if j.provider in per_provider:
                if d in per_day:
                    per_day[d][j.provider] += cost
                per_provider[j.provider]["cost_usd"] += cost
                per_provider[j.provider]["finished_jobs"] += 1
                per_provider[j.provider]["estimated_usd"] += float(j.estimated_cost_usd or 0.0)
            if j.status == states.COMPLETED and j.estimated_cost_usd and cost > 0:
                comparisons.append({
                    "job_id": j.id, "name": j.name, "provider": j.provider, "hardware": j.hardware,
                    "completed_at": periods.iso(j.completed_at), "estimated_cost_usd": round(j.estimated_cost_usd, 6),
                    "cost_usd": round(cost, 6),
                    "error_pct": round((cost - j.estimated_cost_usd) / j.estimated_cost_usd * 100.0, 1),
                    "basis": (j.estimate or {}).get("basis"),
                    "p90_usd": (j.estimate or {}).get("p90_usd"),
                })
        active_list = []
        for j in active:
            used = running_cost(j, now)
            per_user.active(j.owner_id, used, max(0.0, float(j.estimated_cost_usd or 0.0) - used))
            if j.provider in per_provider:
                per_day[today][j.provider] += used
                pp = per_provider[j.provider]
                pp["running_usd"] += used
                pp["reserved_usd"] += max(0.0, float(j.estimated_cost_usd or 0.0) - used)
                pp["active_jobs"] += 1
            active_list.append({"job_id": j.id, "name": j.name, "provider": j.provider, "status": j.status,
                                "hardware": j.hardware, "running_cost_usd": round(used, 6),
                                "estimated_cost_usd": j.estimated_cost_usd, "max_cost_usd": j.max_cost_usd,
                                "started_at": periods.iso(j.started_at)})
        by_user = per_user.rows(s)

    daily = [{"date": d.isoformat(), "providers": {p: round(v, 6) for p, v in per_day[d].items()},
              "total": round(sum(per_day[d].values()), 6)} for d in day_list]
    errors = [abs(c["error_pct"]) for c in comparisons]
    accuracy = {
        "n": len(comparisons),
        "mean_abs_error_pct": round(sum(errors) / len(errors), 1) if errors else None,
        "median_error_pct": round(est_mod.percentile([c["error_pct"] for c in comparisons], 50), 1)
        if comparisons else None,
        "within_25pct": round(sum(1 for e in errors if e <= 25) / len(errors) * 100, 1) if errors else None,
        "by_basis": {b: {"n": len(xs), "mean_abs_error_pct": round(sum(xs) / len(xs), 1)}
                     for b in ("history", "steps")
                     if (xs := [abs(c["error_pct"]) for c in comparisons if c["basis"] == b])},
    }
    chart = {"labels": [d.isoformat() for d in day_list],
             "series": {p: [row["providers"][p] for row in daily] for p in providers}}
    if chart_limit:
        chart["limit"] = _limit_line(chart_limit, daily, tz)
    return {
        "days": days, "timezone": tz, "start": periods.iso(start), "end": periods.iso(now),
        "per_day": daily,
        "per_provider": {p: {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()}
                         for p, d in per_provider.items()},
        "per_user": by_user,
        "totals": {
            "cost_usd": round(sum(d["cost_usd"] for d in per_provider.values()), 6),
            "running_usd": round(sum(d["running_usd"] for d in per_provider.values()), 6),
            "reserved_usd": round(sum(d["reserved_usd"] for d in per_provider.values()), 6),
            "finished_jobs": sum(d["finished_jobs"] for d in per_provider.values()),
            "active_jobs": len(active_list),
        },
        "jobs_by_status": {st: int(by_status.get(st, 0)) for st in states.STATUSES},
        "estimates": comparisons[-100:][::-1],
        "estimate_accuracy": accuracy,
        "active": active_list,
        "limits": statuses,
        "chart": chart,
    }


def _limit_line(st: dict, daily: list[dict], tz: str) -> dict:
    """The limit as a chart line; for weekly/monthly limits also the cumulative spend of the
    limit's scope inside each period (it resets at each boundary)."""
    scope = st["provider"]
    cumulative, running, period_key = [], 0.0, None
    for row in daily:
        day = datetime.fromisoformat(row["date"]).date()
        key = periods.period_bounds(st["period"], st["timezone"], periods.local_midnight(day, tz))[0]
        if key != period_key:
            period_key, running = key, 0.0
        running += row["total"] if scope == "all" else row["providers"].get(scope, 0.0)
        cumulative.append(round(running, 6))
    label = "global" if scope == "all" else scope
    return {"provider": scope, "period": st["period"], "amount_usd": st["amount_usd"], "action": st["action"],
            "label": f"{label} {st['period']} limit ({st['action']})",
            "cumulative": cumulative if st["period"] != "daily" else None}
