"""Jobs: the one transition function, updates from every writer, logs, cancel, delete, list.

Every status change — API, webhook, poller, worker report, scheduler — goes through
``transition`` (inside a session) or ``apply_update`` (which opens its own transaction).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete as sa_delete
from sqlalchemy import select
from sqlalchemy.orm import Session

from stcloud import db, states
from stcloud.accounts import audit, scope
from stcloud.errors import Conflict, NotConfigured, NotFound, ProviderError
from stcloud.jobs import job_secrets, loss_points, metrics, upload_cleanup
from stcloud.jobs import progress as progress_mod
from stcloud.jobs import provider_state as provider_state_mod
from stcloud.models import Job, JobEvent, JobLogChunk, JobLossPoint, utcnow
from stcloud.notify import events as notify_events
from stcloud.providers import registry
from stcloud.providers.base import CloudJobInfo, ProviderFailure
from stcloud.redact import redact

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class JobUpdate:
    """What a writer learned about a job. Every field is optional."""

    status: str | None = None  # already mapped to our statuses
    detail: str | None = None
    logs_append: str | None = None  # new text
    logs_full: str | None = None  # the provider's whole log so far: only the new tail is kept
    error: str | None = None
    outputs: list | None = None
    billed_seconds: float | None = None  # -> cost_usd with the rate recorded on the job
    cost_usd: float | None = None  # the provider's own bill (wins over billed_seconds × rate)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    provider_job_id: str | None = None
    provider_data: dict | None = None  # merged into job.provider_data
    progress: dict | None = None  # merged into job.progress
    extra: dict = field(default_factory=dict)  # plain column -> value assignments


def update_from_info(info: CloudJobInfo, *, provider: str, detail: str | None = None) -> JobUpdate:
    """What a provider's answer (poll, webhook, launch) means for the job: the one
    translation every reader of a provider uses."""
    status = info.status.value if info.status else None
    return JobUpdate(
        status=status,
        detail=detail or (f"{provider}: {info.raw_status}" if info.raw_status else None),
        logs_full=info.logs,
        error=info.error if status == states.FAILED else None,
        outputs=info.outputs if status == states.COMPLETED else None,
        billed_seconds=info.billed_seconds,
        cost_usd=info.cost_usd,
        started_at=info.started_at,
        completed_at=info.completed_at,
        provider_job_id=info.provider_job_id or None,
        provider_data=dict(info.extra) or None,
        progress=dict(info.progress) if info.progress else None,
    )


@dataclass(frozen=True)
class ApplyResult:
    job_id: str
    from_status: str
    status: str
    moved: bool  # status changed
    accepted: bool  # False when a requested move was refused (late/backward/terminal)


def transition(s: Session, job: Job, to: str, *, source: str, detail: str | None = None,
               at: datetime | None = None) -> bool:
    """Move ``job`` to ``to`` if SPEC §2 allows it; append a job_events row either way.

    Returns True when the status changed. Same-status updates are no-ops (not recorded:
    pollers repeat them constantly); forbidden moves are recorded with ``accepted=False``.
    """
    states.validate_status(to)
    current = job.status
    if to == current:
        return False
    when = at or utcnow()
    if not states.can_move(current, to):
        log.info("job %s: ignored %s -> %s from %s", job.id, current, to, source)
        s.add(JobEvent(job_id=job.id, at=utcnow(), source=source, from_status=current,
                       to_status=to, accepted=False,
                       detail=f"ignored: {current} -> {to} not allowed" + (f" ({detail})" if detail else "")))
        return False
    job.status = to
    if to == states.RUNNING and job.started_at is None:
        job.started_at = when
    if to in states.TERMINAL:
        job.completed_at = when
        job.lease_expires_at = None
    if to == states.QUEUED and current == states.RUNNING:
        job.started_at = None  # re-queued: a new attempt starts later
    s.add(JobEvent(job_id=job.id, at=utcnow(), source=source, from_status=current, to_status=to,
                   accepted=True, detail=detail))
    if to in states.TERMINAL:
        notify_events.job_finished(s, job, metrics.compute(job))  # queued in this transaction; sent after it commits
        upload_cleanup.queue(s, job)  # the uploaded dataset is deleted from the provider (jobs.reconcile)
    return True


def append_log(s: Session, job: Job, text: str) -> int:
    """Append ``text`` to the job's log; returns the bytes added. Progress is parsed from it."""
    if not text:
        return 0
    data = text.encode("utf-8", "replace")
    s.add(JobLogChunk(job_id=job.id, offset=job.log_size, data=data))
    job.log_size = job.log_size + len(data)
    folded = progress_mod.parse(text, job.progress)
    if folded is not None:
        job.progress = folded.progress
        if folded.points:
            s.flush()  # the job row exists before its points reference it
            loss_points.append(s.connection(), job.id, folded.points)
    return len(data)


def _new_tail(job: Job, full: str) -> str:
    data = full.encode("utf-8", "replace")
    if len(data) <= job.log_size:
        return ""
    return data[job.log_size:].decode("utf-8", "replace")


def apply_update_in(s: Session, job: Job, update: JobUpdate, *, source: str) -> ApplyResult:
    """Apply ``update`` to ``job`` inside the caller's session."""
    before = job.status
    accepted = True
    if update.provider_job_id and not job.provider_job_id:
        job.provider_job_id = update.provider_job_id
    if update.provider_data:
        job.provider_data = {**(job.provider_data or {}), **update.provider_data}
    if update.logs_full is not None:
        append_log(s, job, _new_tail(job, update.logs_full))
    if update.logs_append:
        append_log(s, job, update.logs_append)
    if update.progress:
        job.progress = {**(job.progress or {}), **update.progress}
    if update.started_at and (job.started_at is None or update.started_at < job.started_at):
        job.started_at = update.started_at
    if update.billed_seconds is not None and update.billed_seconds >= 0:
        job.billed_seconds = update.billed_seconds
        if job.rate_usd_per_second is not None:
            job.cost_usd = round(update.billed_seconds * job.rate_usd_per_second, 6)
    if update.cost_usd is not None and update.cost_usd >= 0:
        job.cost_usd = round(float(update.cost_usd), 6)
    for key, value in update.extra.items():
        setattr(job, key, value)
    if update.status and _completed_implies_running(job.status, update.status):
        # The provider says it finished while we still think it is queued (its start/
        # processing events were filtered out, lost or are still in flight): it ran, so
        # record running first — queued -> completed is not an allowed move by itself.
        transition(s, job, states.RUNNING, source=source, at=update.started_at,
                   detail=f"implied by {update.status}" + (f" ({update.detail})" if update.detail else ""))
    if update.status:
        at = update.completed_at if update.status in states.TERMINAL else (
            update.started_at if update.status == states.RUNNING else None)
        moved_ok = update.status == before or transition(
            s, job, update.status, source=source, detail=update.detail, at=at)
        accepted = update.status == before or moved_ok
        if moved_ok and update.status in states.TERMINAL and update.completed_at:
            job.completed_at = update.completed_at
    # Outputs and errors belong to the state the job is in: a late "failed" event refused
    # by the state machine must not paint an error on a completed job.
    if accepted and update.error is not None and job.status == states.FAILED:
        job.error = update.error
    if accepted and update.outputs is not None:
        job.outputs = list(update.outputs)
    return ApplyResult(job.id, before, job.status, job.status != before, accepted)


def _completed_implies_running(current: str, target: str) -> bool:
    return (target == states.COMPLETED and not states.can_move(current, target)
            and states.can_move(current, states.RUNNING))


def apply_update(job_id: str, update: JobUpdate, *, source: str) -> ApplyResult:
    """Apply ``update`` in its own short write transaction. Raises NotFound."""
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return apply_update_in(s, job, update, source=source)


def get_job(s: Session, job_id: str) -> Job:
    job = s.get(Job, job_id)
    if job is None or not scope.may_see(job.owner_id):  # members: others' jobs do not exist
        raise NotFound(f"job {job_id} not found")
    return job


def newest_job_id(s: Session) -> str | None:
    stmt = select(Job.id)
    if (owner := scope.owner_filter()) is not None:
        stmt = stmt.where(Job.owner_id == owner)
    return s.scalar(stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(1))


def cancel(job_id: str, *, source: str = "api", reason: str | None = None) -> Job:
    """Cancel a job: the provider first (outside any transaction), then our row.

    Idempotent: a terminal job is returned unchanged. Raises NotFound, ProviderError.
    """
    with db.session() as s:
        job = get_job(s, job_id)
        if states.is_terminal(job.status):
            return job
        provider, provider_job_id = job.provider, job.provider_job_id
    # A job that exists on the provider is cancelled there first; if the provider cannot
    # be reached (e.g. its token was removed) the error surfaces instead of a local-only
    # cancel that would leave the remote run billing.
    if provider_job_id:
        service = registry.get(provider)
        if service.not_ready_reason():
            raise NotConfigured(service.not_ready_reason(), extra={"provider": provider})
        try:
            service.cancel_job(provider_job_id)
        except ProviderError:
            raise
        except ProviderFailure as exc:
            raise ProviderError(f"{service.label}: {exc}", status=exc.http_status) from exc
        except Exception as exc:  # the adapter should wrap, but never 500 on a provider fault
            raise ProviderError(f"{provider}: cancel failed: {exc}") from exc
    with db.transaction() as s:
        job = get_job(s, job_id)
        moved = transition(s, job, states.CANCELLED, source=source, detail=reason or "cancelled by user")
    if moved and scope.current() is None:  # requests are audited by the web hook; this is background code
        audit.record("job.cancel", target=job_id, actor="system", detail={"source": source, "reason": reason})
    return job


def delete(job_id: str) -> None:
    """Delete a terminal job with its events and logs. Raises NotFound, Conflict."""
    with db.transaction() as s:
        job = get_job(s, job_id)
        if not states.is_terminal(job.status):
            raise Conflict(f"job {job_id} is {job.status}; cancel it before deleting")
        archive = job.archive_path
        s.execute(sa_delete(JobLogChunk).where(JobLogChunk.job_id == job_id))
        s.execute(sa_delete(JobLossPoint).where(JobLossPoint.job_id == job_id))
        s.delete(job)
    job_secrets.forget(job_id)
    if archive:
        Path(archive).unlink(missing_ok=True)


def to_dict(job: Job, *, include_config: bool = True) -> dict:
    def iso(dt):
        return dt.isoformat().replace("+00:00", "Z") if dt else None

    d = {
        "id": job.id,
        "name": job.name,
        "provider": job.provider,
        "provider_job_id": job.provider_job_id,
        "status": job.status,
        "hardware": job.hardware,
        "gpu_count": job.gpu_count,
        "rate_usd_per_second": job.rate_usd_per_second,
        "estimated_cost_usd": job.estimated_cost_usd,
        "estimate": job.estimate,
        "cost_usd": job.cost_usd,
        "billed_seconds": job.billed_seconds,
        "max_cost_usd": job.max_cost_usd,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "completed_at": iso(job.completed_at),
        "error": job.error,
        "progress": job.progress or {},
        "percent": progress_mod.percent(job.progress),
        "outputs": job.outputs or [],
        "delivery": job.delivery,
        "delivery_error": job.delivery_error,
        "snapshot": job.snapshot,
        "snapshot_error": job.snapshot_error,
        "config_name": job.config_name,
        "dataset_sha256": job.dataset_sha256,
        "idempotency_key": job.idempotency_key,
        "worker_id": job.worker_id,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "requirements": job.requirements,
        "checkpoint": job.checkpoint,
        "log_size": job.log_size,
        "rerun_of": job.rerun_of,
        # resume anywhere (jobs/resume.py): the chain and its summed cost: GET .../<id>/chain
        "resumed_from": job.resumed_from, "resume_step": job.resume_step, "chain_root": job.chain_root,
        "auto_resume": job.auto_resume,
        "terminal": states.is_terminal(job.status),
        "metrics": metrics.compute(job),
        "approval": _approval_view((job.provider_data or {}).get("approval")),
        "placement": job.placement,  # provider "auto": where it went and why (stcloud.pipelines)
        # the provider's own scheduler on the job (Slurm: state, reason, node; jobs/provider_state.py)
        "provider_state": provider_state_mod.of(job),
    }
    if include_config:
        # The stored config carries what the trainer needs (publishing keys, tokens); what
        # leaves the server is masked.
        d["config"] = redact(job.config or {})
        d["dataloader_config"] = redact(job.dataloader_config or [])
    return d


def _approval_view(info: dict | None) -> dict | None:
    """The approval record of a job that needed one (SPEC §13), without internal fields."""
    if not info:
        return None
    return {k: v for k, v in info.items() if k != "expected_dataset_sha256"}


def event_to_dict(ev: JobEvent) -> dict:
    return {
        "id": ev.id,
        "at": ev.at.isoformat().replace("+00:00", "Z"),
        "source": ev.source,
        "from": ev.from_status,
        "to": ev.to_status,
        "accepted": ev.accepted,
        "detail": ev.detail,
    }
