"""The scheduler side of costs (SPEC §6 "beyond the seeds"): every minute and at each local
midnight of every configured limit's time zone (so at every daily/weekly/monthly boundary):

1. finished worker/local jobs get their cost (run time × recorded rate) if nobody set it;
2. a job whose running cost reached its ``max_cost_usd`` is cancelled;
3. for a ``block`` limit with ``stop_running``, once the *actual* spend of the period
   (finished + running so far, not reservations) reaches the limit, the unfinished jobs of
   that scope that are running or queued (and priced above $0) are cancelled, newest first.

Cancels go through ``jobs.service.cancel`` (provider first, then our row, outside any
transaction) with a reason that becomes the job event's detail.
"""
from __future__ import annotations

import logging
from datetime import datetime

from flask import current_app
from sqlalchemy import or_, select

from stcloud import db, states
from stcloud.costs import limits, periods
from stcloud.costs.service import finalize_worker_cost, running_cost
from stcloud.jobs import service as jobs_service
from stcloud.models import CostLimit, Job, utcnow
from stcloud.providers import registry

log = logging.getLogger(__name__)

BOUNDARY_JOB_PREFIX = "cost_period_boundary:"
BOUNDARY_SECOND = 1  # run one second after local midnight
STOPPABLE = (states.RUNNING, states.QUEUED)


def _money(v: float) -> str:
    return f"${v:,.2f}" if v >= 0.01 or v == 0 else f"${v:.4f}"


def finalize_unpriced_worker_jobs() -> int:
    """Price finished jobs of providers that report no cost (self-hosted workers) that have
    no cost yet (safety net for ``finalize_worker_cost``). Returns how many were priced."""
    timed = registry.names_where(lambda svc: not svc.supports_cost_tracking)
    unpriced = (select(Job.id).where(Job.provider.in_(timed), Job.status.in_(states.TERMINAL),
                                     Job.cost_usd.is_(None)).limit(500))
    with db.session() as s:  # read first: no write lock taken every minute for nothing
        ids = list(s.scalars(unpriced))
    if not ids:
        return 0
    with db.transaction() as s:
        jobs = s.scalars(select(Job).where(Job.id.in_(ids), Job.cost_usd.is_(None))).all()
        for job in jobs:
            finalize_worker_cost(s, job)
        return len(jobs)


def _cancel(job_id: str, reason: str) -> bool:
    try:
        job = jobs_service.cancel(job_id, source="scheduler", reason=reason)
    except Exception as exc:  # provider down: try again next minute
        log.warning("cost enforcement: cancelling %s failed: %s", job_id, exc)
        return False
    log.info("cost enforcement: cancelled %s: %s", job_id, reason)
    return job.status == states.CANCELLED


def over_job_caps(now: datetime) -> list[tuple[str, str]]:
    """``[(job_id, reason)]`` for unfinished jobs whose running cost reached ``max_cost_usd``."""
    out = []
    with db.session() as s:
        jobs = s.scalars(select(Job).where(Job.status.in_(states.ACTIVE), Job.max_cost_usd.is_not(None),
                                           Job.started_at.is_not(None))).all()
        for job in jobs:
            used = running_cost(job, now)
            if used >= job.max_cost_usd:
                secs = (now - job.started_at).total_seconds()
                out.append((job.id, f"cost cap: running cost {_money(used)} reached this job's max_cost_usd "
                                    f"{_money(job.max_cost_usd)} ({secs:.0f} s × "
                                    f"${job.rate_usd_per_second or 0:.6f}/s)"))
    return out


def over_stop_limits(now: datetime) -> list[tuple[str, str]]:
    """``[(job_id, reason)]``, newest first per limit, for jobs to stop because a block +
    stop_running limit's actual spend reached its amount."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    with db.session() as s:
        rows = s.scalars(select(CostLimit).where(CostLimit.enabled.is_(True), CostLimit.action == "block",
                                                 CostLimit.stop_running.is_(True))).all()
        for row in rows:
            cfg = limits.limit_config(s, row.provider, row)
            start, end = periods.period_bounds(cfg["period"], cfg["timezone"], now)
            spend = limits.spend_in_period(s, row.provider, start, end, now)
            if spend.spent_usd + limits.EPS < cfg["amount_usd"]:
                continue
            label = "global" if row.provider == "all" else row.provider
            reason = (f"spending limit: actual spend {_money(spend.spent_usd)} reached the {label} "
                      f"{cfg['period']} limit of {_money(cfg['amount_usd'])} (block, stop_running; period "
                      f"{periods.iso(start)} to {periods.iso(end)}, {cfg['timezone']}); stopping "
                      f"unfinished jobs newest first")
            # jobs priced at $0 (your own idle machine) add nothing to the spend: leave them be
            stmt = (select(Job.id).where(Job.status.in_(STOPPABLE),
                                         or_(Job.rate_usd_per_second.is_(None), Job.rate_usd_per_second > 0))
                    .order_by(Job.created_at.desc(), Job.id.desc()))
            if row.provider != "all":
                stmt = stmt.where(Job.provider == row.provider)
            for job_id in s.scalars(stmt):
                if job_id not in seen:
                    seen.add(job_id)
                    out.append((job_id, reason))
    return out


def enforce_limits(now: datetime | None = None) -> dict:
    """One enforcement pass (APScheduler runs it every 60 s and at period boundaries, in an
    app context). Returns what it did: ``{priced, capped, stopped}`` (job ids)."""
    now = now or utcnow()
    priced = finalize_unpriced_worker_jobs()
    capped = [job_id for job_id, reason in over_job_caps(now) if _cancel(job_id, reason)]
    stopped = [job_id for job_id, reason in over_stop_limits(now) if _cancel(job_id, reason)]
    sched = current_app.extensions.get("stcloud.scheduler")
    if sched is not None:
        try:
            sync_boundary_jobs(sched, current_app._get_current_object())
        except Exception:
            log.exception("could not refresh the spend-period boundary jobs")
    return {"priced": priced, "capped": capped, "stopped": stopped}


# ---- period boundaries ---------------------------------------------------------------------

def boundary_timezones() -> list[str]:
    """UTC plus the time zone of every enabled limit."""
    with db.session() as s:
        zones = {"UTC", *s.scalars(select(CostLimit.timezone).where(CostLimit.enabled.is_(True)))}
    return sorted(z for z in zones if periods.is_valid_timezone(z))


def _boundary_runner(app):
    def run():
        with app.app_context():
            try:
                enforce_limits()
            except Exception:
                log.exception("spend-period boundary run failed")
    return run


def sync_boundary_jobs(sched, app) -> list[str]:
    """Make the scheduler hold one cron job per time zone in use, firing just after local
    midnight (every daily, weekly and monthly boundary is a local midnight). Returns the ids."""
    from apscheduler.triggers.cron import CronTrigger

    with app.app_context():
        zones = boundary_timezones()
    wanted = {BOUNDARY_JOB_PREFIX + z: z for z in zones}
    for job in sched.get_jobs():
        if job.id.startswith(BOUNDARY_JOB_PREFIX) and job.id not in wanted:
            job.remove()
    existing = {j.id for j in sched.get_jobs()}
    for job_id, tz in wanted.items():
        if job_id not in existing:
            sched.add_job(_boundary_runner(app), CronTrigger(hour=0, minute=0, second=BOUNDARY_SECOND,
                                                             timezone=periods.zone(tz)),
                          id=job_id, replace_existing=True, misfire_grace_time=3600, coalesce=True)
    return sorted(wanted)


def schedule_hook(sched, app) -> None:
    """Registered in ``app.extensions["stcloud.schedule_hooks"]``; ``scheduler.start`` calls it."""
    sync_boundary_jobs(sched, app)
