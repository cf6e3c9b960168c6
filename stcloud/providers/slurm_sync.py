"""Slurm's view of each job, reconciled with what its agent reports (scheduler job
``slurm_sync``, every few seconds; ``sync_job`` for one job now).

The agent inside the batch job reports logs, progress, checkpoints and the end state through
the worker API; Slurm knows what the agent cannot say: that the job waits (and why), that it
hit its time limit, ran out of memory, lost its node, was preempted, requeued or cancelled
behind stcloud's back. Both go through the one transition function:

* ``PENDING`` -> ``queued`` with Slurm's reason (``Resources``, ``Priority``,
  ``QOSMaxJobsPerUser``…) on the job (``provider_data.slurm.reason``, the progress stage and
  one log line per change). A job that was running and shows up PENDING with a higher
  restart count was requeued by Slurm: re-queued here too (attempt + 1; the next run resumes
  from the last uploaded checkpoint), failed after ``max_attempts``.
* ``RUNNING`` -> ``running`` (the agent then claims it).
* an end state while the job is still active here — the agent was silent — closes the job
  with Slurm's reason (``Slurm: TIMEOUT — the job hit its time limit``). ``NODE_FAIL`` /
  ``PREEMPTED`` / ``BOOT_FAIL`` are not the job's fault: it is submitted again as a new batch
  job (a new per-job credential) and resumes from its checkpoint, up to ``max_attempts``.

Cost: ``gpu_hour_usd`` × GPUs × run time, through the rate recorded on the job.
"""
from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select

from stcloud import db
from stcloud.costs import service as costs
from stcloud.jobs import job_secrets, states
from stcloud.jobs import service as jobs_service
from stcloud.models import Job, Worker, utcnow
from stcloud.providers import slurm_factory
from stcloud.providers.base import (
    CloudJobInfo,
    CloudJobStatus,
    ProviderFailure,
    RunRequest,
)
from stcloud.providers.slurm import PROVIDER, SlurmService, rate_usd_per_second
from stcloud.providers.slurm_map import RETRYABLE
from stcloud.workers import service as workers_service

log = logging.getLogger(__name__)

SOURCE = "slurm"
ACTIVE = (states.QUEUED, states.RUNNING)
BATCH = 200


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def active_jobs(limit: int = BATCH) -> list[tuple[str, str]]:
    with db.session() as s:
        rows = s.execute(select(Job.id, Job.provider_job_id).where(
            Job.provider == PROVIDER, Job.status.in_(ACTIVE), Job.provider_job_id.is_not(None),
            Job.provider_job_id != "").order_by(Job.created_at).limit(limit)).all()
    return [(r.id, r.provider_job_id) for r in rows]


def sync_all(service: SlurmService | None = None) -> int:
    """Scheduler job: read every active Slurm job from Slurm and reconcile it. Returns how
    many were read. A Slurm that cannot be reached is logged and retried next round."""
    settle_finished()
    jobs = active_jobs()
    if not jobs:
        return 0
    service = service or slurm_factory.create()
    reason = service.not_ready_reason()
    if reason:
        log.warning("slurm sync idle: %s", reason)
        return 0
    for job_id, slurm_id in jobs:
        sync_job(job_id, service, slurm_id=slurm_id)
    return len(jobs)


def sync_job(job_id: str, service: SlurmService, *, slurm_id: str | None = None) -> str | None:
    """Read one job from Slurm (no transaction open meanwhile) and reconcile it. Returns the
    job's status afterwards, or None when Slurm could not be read."""
    if slurm_id is None:
        with db.session() as s:
            job = s.get(Job, job_id)
            slurm_id = job.provider_job_id if job is not None else None
    if not slurm_id:
        return None
    try:
        info = service.get_job_status(slurm_id)
    except ProviderFailure as exc:
        log.warning("slurm: reading job %s (Slurm job %s) failed: %s", job_id, slurm_id, exc.message)
        return None
    status, resubmit = reconcile(job_id, info)
    if resubmit:
        status = _resubmit(job_id, service, info)
    return status


def _note(s, job: Job, text: str) -> None:
    jobs_service.append_log(s, job, f"[stcloud] {text}\n")


def reconcile(job_id: str, info: CloudJobInfo) -> tuple[str | None, bool]:
    """Apply Slurm's view of ``job_id``. Returns (status afterwards, whether the job must be
    submitted again — done by the caller outside this transaction)."""
    with db.transaction() as s:
        job = s.scalars(select(Job).where(Job.id == job_id).with_for_update()).first()
        if job is None:
            return None, False
        if states.is_terminal(job.status) or job.provider_job_id != info.provider_job_id:
            return job.status, False  # closed meanwhile, or an answer about a retired batch job
        data = dict(job.provider_data or {})
        sl = dict(data.get("slurm") or {})
        extra = info.extra or {}
        reason, raw = extra.get("reason"), info.raw_status
        restarts = int(extra.get("restarts") or 0)
        seen = int(sl.get("restarts") or 0)
        if (raw, reason) != (sl.get("state"), sl.get("reason")):
            _note(s, job, f"Slurm job {info.provider_job_id}: {raw}" + (f" ({reason})" if reason else "")
                  + (f" on {extra['nodes']}" if extra.get("nodes") and raw != "PENDING" else ""))
        sl.update(state=raw, reason=reason, nodes=extra.get("nodes"), polled_at=_iso(utcnow()))
        rate = sl.get("rate_usd_per_second")
        if rate is None and extra.get("gpus") is not None and sl.get("gpu_hour_usd") is not None:
            rate = rate_usd_per_second(sl["gpu_hour_usd"], extra["gpus"])
        if rate is not None and job.rate_usd_per_second != rate:
            job.rate_usd_per_second = rate
        resubmit = False
        status = info.status
        if restarts > seen and status in (CloudJobStatus.QUEUED, CloudJobStatus.RUNNING):
            # Slurm requeued the batch job. Once its new run is RUNNING, that run's agent
            # settles the old attempt when it claims; before that (requeue in progress,
            # PENDING again) the attempt ends here.
            sl["restarts"] = restarts
            if raw != "RUNNING" and job.status == states.RUNNING:
                workers_service.requeue_in(s, job, f"Slurm requeued job {info.provider_job_id} "
                                                   f"(restart {restarts}, {raw})", source=SOURCE)
        if raw == "UNKNOWN":
            # Slurm forgot the job (it ended more than MinJobAge ago, while nobody watched) and
            # its agent never reported: nothing will ever say more.
            jobs_service.apply_update_in(s, job, jobs_service.JobUpdate(
                status=states.FAILED, detail=info.error, error=info.error), source=SOURCE)
            if states.is_terminal(job.status):
                costs.finalize_worker_cost(s, job)
                workers_service.forget_job_agent(s, job.id)
        elif status is None:
            log.info("slurm: job %s is %s in Slurm: no change", job_id, raw)
        elif status == CloudJobStatus.QUEUED:
            if job.status == states.QUEUED:
                job.progress = {**(job.progress or {}), "stage": f"pending in Slurm: {reason or 'waiting'}"}
        elif status == CloudJobStatus.RUNNING:
            if job.status == states.QUEUED:
                jobs_service.transition(s, job, states.RUNNING, source=SOURCE, at=info.started_at,
                                        detail=f"Slurm: RUNNING on {extra.get('nodes') or 'a node'}")
                job.progress = {**(job.progress or {}), "stage": "starting"}
        elif raw in RETRYABLE and job.attempt < (job.max_attempts or 1):
            resubmit = True  # the caller submits it again, outside this transaction
        else:
            _close(s, job, info)
        data["slurm"] = sl
        job.provider_data = data
        return job.status, resubmit


def _close(s, job: Job, info: CloudJobInfo) -> None:
    """Slurm ended the job and its agent did not say so: close it with Slurm's reason."""
    target = info.status.value
    detail = info.error or f"Slurm: {info.raw_status}"
    if target == states.COMPLETED:
        detail = f"Slurm: COMPLETED (job {info.provider_job_id}) without a report from the agent"
    update = jobs_service.JobUpdate(status=target, detail=detail, completed_at=info.completed_at,
                                    error=info.error if target == states.FAILED else None)
    jobs_service.apply_update_in(s, job, update, source=SOURCE)
    if target == states.FAILED and job.status == states.FAILED and info.error:
        job.error = info.error
    if states.is_terminal(job.status):
        costs.finalize_worker_cost(s, job)
        workers_service.forget_job_agent(s, job.id)


def _resubmit(job_id: str, service: SlurmService, info: CloudJobInfo) -> str | None:
    """NODE_FAIL / PREEMPTED / BOOT_FAIL: a new batch job (next submission number, so the old
    credential stops working) resumes the job from its last uploaded checkpoint."""
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None or states.is_terminal(job.status) or job.provider_job_id != info.provider_job_id:
            return job.status if job is not None else None
        reason = info.error or f"Slurm: {info.raw_status}"
        if job.status == states.RUNNING:
            workers_service.requeue_in(s, job, reason, source=SOURCE)
        elif job.attempt < (job.max_attempts or 1):
            jobs_service.append_log(s, job, f"[stcloud] {reason}: submitting again\n")
            job.attempt += 1
        if states.is_terminal(job.status):
            return job.status
        data = dict(job.provider_data or {})
        submission = workers_service.job_token_submission(job) + 1
        sl = dict(data.get("slurm") or {})
        retired = list(sl.get("retired") or []) + [info.provider_job_id]
        data.update(job_token_submission=submission, slurm={**sl, "retired": retired[-20:]})
        job.provider_data = data
        job.provider_job_id = None  # not polled while the new batch job is being submitted
        request = RunRequest(job_id=job.id, name=job.name, config=job_secrets.unseal(job.id, job.config),
                             dataloader_config=job_secrets.unseal(job.id, job.dataloader_config, "dataloader"),
                             hardware=job.hardware,
                             archive_path=job.archive_path,
                             options=dict(sl.get("overrides") or {}), inputs={"slurm_submission": submission})
    try:
        created = service.run_job(request)
    except ProviderFailure as exc:
        with db.transaction() as s:
            job = s.get(Job, job_id)
            msg = f"{info.error or info.raw_status}; submitting it again failed: {exc.message}"
            jobs_service.apply_update_in(s, job, jobs_service.JobUpdate(status=states.FAILED, detail=msg, error=msg),
                                         source=SOURCE)
            costs.finalize_worker_cost(s, job)
            return job.status
    with db.transaction() as s:
        job = s.get(Job, job_id)
        job.provider_job_id = created.provider_job_id
        data = dict(job.provider_data or {})
        data["slurm"] = {**(data.get("slurm") or {}), **(created.extra.get("slurm") or {}),
                         "job_id": created.provider_job_id, "state": "PENDING", "reason": None, "restarts": 0}
        job.provider_data = data
        _note(s, job, f"submitted again as Slurm job {created.provider_job_id} (attempt {job.attempt}/"
                      f"{job.max_attempts}, resuming from its last checkpoint)")
        return job.status


def settle_finished(limit: int = BATCH) -> int:
    """Slurm jobs that ended without this sync (cancelled by a user, reported by their
    agent): their cost at the rate recorded on the job — billing stops when the job ended
    here — and the worker row of their agent removed. Returns how many were settled."""
    prefix = workers_service.JOB_AGENT_PREFIX
    with db.session() as s:  # read first: no write lock on the common, idle path
        unpriced = list(s.scalars(select(Job.id).where(
            Job.provider == PROVIDER, Job.status.in_(states.TERMINAL), Job.cost_usd.is_(None)).limit(limit)))
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
