"""Jobs whose agent the provider's batch system starts (``runs_own_agent``: Slurm): the
provider's view of each job, reconciled with what its agent reports (scheduler job
``agent_jobs_sync``, every few seconds; ``sync_job`` for one job now).

The agent inside the batch job reports logs, progress, checkpoints and the end state through
the worker API; the batch system knows what the agent cannot say: that the job waits (and
why), that it hit its time limit, ran out of memory, lost its node, was preempted, requeued or
cancelled behind stcloud's back. Both go through the one transition function. The adapter's
``get_job_status`` says it through ``CloudJobInfo`` (see ``CloudTrainerService.runs_own_agent``):

* queued -> ``queued`` with the reason (Slurm: ``Resources``, ``Priority``,
  ``QOSMaxJobsPerUser``…) on the job (``provider_data[<provider>].reason``, the progress stage
  and one log line per change). A job that was running and shows up queued with a higher
  ``restarts`` count was requeued by the batch system: re-queued here too (attempt + 1; the next
  run resumes from the last uploaded checkpoint), failed after ``max_attempts``.
* running -> ``running`` (the agent then claims it).
* an end state while the job is still active here — the agent was silent — closes the job with
  the provider's reason (``Slurm: TIMEOUT — the job hit its time limit``). A ``retryable`` end
  (Slurm: ``NODE_FAIL`` / ``PREEMPTED`` / ``BOOT_FAIL``) is not the job's fault: it is submitted
  again as a new batch job (a new per-job credential) and resumes from its checkpoint, up to
  ``max_attempts``.

Cost: the rate recorded on the job (``rate_usd_per_second``) × run time.
"""
from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import select

from stcloud import db, states
from stcloud.costs import service as costs
from stcloud.jobs import job_secrets
from stcloud.jobs import service as jobs_service
from stcloud.models import Job, Worker, utcnow
from stcloud.providers import registry
from stcloud.providers.base import (
    CloudJobInfo,
    CloudJobStatus,
    CloudTrainerService,
    ProviderFailure,
    RunRequest,
)
from stcloud.workers import service as workers_service

log = logging.getLogger(__name__)

ACTIVE = (states.QUEUED, states.RUNNING)
BATCH = 200
SYNC_SECONDS = 5
FORGOTTEN = "UNKNOWN"  # raw_status (with status None) of a job the batch system no longer knows


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def system_name(service: CloudTrainerService) -> str:
    """How messages name the batch system: "Slurm job 123" (the provider's name, not its
    longer label)."""
    return service.provider_name.replace("_", " ").title()


def providers() -> tuple[str, ...]:
    """The registered providers whose batch system starts the agent."""
    return registry.names_where(lambda svc: svc.runs_own_agent)


def active_jobs(provider: str, limit: int = BATCH) -> list[tuple[str, str]]:
    with db.session() as s:
        rows = s.execute(select(Job.id, Job.provider_job_id).where(
            Job.provider == provider, Job.status.in_(ACTIVE), Job.provider_job_id.is_not(None),
            Job.provider_job_id != "").order_by(Job.created_at).limit(limit)).all()
    return [(r.id, r.provider_job_id) for r in rows]


def sync_all() -> int:
    """Scheduler job: read every active job of each such provider from its batch system and
    reconcile it. Returns how many were read. A batch system that cannot be reached is logged
    and retried next round."""
    read = 0
    for provider in providers():
        settle_finished(provider)
        jobs = active_jobs(provider)
        if not jobs:
            continue
        service = registry.get(provider)
        reason = service.not_ready_reason()
        if reason:
            log.warning("%s sync idle: %s", provider, reason)
            continue
        for job_id, remote_id in jobs:
            sync_job(job_id, service, remote_id=remote_id)
        read += len(jobs)
    return read


def sync_job(job_id: str, service: CloudTrainerService, *, remote_id: str | None = None) -> str | None:
    """Read one job from its batch system (no transaction open meanwhile) and reconcile it.
    Returns the job's status afterwards, or None when it could not be read."""
    if remote_id is None:
        with db.session() as s:
            job = s.get(Job, job_id)
            remote_id = job.provider_job_id if job is not None else None
    if not remote_id:
        return None
    try:
        info = service.get_job_status(remote_id)
    except ProviderFailure as exc:
        log.warning("%s: reading job %s (%s job %s) failed: %s", service.provider_name, job_id, system_name(service),
                    remote_id, exc.message)
        return None
    status, resubmit = reconcile(job_id, info, system_name(service))
    if resubmit:
        status = _resubmit(job_id, service, info)
    return status


def _note(s, job: Job, text: str) -> None:
    jobs_service.append_log(s, job, f"[stcloud] {text}\n")


def reconcile(job_id: str, info: CloudJobInfo, label: str) -> tuple[str | None, bool]:
    """Apply the batch system's view of ``job_id`` (``label``: its name in messages, "Slurm").
    Returns (status afterwards, whether the job must be submitted again — done by the caller
    outside this transaction)."""
    with db.transaction() as s:
        job = s.scalars(select(Job).where(Job.id == job_id).with_for_update()).first()
        if job is None:
            return None, False
        if states.is_terminal(job.status) or job.provider_job_id != info.provider_job_id:
            return job.status, False  # closed meanwhile, or an answer about a retired batch job
        source = job.provider
        data = dict(job.provider_data or {})
        mine = dict(data.get(source) or {})
        extra = info.extra or {}
        reason, raw, status = extra.get("reason"), info.raw_status, info.status
        restarts = int(extra.get("restarts") or 0)
        seen = int(mine.get("restarts") or 0)
        if (raw, reason) != (mine.get("state"), mine.get("reason")):
            _note(s, job, f"{label} job {info.provider_job_id}: {raw}" + (f" ({reason})" if reason else "")
                  + (f" on {extra['nodes']}" if extra.get("nodes") and status != CloudJobStatus.QUEUED else ""))
        mine.update(state=raw, reason=reason, nodes=extra.get("nodes"), polled_at=_iso(utcnow()))
        rate = mine.get("rate_usd_per_second")
        if rate is None:
            rate = extra.get("rate_usd_per_second")
        if rate is not None and job.rate_usd_per_second != rate:
            job.rate_usd_per_second = rate
        resubmit = False
        if restarts > seen and status in (CloudJobStatus.QUEUED, CloudJobStatus.RUNNING):
            # The batch system requeued the job. Once its new run is running, that run's agent
            # settles the old attempt when it claims; before that (requeue in progress, queued
            # again) the attempt ends here.
            mine["restarts"] = restarts
            if status != CloudJobStatus.RUNNING and job.status == states.RUNNING:
                workers_service.requeue_in(s, job, f"{label} requeued job {info.provider_job_id} "
                                                   f"(restart {restarts}, {raw})", source=source)
        if status is None and raw == FORGOTTEN:
            # The batch system forgot the job (Slurm: it ended more than MinJobAge ago, while
            # nobody watched) and its agent never reported: nothing will ever say more.
            jobs_service.apply_update_in(s, job, jobs_service.JobUpdate(
                status=states.FAILED, detail=info.error, error=info.error), source=source)
            if states.is_terminal(job.status):
                costs.finalize_worker_cost(s, job)
                workers_service.forget_job_agent(s, job.id)
        elif status is None:
            log.info("%s: job %s is %s in %s: no change", source, job_id, raw, label)
        elif status == CloudJobStatus.QUEUED:
            if job.status == states.QUEUED:
                job.progress = {**(job.progress or {}), "stage": f"pending in {label}: {reason or 'waiting'}"}
        elif status == CloudJobStatus.RUNNING:
            if job.status == states.QUEUED:
                jobs_service.transition(s, job, states.RUNNING, source=source, at=info.started_at,
                                        detail=f"{label}: {raw} on {extra.get('nodes') or 'a node'}")
                job.progress = {**(job.progress or {}), "stage": "starting"}
        elif extra.get("retryable") and job.attempt < (job.max_attempts or 1):
            resubmit = True  # the caller submits it again, outside this transaction
        else:
            _close(s, job, info, label)
        data[source] = mine
        job.provider_data = data
        return job.status, resubmit


def _close(s, job: Job, info: CloudJobInfo, label: str) -> None:
    """The batch system ended the job and its agent did not say so: close it with the
    batch system's reason."""
    target = info.status.value
    detail = info.error or f"{label}: {info.raw_status}"
    if target == states.COMPLETED:
        detail = f"{label}: {info.raw_status} (job {info.provider_job_id}) without a report from the agent"
    update = jobs_service.JobUpdate(status=target, detail=detail, completed_at=info.completed_at,
                                    error=info.error if target == states.FAILED else None)
    jobs_service.apply_update_in(s, job, update, source=job.provider)
    if target == states.FAILED and job.status == states.FAILED and info.error:
        job.error = info.error
    if states.is_terminal(job.status):
        costs.finalize_worker_cost(s, job)
        workers_service.forget_job_agent(s, job.id)


def _resubmit(job_id: str, service: CloudTrainerService, info: CloudJobInfo) -> str | None:
    """Ended by the infrastructure (``retryable``: Slurm's NODE_FAIL / PREEMPTED / BOOT_FAIL): a
    new batch job (next submission number, so the old credential stops working) resumes the
    job from its last uploaded checkpoint."""
    label = system_name(service)
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None or states.is_terminal(job.status) or job.provider_job_id != info.provider_job_id:
            return job.status if job is not None else None
        source = job.provider
        reason = info.error or f"{label}: {info.raw_status}"
        if job.status == states.RUNNING:
            workers_service.requeue_in(s, job, reason, source=source)
        elif job.attempt < (job.max_attempts or 1):
            jobs_service.append_log(s, job, f"[stcloud] {reason}: submitting again\n")
            job.attempt += 1
        if states.is_terminal(job.status):
            return job.status
        data = dict(job.provider_data or {})
        submission = workers_service.job_token_submission(job) + 1
        mine = dict(data.get(source) or {})
        retired = list(mine.get("retired") or []) + [info.provider_job_id]
        data.update({"job_token_submission": submission, source: {**mine, "retired": retired[-20:]}})
        job.provider_data = data
        job.provider_job_id = None  # not polled while the new batch job is being submitted
        request = RunRequest(job_id=job.id, name=job.name, config=job_secrets.unseal(job.id, job.config),
                             dataloader_config=job_secrets.unseal(job.id, job.dataloader_config, "dataloader"),
                             hardware=job.hardware,
                             archive_path=job.archive_path, options=dict(mine.get("overrides") or {}),
                             inputs={"agent_submission": submission})
    try:
        created = service.run_job(request)
    except ProviderFailure as exc:
        with db.transaction() as s:
            job = s.get(Job, job_id)
            msg = f"{info.error or info.raw_status}; submitting it again failed: {exc.message}"
            jobs_service.apply_update_in(s, job, jobs_service.JobUpdate(status=states.FAILED, detail=msg, error=msg),
                                         source=job.provider)
            costs.finalize_worker_cost(s, job)
            return job.status
    with db.transaction() as s:
        job = s.get(Job, job_id)
        source = job.provider
        job.provider_job_id = created.provider_job_id
        data = dict(job.provider_data or {})
        data[source] = {**(data.get(source) or {}), **(created.extra.get(source) or {}),
                        "job_id": created.provider_job_id, "state": created.raw_status, "reason": None,
                        "restarts": 0}
        job.provider_data = data
        _note(s, job, f"submitted again as {label} job {created.provider_job_id} (attempt {job.attempt}/"
                      f"{job.max_attempts}, resuming from its last checkpoint)")
        return job.status


def settle_finished(provider: str, limit: int = BATCH) -> int:
    """Jobs of ``provider`` that ended without this sync (cancelled by a user, reported by
    their agent): their cost at the rate recorded on the job — billing stops when the job
    ended here — and the worker row of their agent removed. Returns how many were settled."""
    prefix = workers_service.JOB_AGENT_PREFIX
    with db.session() as s:  # read first: no write lock on the common, idle path
        unpriced = list(s.scalars(select(Job.id).where(
            Job.provider == provider, Job.status.in_(states.TERMINAL), Job.cost_usd.is_(None)).limit(limit)))
        agents = [wid for wid in s.scalars(select(Worker.id).where(Worker.id.like(f"{prefix}%")).limit(limit))
                  if wid.startswith(prefix)]  # "_" is a LIKE wildcard
        ended = []
        for wid in agents:
            job = s.get(Job, wid[len(prefix):])
            if job is None or states.is_terminal(job.status):
                ended.append(wid)
    if not unpriced and not ended:
        return 0
    with db.transaction() as s:
        for job in s.scalars(select(Job).where(Job.id.in_(unpriced), Job.cost_usd.is_(None))):
            costs.finalize_worker_cost(s, job)
        for wid in ended:
            w = s.get(Worker, wid)
            if w is not None:
                s.delete(w)
    return len(unpriced) + len(ended)


def schedule_hook(sched, app) -> None:
    """Registered in ``app.extensions["stcloud.schedule_hooks"]``: the sync job."""
    def run():
        with app.app_context():
            sync_all()

    sched.add_job(run, "interval", seconds=SYNC_SECONDS, id="agent_jobs_sync", name="agent_jobs_sync",
                  next_run_time=datetime.now(UTC), replace_existing=True)
