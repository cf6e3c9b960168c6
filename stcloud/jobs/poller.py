"""Polls the providers for their active jobs (scheduler job ``poll_providers``, every few
seconds).

The poller knows no provider: it asks the registry which providers are polled (an adapter
whose ``poll_interval`` is not None), reads each due job (``next_poll_at`` <= now) with
``get_job_status`` *outside* any transaction, applies the answer through the one update path
(``jobs.service.update_from_info`` -> ``apply_update_in``) and schedules the next poll at the
adapter's interval for the job's new status — exponential on errors, ``Retry-After`` on 429.

Also reconciles uncertain launches: a job whose ``run_job`` failed in a way that may have
created a remote job anyway (``provider_data.create_uncertain``) is looked up with the
adapter's ``find_orphan``; a remote job found for a job that is no longer active is
cancelled, so nothing runs — or bills — behind stcloud's back. (Submits that died with their
process are settled by ``jobs.reconcile``, which hands the ones it cannot settle yet to this
search.)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select

from stcloud import db, states
from stcloud.errors import BadRequest, Conflict, ProviderError, RateLimited
from stcloud.jobs import service as jobs_service
from stcloud.models import Job, utcnow
from stcloud.providers import registry
from stcloud.providers.base import CloudTrainerService, ProviderFailure

log = logging.getLogger(__name__)

POLLED_STATUSES = (states.QUEUED, states.RUNNING)
ERROR_BASE = 10
MAX_DELAY = 600
BATCH = 100
ORPHAN_HORIZON = timedelta(hours=1)  # long after any create could land


@dataclass(frozen=True)
class PollOutcome:
    job_id: str
    ok: bool
    status: str | None = None
    moved: bool = False
    error: str | None = None
    rate_limited: bool = False
    retry_after: float | None = None


def error_delay(failures: int, retry_after: float | None = None) -> float:
    if retry_after is not None:
        return min(max(retry_after, 1.0), 3600.0)
    return float(min(MAX_DELAY, ERROR_BASE * (2 ** max(0, failures - 1))))


def next_poll_at(service: CloudTrainerService, status: str, now: datetime) -> datetime | None:
    """When a job in ``status`` is polled next; None for terminal jobs and unpolled providers."""
    if states.is_terminal(status):
        return None
    delay = service.poll_interval(status)
    return None if delay is None else now + timedelta(seconds=delay)


def _polled() -> dict[str, CloudTrainerService]:
    """Adapters of the providers that are polled and ready (a provider without its token is
    idle: nothing can be read)."""
    return {name: svc for name, svc in registry.services()
            if svc.poll_interval(states.RUNNING) is not None and svc.not_ready_reason() is None}


def poll_due(now: datetime | None = None, limit: int = BATCH) -> int:
    """Poll every active job of a polled provider whose next poll is due. Returns how many
    were polled. Runs in the scheduler (app context, no arguments). A provider's round stops
    at its first 429."""
    now = now or utcnow()
    services = _polled()
    if not services:
        return 0
    with db.session() as s:
        due = s.execute(
            select(Job.id, Job.provider).where(Job.provider.in_(services), Job.status.in_(POLLED_STATUSES),
                                               Job.provider_job_id.is_not(None), Job.provider_job_id != "",
                                               or_(Job.next_poll_at.is_(None), Job.next_poll_at <= now))
            .order_by(Job.next_poll_at.asc(), Job.id).limit(limit)).all()
        orphans = s.execute(
            select(Job.id, Job.provider).where(Job.provider.in_(services), Job.provider_job_id.is_(None),
                                               Job.status.in_(states.TERMINAL), Job.next_poll_at.is_not(None),
                                               Job.next_poll_at <= now)
            .order_by(Job.created_at.desc()).limit(limit)).all()
    polled = 0
    limited: set[str] = set()
    for job_id, provider in due:
        if provider in limited:
            continue
        outcome = poll_job(job_id, service=services[provider], now=now)
        polled += 1
        if outcome.rate_limited:
            limited.add(provider)
    for job_id, provider in orphans:
        _reconcile_uncertain(job_id, services[provider], now)
    return polled


def poll_job(job_id: str, *, service: CloudTrainerService | None = None, now: datetime | None = None,
             source: str = "poller") -> PollOutcome:
    """Read the job's state from its provider now and apply it. Never raises for provider
    errors: they are counted on the job (``poll_failures``) and push ``next_poll_at`` back."""
    now = now or utcnow()
    with db.session() as s:
        job = jobs_service.get_job(s, job_id)
        provider, remote_id, failures = job.provider, job.provider_job_id, job.poll_failures or 0
    if not remote_id:
        return PollOutcome(job_id, ok=False, error="no remote job yet")
    service = service or registry.get(provider)
    try:
        info = service.get_job_status(remote_id)  # no transaction is open here
    except Exception as exc:  # noqa: BLE001 - a plugin's fault must not stop the round
        failures += 1
        limited = isinstance(exc, ProviderFailure) and exc.http_status == 429
        retry_after = exc.retry_after if isinstance(exc, ProviderFailure) else None
        delay = error_delay(failures, retry_after if limited else None)
        with db.transaction() as s:
            job = s.get(Job, job_id)
            if job is not None:
                job.poll_failures = failures
                job.next_poll_at = now + timedelta(seconds=delay)
        log.warning("poll of job %s (%s %s) failed (%d in a row): %s; next in %.0f s",
                    job_id, provider, remote_id, failures, exc, delay)
        return PollOutcome(job_id, ok=False, error=str(exc), rate_limited=limited, retry_after=retry_after)
    update = jobs_service.update_from_info(info, provider=provider)
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None:
            return PollOutcome(job_id, ok=False, error="job deleted")
        result = jobs_service.apply_update_in(s, job, update, source=source)
        job.poll_failures = 0
        job.next_poll_at = next_poll_at(service, job.status, now)
    return PollOutcome(job_id, ok=True, status=result.status, moved=result.moved)


def refresh(job_id: str, *, source: str = "refresh") -> PollOutcome:
    """Poll one job now (the Refresh button / ``POST /api/cloud/jobs/<id>/refresh``).

    Raises NotFound, BadRequest (a provider that is not polled), Conflict (no remote job
    yet), NotConfigured (no token), ProviderError / RateLimited (the provider failed)."""
    with db.session() as s:
        job = jobs_service.get_job(s, job_id)
        provider, remote_id = job.provider, job.provider_job_id
    service = registry.get(provider)
    if service.poll_interval(states.RUNNING) is None:
        raise BadRequest(f"job {job_id} runs on {provider}, which reports by itself; only jobs of polled "
                         "providers are refreshed from the provider")
    if not remote_id:
        raise Conflict(f"job {job_id} has no {service.label} job yet")
    reason = service.not_ready_reason()
    if reason:
        raise BadRequest(reason, title="Not configured")
    outcome = poll_job(job_id, service=service, source=source)
    if not outcome.ok:
        if outcome.rate_limited:
            headers = {"Retry-After": str(int(outcome.retry_after))} if outcome.retry_after else None
            raise RateLimited(f"{service.label}: {outcome.error}", headers=headers)
        raise ProviderError(f"{service.label}: {outcome.error}")
    return outcome


def _reconcile_uncertain(job_id: str, service: CloudTrainerService, now: datetime) -> None:
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            return
        if not (job.provider_data or {}).get("create_uncertain"):
            job.next_poll_at = None  # nothing to reconcile
            return
        created_at = job.created_at
    try:
        info = service.find_orphan(job_id, created_at)
    except Exception as exc:  # noqa: BLE001 - try again later
        with db.transaction() as s:
            job = s.get(Job, job_id)
            if job is not None:
                job.poll_failures = (job.poll_failures or 0) + 1
                job.next_poll_at = now + timedelta(seconds=error_delay(
                    job.poll_failures, exc.retry_after if isinstance(exc, ProviderFailure) else None))
        return
    if info is None:
        # Nothing was created. Stop looking after a while.
        with db.transaction() as s:
            job = s.get(Job, job_id)
            if job is None:
                return
            if now - job.created_at > ORPHAN_HORIZON:
                job.provider_data = {**(job.provider_data or {}), "create_uncertain": False}
                job.next_poll_at = None
            else:
                job.next_poll_at = now + timedelta(seconds=60)
        return
    remote_id = info.provider_job_id
    cancelled = False
    with db.session() as s:
        job = s.get(Job, job_id)
        active = job is not None and not states.is_terminal(job.status)
    remote_done = info.status is not None and info.status.value in states.TERMINAL
    if not active and not remote_done:
        try:
            cancelled = service.cancel_job(remote_id)
        except Exception as exc:  # noqa: BLE001 - try again at the next round
            log.warning("could not cancel stray %s job %s of job %s: %s", service.provider_name, remote_id,
                        job_id, exc)
            return
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None:
            return
        note = f"found {service.label} job {remote_id} created by an uncertain submit" + (
            "; cancelled it" if cancelled else "")
        jobs_service.append_log(s, job, f"[stcloud] {note}\n")
        job.provider_data = {**(job.provider_data or {}), "create_uncertain": False, "stray_prediction_id": remote_id}
        if job.provider_job_id is None:
            job.provider_job_id = remote_id
        job.next_poll_at = None
    log.warning("job %s: %s", job_id, note)
