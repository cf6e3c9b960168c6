"""Polls Replicate for active jobs (scheduler job ``poll_providers``, every few seconds).

Each due job (``next_poll_at`` <= now) is read from Replicate *outside* any transaction, the
prediction is applied through the one transition path (``replicate_map`` ->
``jobs.service.apply_update_in``) and the next poll is scheduled: fast while queued, slower
while running, slower still when webhooks are configured (the poll is then a reconciliation
that catches missed webhooks), exponential on errors, and ``Retry-After`` on 429.

Also reconciles uncertain creates: a job whose prediction create failed in a way that may
have created one anyway (``provider_data.create_uncertain``) is looked up by its job id; a
prediction found for a job that is no longer active is cancelled, so nothing runs — or
bills — behind stcloud's back.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select

from stcloud import db
from stcloud.errors import BadRequest, Conflict, ProviderError, RateLimited
from stcloud.jobs import service as jobs_service
from stcloud.jobs import states
from stcloud.models import Job, utcnow
from stcloud.providers import config, replicate_map
from stcloud.providers.replicate import ReplicateAPIError, ReplicateService

log = logging.getLogger(__name__)

POLLED_STATUSES = (states.QUEUED, states.RUNNING)
# seconds until the next poll: (without webhooks, with webhooks)
INTERVALS = {states.QUEUED: (5, 15), states.RUNNING: (15, 60), states.UPLOADING: (5, 15)}
ERROR_BASE = 10
MAX_DELAY = 600
BATCH = 100
# A submit writes its progress several times a second; an ``uploading`` job silent this
# long belongs to a submit that died with its process (restart, crash).
INTERRUPTED_AFTER = timedelta(minutes=15)


@dataclass(frozen=True)
class PollOutcome:
    job_id: str
    ok: bool
    status: str | None = None
    moved: bool = False
    error: str | None = None
    rate_limited: bool = False
    retry_after: float | None = None


def next_delay(status: str, webhooks: bool) -> float:
    fast, slow = INTERVALS.get(status, (15, 60))
    return slow if webhooks else fast


def error_delay(failures: int, retry_after: float | None = None) -> float:
    if retry_after is not None:
        return min(max(retry_after, 1.0), 3600.0)
    return float(min(MAX_DELAY, ERROR_BASE * (2 ** max(0, failures - 1))))


def _service() -> ReplicateService | None:
    from stcloud.providers import factories

    try:
        return factories.replicate_service()
    except Exception as exc:  # noqa: BLE001 - no token: nothing to poll with
        log.debug("replicate poller idle: %s", exc)
        return None


def poll_due(now: datetime | None = None, limit: int = BATCH) -> int:
    """Poll every active Replicate job whose next poll is due. Returns how many were polled.

    Runs in the scheduler (app context, no arguments). Stops the round at the first 429.
    """
    now = now or utcnow()
    reap_interrupted(now)
    with db.session() as s:
        due = list(s.scalars(
            select(Job.id).where(Job.provider == "replicate", Job.status.in_(POLLED_STATUSES),
                                 Job.provider_job_id.is_not(None),
                                 or_(Job.next_poll_at.is_(None), Job.next_poll_at <= now))
            .order_by(Job.next_poll_at.asc(), Job.id).limit(limit)))
        uncertain = list(s.scalars(
            select(Job.id).where(Job.provider == "replicate", Job.provider_job_id.is_(None),
                                 Job.status.in_(states.TERMINAL), Job.next_poll_at.is_not(None),
                                 Job.next_poll_at <= now)
            .order_by(Job.created_at.desc()).limit(limit)))
    if not due and not uncertain:
        return 0
    service = _service()
    if service is None:
        return 0
    webhooks = bool(config.webhook_endpoint())
    polled = 0
    for job_id in due:
        outcome = poll_job(job_id, service=service, now=now, webhooks=webhooks)
        polled += 1
        if outcome.rate_limited:
            break
    for job_id in uncertain:
        _reconcile_uncertain(job_id, service, now)
    return polled


def reap_interrupted(now: datetime | None = None) -> int:
    """Fail jobs left in ``uploading`` by a submit that died with its process. A Replicate
    job may have got a prediction just before: it is marked for reconciliation (found by
    our job id and cancelled). Returns how many were failed."""
    now = now or utcnow()
    with db.session() as s:  # read first: no write lock on the common, idle path
        ids = list(s.scalars(select(Job.id).where(Job.status == states.UPLOADING,
                                                  Job.updated_at < now - INTERRUPTED_AFTER)))
    if not ids:
        return 0
    stale = []
    with db.transaction() as s:
        for job in s.scalars(select(Job).where(Job.id.in_(ids), Job.status == states.UPLOADING,
                                               Job.updated_at < now - INTERRUPTED_AFTER)):
            msg = "submit was interrupted (stcloud stopped while packaging or uploading); submit again"
            jobs_service.transition(s, job, states.FAILED, source="poller", detail=msg)
            job.error = msg
            job.progress = {**(job.progress or {}), "stage": "failed"}
            if job.provider == "replicate" and not job.provider_job_id:
                job.provider_data = {**(job.provider_data or {}), "create_uncertain": True}
                job.next_poll_at = now
            stale.append(job.id)
    if stale:
        log.warning("failed %d job(s) whose submit was interrupted", len(stale))
    return len(stale)


def poll_job(job_id: str, *, service: ReplicateService | None = None, now: datetime | None = None,
             webhooks: bool | None = None, source: str = "poller") -> PollOutcome:
    """Read the job's prediction now and apply it. Never raises for provider errors: they
    are counted on the job (``poll_failures``) and push ``next_poll_at`` back."""
    now = now or utcnow()
    with db.session() as s:
        job = jobs_service.get_job(s, job_id)
        prediction_id, failures = job.provider_job_id, job.poll_failures or 0
    if not prediction_id:
        return PollOutcome(job_id, ok=False, error="no prediction yet")
    service = service or _service()
    if service is None:
        return PollOutcome(job_id, ok=False, error="REPLICATE_API_TOKEN not set")
    if webhooks is None:
        webhooks = bool(config.webhook_endpoint())
    try:
        pred = service.get_prediction(prediction_id)  # no transaction is open here
    except ReplicateAPIError as exc:
        failures += 1
        delay = error_delay(failures, exc.retry_after if exc.kind == "rate_limited" else None)
        with db.transaction() as s:
            job = s.get(Job, job_id)
            if job is not None:
                job.poll_failures = failures
                job.next_poll_at = now + timedelta(seconds=delay)
        log.warning("poll of job %s (prediction %s) failed (%d in a row): %s; next in %.0f s",
                    job_id, prediction_id, failures, exc, delay)
        return PollOutcome(job_id, ok=False, error=str(exc), rate_limited=exc.kind == "rate_limited",
                           retry_after=exc.retry_after)
    update = replicate_map.update_from_info(replicate_map.info_from_prediction(pred))
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None:
            return PollOutcome(job_id, ok=False, error="job deleted")
        result = jobs_service.apply_update_in(s, job, update, source=source)
        job.poll_failures = 0
        job.next_poll_at = (None if states.is_terminal(job.status)
                            else now + timedelta(seconds=next_delay(job.status, webhooks)))
    return PollOutcome(job_id, ok=True, status=result.status, moved=result.moved)


def refresh(job_id: str, *, source: str = "refresh") -> PollOutcome:
    """Poll one job now (the Refresh button / ``POST /api/cloud/jobs/<id>/refresh``).

    Raises NotFound, BadRequest (not a Replicate job), Conflict (no prediction yet),
    NotConfigured (no token), ProviderError / RateLimited (Replicate failed)."""
    from stcloud.providers import factories

    with db.session() as s:
        job = jobs_service.get_job(s, job_id)
        provider, prediction_id = job.provider, job.provider_job_id
    if provider != "replicate":
        raise BadRequest(f"job {job_id} runs on {provider}; only Replicate jobs are refreshed from the "
                         "provider (workers report by themselves)")
    if not prediction_id:
        raise Conflict(f"job {job_id} has no Replicate prediction yet")
    service = factories.replicate_service()
    outcome = poll_job(job_id, service=service, source=source)
    if not outcome.ok:
        if outcome.rate_limited:
            headers = {"Retry-After": str(int(outcome.retry_after))} if outcome.retry_after else None
            raise RateLimited(f"Replicate: {outcome.error}", headers=headers)
        raise ProviderError(f"Replicate: {outcome.error}")
    return outcome


def _reconcile_uncertain(job_id: str, service: ReplicateService, now: datetime) -> None:
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            return
        if not (job.provider_data or {}).get("create_uncertain"):
            job.next_poll_at = None  # nothing to reconcile
            return
        created_at = job.created_at
    try:
        pred = service.find_prediction_for_job(job_id, since=created_at)
    except ReplicateAPIError as exc:
        with db.transaction() as s:
            job = s.get(Job, job_id)
            if job is not None:
                job.poll_failures = (job.poll_failures or 0) + 1
                job.next_poll_at = now + timedelta(seconds=error_delay(job.poll_failures, exc.retry_after))
        return
    if pred is None:
        # Nothing was created. Stop looking after an hour (long after any create could land).
        with db.transaction() as s:
            job = s.get(Job, job_id)
            if job is None:
                return
            if now - job.created_at > timedelta(hours=1):
                job.provider_data = {**(job.provider_data or {}), "create_uncertain": False}
                job.next_poll_at = None
            else:
                job.next_poll_at = now + timedelta(seconds=60)
        return
    pid = pred.get("id")
    cancelled = False
    with db.session() as s:
        job = s.get(Job, job_id)
        active = job is not None and not states.is_terminal(job.status)
    if not active and pred.get("status") not in ("succeeded", "failed", "canceled", "aborted"):
        try:
            cancelled = service.cancel_job(pid)
        except ReplicateAPIError as exc:
            log.warning("could not cancel stray prediction %s of job %s: %s", pid, job_id, exc)
            return
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None:
            return
        note = f"found prediction {pid} created by an uncertain submit" + ("; cancelled it" if cancelled else "")
        jobs_service.append_log(s, job, f"[stcloud] {note}\n")
        job.provider_data = {**(job.provider_data or {}), "create_uncertain": False, "stray_prediction_id": pid}
        if job.provider_job_id is None:
            job.provider_job_id = pid
        job.next_poll_at = None
    log.warning("job %s: %s", job_id, note)
