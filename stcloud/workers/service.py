"""Self-hosted workers (SPEC §8): registry, tokens, claim/lease, heartbeats, reports, liveness.

The database row is the durable state: a job is *held* by a worker while ``job.worker_id``
is that worker and the job is ``running``; the hold lasts until ``job.lease_expires_at``,
which every heartbeat pushes forward by the worker timeout. Claiming is a compare-and-set
(``UPDATE jobs SET worker_id=… WHERE id=… AND status='queued' AND worker_id IS NULL``,
rowcount checked) inside a short write transaction, so two agents — or two server
processes on one database — can never both get a job.

Every status change goes through ``jobs.service.transition`` / ``apply_update_in``.
Functions that need an app context say so by calling ``db.*``; none holds a transaction
across an HTTP call or across a call into another service that opens its own.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets as pysecrets
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from stcloud import db, secrets, settings, states
from stcloud.accounts import audit
from stcloud.costs import service as costs
from stcloud.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from stcloud.jobs import job_secrets
from stcloud.jobs import service as jobs_service
from stcloud.models import Job, Worker, utcnow
from stcloud.providers import registry
from stcloud.storage import credentials as creds_mod
from stcloud.storage import service as storage_service
from stcloud.workers import job_tokens, matching

log = logging.getLogger(__name__)

TOKEN_PREFIX = "stw_"
DEFAULT_TIMEOUT = 90
CLAIM_SCAN_LIMIT = 200  # queued jobs looked at per claim (oldest first)
MAX_ATTEMPT_HISTORY = 50
IDLE, BUSY, DRAINING, OFFLINE = "idle", "busy", "draining", "offline"
SOURCE = "worker"


# ---- tokens ----------------------------------------------------------------------------

def new_token() -> str:
    return TOKEN_PREFIX + pysecrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    # A 256-bit random token needs no slow hash: sha256 is preimage-resistant at that entropy.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def authenticate(token: str | None) -> str:
    """The id of the worker whose token this is. Raises Unauthorized."""
    if not token:
        raise Unauthorized("worker token required (Authorization: Bearer <worker token>)")
    digest = hash_token(token)
    with db.session() as s:
        row = s.execute(select(Worker.id, Worker.token_hash).where(Worker.token_hash == digest)).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        raise Unauthorized("invalid worker token (rotated or deleted?)")
    return row.id


# ---- per-job credentials (agents started by a scheduler, e.g. Slurm) --------------------

JOB_AGENT_PREFIX = "wj_"


def runs_own_agent(provider: str | None) -> bool:
    """Does ``provider``'s batch system start the agent of each job (per-job credentials)?
    A property of the adapter's class: answered once per app, not by building the adapter
    (settings reads) on every agent request."""
    known = current_app.extensions.setdefault("stcloud.runs_own_agent", {})
    if provider not in known:
        svc = registry.maybe_get(provider) if provider else None
        known[provider] = bool(svc is not None and svc.runs_own_agent)
    return known[provider]


def job_agent_worker_id(job_id: str) -> str:
    """The worker row that stands for the agent of ``job_id`` (one per job)."""
    return f"{JOB_AGENT_PREFIX}{job_id}"[:40]


def is_job_agent(worker_id: str | None) -> bool:
    return bool(worker_id) and worker_id.startswith(JOB_AGENT_PREFIX)


def _job_token_secret() -> str:
    return secrets.get_or_create(current_app.config["STCLOUD_HOME"], job_tokens.SECRET_KEY)


def job_token_submission(job: Job) -> int:
    return int((job.provider_data or {}).get("job_token_submission") or 1)


def mint_job_token(job_id: str, submission: int = 1) -> str:
    """The credential the agent of ``job_id`` (batch job number ``submission``) uses."""
    return job_tokens.mint(_job_token_secret(), job_id, submission)


def job_token_minter():
    """A callable ``(job_id, submission) -> credential`` that needs no app context (for
    provider adapters)."""
    secret = _job_token_secret()
    return lambda job_id, submission=1: job_tokens.mint(secret, job_id, submission)


# After its job ended, an agent may still report what the stop produced (the checkpoint a
# cancelled trainer saves, the last log lines) for this long; nothing else.
LATE_REPORT_SECONDS = 600


def authenticate_job(job_id: str | None, token: str, *, late_report: bool = False) -> str:
    """Check a per-job credential; returns the id of the worker row standing for that job's
    agent (created on first use). Refused once the job has ended, except a ``late_report``
    (checkpoint, logs) within ``LATE_REPORT_SECONDS`` of the end. Raises Unauthorized."""
    if not job_id:
        raise Unauthorized("a per-job credential needs the X-Stcloud-Job header (the job id)")
    with db.session() as s:
        job = s.get(Job, job_id)
        ok = (job is not None and runs_own_agent(job.provider)
              and job_tokens.verify(_job_token_secret(), token, job_id, job_token_submission(job)))
        if not ok:
            raise Unauthorized("invalid job credential")
        if states.is_terminal(job.status):
            ended = job.completed_at or job.updated_at
            if late_report and ended is not None and utcnow() - ended <= timedelta(seconds=LATE_REPORT_SECONDS):
                # The agent's worker row went with the job; the job still names it as holder.
                return job_agent_worker_id(job_id)
            raise Unauthorized(f"job {job_id} is {job.status}; its credential is no longer valid")
        provider = job.provider
    worker_id = job_agent_worker_id(job_id)
    try:
        with db.transaction() as s:
            if s.get(Worker, worker_id) is None:
                # Not a usable worker token: the agent authenticates with its job credential.
                s.add(Worker(id=worker_id, name=f"{provider} {job_id}", labels={"provider": provider},
                             token_hash=hash_token(new_token()), status=OFFLINE, draining=False,
                             is_local=False, created_at=utcnow()))
    except IntegrityError:  # two first requests at once: the other one created it
        pass
    return worker_id


def forget_job_agent(s: Session, job_id: str) -> None:
    """The job ended: its agent's worker row goes (it never runs anything else)."""
    w = s.get(Worker, job_agent_worker_id(job_id))
    if w is not None:
        s.delete(w)


# ---- settings --------------------------------------------------------------------------

def timeout_seconds(s: Session | None = None) -> int:
    """Worker timeout: the ``worker_timeout`` setting, else ``STCLOUD_WORKER_TIMEOUT`` (90)."""
    value = settings.get("worker_timeout", s=s)
    if value in (None, ""):
        value = current_app.config.get("STCLOUD_WORKER_TIMEOUT") or DEFAULT_TIMEOUT
    try:
        return max(1, int(float(value)))
    except (TypeError, ValueError):
        return DEFAULT_TIMEOUT


def set_timeout(value) -> int | None:
    """Store the worker-timeout override (None/"" clears it). Raises BadRequest."""
    if value in (None, ""):
        settings.put("worker_timeout", None)
        return None
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"worker timeout must be a whole number of seconds, got {value!r}") from None
    if not 1 <= seconds <= 86400:
        raise BadRequest("worker timeout must be between 1 and 86400 seconds")
    settings.put("worker_timeout", seconds)
    return seconds


def heartbeat_interval(timeout: int) -> float:
    """How often agents beat: a third of the timeout, between 0.5 and 5 s (cancel and drain
    reach a worker within one beat)."""
    return round(max(0.5, min(5.0, timeout / 3.0)), 2)


# ---- views -----------------------------------------------------------------------------

def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def effective_status(w: Worker, now: datetime, timeout: int) -> str:
    """What the page shows: a worker silent beyond the timeout is offline even before the
    liveness sweep has written it."""
    if w.status == OFFLINE or w.last_heartbeat_at is None:
        return OFFLINE
    if now - w.last_heartbeat_at > timedelta(seconds=timeout):
        return OFFLINE
    if w.draining:
        return DRAINING
    return w.status


def to_dict(w: Worker, now: datetime | None = None, timeout: int | None = None) -> dict:
    now = now or utcnow()
    timeout = timeout or DEFAULT_TIMEOUT
    return {
        "id": w.id,
        "name": w.name,
        "labels": w.labels or {},
        "status": effective_status(w, now, timeout),
        "draining": bool(w.draining),
        "gpu_info": w.gpu_info or [],
        "gpu_count": w.gpu_count or 0,
        "vram_gb": w.vram_gb or 0.0,
        "hostname": w.hostname,
        "agent_version": w.agent_version,
        "current_job_id": w.current_job_id,
        "is_local": bool(w.is_local),
        "owner_id": w.owner_id,
        "created_at": _iso(w.created_at),
        "registered_at": _iso(w.registered_at),
        "last_heartbeat_at": _iso(w.last_heartbeat_at),
        "seconds_since_heartbeat": (round((now - w.last_heartbeat_at).total_seconds(), 1)
                                    if w.last_heartbeat_at else None),
    }


def _caps(w: Worker) -> matching.WorkerCaps:
    return matching.WorkerCaps(labels=dict(w.labels or {}), gpu_count=w.gpu_count or 0,
                               vram_gb=float(w.vram_gb or 0.0), is_local=bool(w.is_local))


# ---- admin -----------------------------------------------------------------------------

def _clean_name(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("name is required")
    name = name.strip()
    if len(name) > 200:
        raise BadRequest("name is at most 200 characters")
    return name


def _clean_labels(raw) -> dict:
    try:
        return matching.clean_labels(raw)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def create_worker(name, labels=None, *, is_local: bool = False) -> tuple[dict, str]:
    """Create a worker; returns (worker dict, the one-time token). Raises BadRequest."""
    name = _clean_name(name)
    labels = _clean_labels(labels)
    token = new_token()
    with db.transaction() as s:
        w = Worker(name=name, labels=labels, token_hash=hash_token(token), status=OFFLINE,
                   draining=False, is_local=is_local, created_at=utcnow())
        s.add(w)
        s.flush()
        return to_dict(w, timeout=timeout_seconds(s)), token


def list_workers() -> list[dict]:
    with db.session() as s:
        timeout, now = timeout_seconds(s), utcnow()
        rows = s.scalars(select(Worker).order_by(Worker.is_local.desc(), Worker.created_at, Worker.id)).all()
        return [to_dict(w, now, timeout) for w in rows]


def get_worker(worker_id: str) -> dict:
    with db.session() as s:
        w = s.get(Worker, worker_id)
        if w is None:
            raise NotFound(f"worker {worker_id} not found")
        return to_dict(w, timeout=timeout_seconds(s))


def rotate_token(worker_id: str) -> tuple[dict, str]:
    """New token; the old one stops working at once. Raises NotFound."""
    token = new_token()
    with db.transaction() as s:
        w = s.get(Worker, worker_id)
        if w is None:
            raise NotFound(f"worker {worker_id} not found")
        w.token_hash = hash_token(token)
        return to_dict(w, timeout=timeout_seconds(s)), token


def set_draining(worker_id: str, draining: bool = True) -> dict:
    """Drain: finish the current job, claim nothing new (only the admin can undo it)."""
    with db.transaction() as s:
        w = s.get(Worker, worker_id)
        if w is None:
            raise NotFound(f"worker {worker_id} not found")
        w.draining = draining
        if w.status != OFFLINE:
            w.status = DRAINING if draining else (BUSY if w.current_job_id else IDLE)
        return to_dict(w, timeout=timeout_seconds(s))


def delete_worker(worker_id: str, *, force: bool = False) -> None:
    """Delete a worker. Refused (Conflict) while it holds a running job unless ``force``,
    which re-queues that job. Raises NotFound, Conflict."""
    with db.transaction() as s:
        w = s.get(Worker, worker_id)
        if w is None:
            raise NotFound(f"worker {worker_id} not found")
        held = _held_running(s, worker_id)
        if held and not force:
            raise Conflict(f"worker {w.name} is running job {held[0].id}; drain it first or delete with force",
                           extra={"job_id": held[0].id})
        for job in held:
            _requeue_in(s, job, f"worker {w.name} was deleted", source="api")
        s.delete(w)


def ensure_local_worker(home) -> tuple[str, str]:
    """The embedded worker's row and token (kept in secrets.json as ``local_worker_token``).
    Returns (worker_id, token)."""
    token = secrets.get(home, "local_worker_token")
    with db.transaction() as s:
        w = s.scalars(select(Worker).where(Worker.is_local.is_(True)).order_by(Worker.created_at)).first()
        if w is None:
            token = token or new_token()
            w = Worker(name="local", labels={"local": "true"}, token_hash=hash_token(token),
                       status=OFFLINE, is_local=True, created_at=utcnow())
            s.add(w)
            s.flush()
        elif not token or not hmac.compare_digest(w.token_hash, hash_token(token)):
            token = new_token()
            w.token_hash = hash_token(token)
        worker_id = w.id
    secrets.put(home, "local_worker_token", token)
    return worker_id, token


# ---- the worker protocol ---------------------------------------------------------------

def _worker(s: Session, worker_id: str) -> Worker:
    w = s.get(Worker, worker_id)
    if w is None:  # deleted between authentication and now
        raise Unauthorized("worker no longer exists")
    return w


def _held_running(s: Session, worker_id: str) -> list[Job]:
    return list(s.scalars(select(Job).where(Job.worker_id == worker_id, Job.status == states.RUNNING)))


def _status_for(w: Worker, busy: bool) -> str:
    if w.draining:
        return DRAINING
    return BUSY if busy else IDLE


def _record_attempt(job: Job, **fields) -> None:
    """provider_data["attempts"]: one entry per claim; ``_end_attempt`` closes it."""
    data = dict(job.provider_data or {})
    attempts = [dict(a) for a in (data.get("attempts") or [])]
    attempts.append(fields)
    data["attempts"] = attempts[-MAX_ATTEMPT_HISTORY:]
    job.provider_data = data


def _end_attempt(job: Job, outcome: str) -> None:
    attempts = [dict(a) for a in ((job.provider_data or {}).get("attempts") or [])]
    for a in reversed(attempts):
        if a.get("attempt") == job.attempt and not a.get("ended_at"):
            a["ended_at"] = _iso(utcnow())
            a["outcome"] = outcome
            a["last_step"] = (job.progress or {}).get("step")
            break
    else:
        return
    job.provider_data = {**(job.provider_data or {}), "attempts": attempts}


def _finalize_cost(s: Session, job: Job) -> None:
    try:
        costs.finalize_worker_cost(s, job)
    except Exception:  # cost bookkeeping must never lose the end state
        log.exception("finalize_worker_cost failed for job %s", job.id)


def _requeue_in(s: Session, job: Job, reason: str, *, source: str) -> str:
    """The holder of ``job`` is gone: back to ``queued`` with attempt + 1, or ``failed``
    after ``max_attempts``. Returns the new status."""
    old_worker = job.worker_id
    _end_attempt(job, "lost")
    if job.attempt >= (job.max_attempts or 1):
        msg = f"{reason}; gave up after {job.attempt} attempt(s)"
        jobs_service.transition(s, job, states.FAILED, source=source, detail=msg)
        job.error = msg
        _finalize_cost(s, job)
    else:
        jobs_service.transition(
            s, job, states.QUEUED, source=source,
            detail=f"{reason}; re-queued as attempt {job.attempt + 1}/{job.max_attempts}"
                   + (f", will resume from step {job.checkpoint.get('step')}" if job.checkpoint else ""))
        job.attempt = job.attempt + 1
        job.worker_id = None
    job.lease_expires_at = None
    if old_worker:
        w = s.get(Worker, old_worker)
        if w is not None and w.current_job_id == job.id:
            w.current_job_id = None
            if w.status == BUSY:
                w.status = IDLE
    return job.status


def requeue_in(s: Session, job: Job, reason: str, *, source: str) -> str:
    """The scheduler that ran ``job`` stopped it for a reason not its own (a Slurm requeue,
    a node failure, preemption): handled like a lost worker — back to ``queued`` with
    attempt + 1 to resume from its last checkpoint, or ``failed`` after ``max_attempts``."""
    return _requeue_in(s, job, reason, source=source)


def register(worker_id: str, info: dict) -> dict:
    """An agent (re)starts: record what it is; settle the job it says it is running.

    ``info``: ``{hostname, agent_version, gpus: [{name, memory_gb}], labels, name,
    current_job_id}``. The current job is *resumed* when this worker still holds it, else
    *abandoned* (the agent must stop it). Running jobs this worker holds but no longer
    runs (it restarted) are re-queued at once instead of waiting for the lease.
    """
    gpus = info.get("gpus") or []
    if not isinstance(gpus, list) or not all(isinstance(g, dict) for g in gpus):
        raise BadRequest("gpus must be a list of {name, memory_gb}")
    labels = _clean_labels(info.get("labels"))
    current = info.get("current_job_id") or None
    now = utcnow()
    with db.transaction() as s:
        timeout = timeout_seconds(s)
        w = _worker(s, worker_id)
        if info.get("name"):
            w.name = _clean_name(info["name"])
        if labels:
            w.labels = {**(w.labels or {}), **labels}
        w.gpu_info = [{"name": str(g.get("name", "GPU"))[:100], "memory_gb": float(g.get("memory_gb") or 0)}
                      for g in gpus][:64]
        w.gpu_count = len(w.gpu_info)
        w.vram_gb = min((g["memory_gb"] for g in w.gpu_info), default=0.0)
        w.hostname = (str(info.get("hostname") or "")[:200]) or None
        w.agent_version = (str(info.get("agent_version") or "")[:40]) or None
        w.registered_at = now
        w.last_heartbeat_at = now
        resume, abandon = [], []
        for job in _held_running(s, worker_id):
            if job.id == current:
                job.lease_expires_at = now + timedelta(seconds=timeout)
                resume.append(job.id)
            else:
                _requeue_in(s, job, f"worker {w.name} restarted without the job", source=SOURCE)
        if current and current not in resume:
            abandon.append(current)
        w.current_job_id = resume[0] if resume else None
        w.status = _status_for(w, bool(resume))
        out = {"worker_id": w.id, "name": w.name, "labels": w.labels or {}, "draining": bool(w.draining),
               "heartbeat_interval": heartbeat_interval(timeout), "lease_seconds": timeout,
               "resume": resume, "abandon": abandon}
        seen = {"hostname": w.hostname, "agent_version": w.agent_version, "gpu_count": w.gpu_count}
    # the registration, by the worker itself (its agent started): who it says it is
    _audit("worker.register", w_name=out["name"], target=out["worker_id"],
           detail={**seen, "resumed": resume, "abandoned": abandon})
    return out


def actor_of(worker_name: str) -> str:
    """The audit log's actor for what a worker's agent did itself."""
    return f"worker:{worker_name}"


def _audit(action: str, *, w_name: str, target: str | None, detail: dict | None = None) -> None:
    """One record of something a worker did on its own (registration, a job's S3 key, a
    job it cancelled): a few per job, never per log line or heartbeat."""
    try:
        audit.record(action, target=target, actor=actor_of(w_name), detail=detail)
    except Exception:  # noqa: BLE001 - the worker's report is applied; its answer must not fail
        log.exception("audit record %s by worker %s failed", action, w_name)


def heartbeat(worker_id: str, body: dict) -> dict:
    """Sign of life (+ progress). Answers ``{cancel: [job ids], drain: bool, ...}``: the jobs
    the agent says it runs but no longer holds (cancelled, re-queued, deleted) must stop."""
    job_id = body.get("job_id") or None
    progress = body.get("progress")
    if progress is not None and not isinstance(progress, dict):
        raise BadRequest("progress must be an object")
    now = utcnow()
    with db.transaction() as s:
        timeout = timeout_seconds(s)
        w = _worker(s, worker_id)
        w.last_heartbeat_at = now
        cancel = []
        lease = None
        stopping = None  # a job of this worker that ended here (a cancel) while its trainer still stops
        if job_id:
            job = s.get(Job, job_id)
            if job is not None and job.worker_id == worker_id and job.status == states.RUNNING:
                lease = job.lease_expires_at = now + timedelta(seconds=timeout)
                if progress:
                    jobs_service.apply_update_in(s, job, jobs_service.JobUpdate(progress=dict(progress)),
                                                 source=SOURCE)
            else:
                cancel.append(job_id)
                if job is not None and job.worker_id == worker_id and states.is_terminal(job.status):
                    stopping = job.id
        held = _held_running(s, worker_id)
        # Busy until the agent reports the end (``finish``): it is still stopping the trainer
        # and uploading the last checkpoint, so it is not free to run a job yet.
        w.current_job_id = held[0].id if held else stopping
        w.status = _status_for(w, bool(held) or stopping is not None)
        return {"cancel": cancel, "drain": bool(w.draining), "lease_expires_at": _iso(lease),
                "heartbeat_interval": heartbeat_interval(timeout)}


def goodbye(worker_id: str) -> None:
    """The agent is exiting cleanly."""
    with db.transaction() as s:
        w = _worker(s, worker_id)
        w.status = OFFLINE
        if not _held_running(s, worker_id):
            w.current_job_id = None
            if is_job_agent(worker_id):
                s.delete(w)


class Draining(Exception):
    """The worker is draining: it must not claim (the agent exits when idle)."""


def worker_pools() -> dict[str, str]:
    """``{provider: pool}`` of the providers whose jobs self-hosted workers claim. Jobs of
    any other provider (Replicate, or a Slurm job that its own agent claims by id) are
    never handed out here."""
    return {name: svc.worker_pool for name, svc in registry.services() if svc.worker_pool}


def claim(worker_id: str) -> dict | None:
    """Lease the oldest queued job this worker may run; None when there is none.
    Raises Draining (the worker is draining), Conflict (it already holds a running job)."""
    expire_leases()
    pools = worker_pools()
    now = utcnow()
    with db.transaction() as s:
        timeout = timeout_seconds(s)
        w = _worker(s, worker_id)
        w.last_heartbeat_at = now
        name = w.name
        held = _held_running(s, worker_id)
        if held:
            raise Conflict(f"worker already holds job {held[0].id}; report its end state first",
                           extra={"job_id": held[0].id})
        caps = _caps(w)
        draining = bool(w.draining)
        if draining:  # recorded, then refused below (raising here would roll it back)
            w.status = DRAINING
            candidates = []
        else:
            w.status = IDLE
            candidates = s.execute(
                select(Job.id, Job.provider, Job.requirements)
                .where(Job.status == states.QUEUED, Job.worker_id.is_(None),
                       Job.provider.in_(matching.providers_for(pools, caps.is_local)))
                .order_by(Job.created_at, Job.id).limit(CLAIM_SCAN_LIMIT)).all()
        payload = None
        lease = now + timedelta(seconds=timeout)
        for cand in candidates:
            if not matching.can_claim(cand.provider, cand.requirements, caps, pools):
                continue
            # Compare-and-set: only one claimer's UPDATE can match the queued, unowned row.
            res = s.execute(
                update(Job).where(Job.id == cand.id, Job.status == states.QUEUED, Job.worker_id.is_(None))
                .values(worker_id=worker_id, lease_expires_at=lease)
                .execution_options(synchronize_session=False))
            if res.rowcount != 1:
                continue
            job = s.get(Job, cand.id, populate_existing=True)
            payload = _take(s, job, w, now, lease, timeout)
            break
    if draining:
        raise Draining()
    return _with_storage(payload, name)


def _take(s: Session, job: Job, w: Worker, now: datetime, lease: datetime, timeout: int) -> dict:
    """``w`` now holds ``job`` (already leased to it): running, attempt recorded; returns
    the claim payload without its storage credentials."""
    resume = job.checkpoint or None
    jobs_service.transition(
        s, job, states.RUNNING, source=SOURCE,
        detail=f"claimed by worker {w.name} (attempt {job.attempt}/{job.max_attempts})"
               + (f", resuming from step {resume.get('step')}" if resume else ""))
    _record_attempt(job, attempt=job.attempt, worker_id=w.id, worker_name=w.name,
                    claimed_at=_iso(now), resume_step=(resume or {}).get("step"),
                    resume_key=(resume or {}).get("key"))
    w.current_job_id = job.id
    w.status = BUSY
    return {
        "id": job.id, "name": job.name, "provider": job.provider,
        "attempt": job.attempt, "max_attempts": job.max_attempts,
        "config": job_secrets.unseal(job.id, job.config), "dataloader_config": _dataloader_for_agent(job),
        "archive": ({"url": f"/api/workers/jobs/{job.id}/archive", "sha256": job.dataset_sha256}
                    if job.archive_path else None),
        "checkpoint": resume, "log_seq": job.log_seq or 0,
        "requirements": job.requirements or {},
        "lease_expires_at": _iso(lease), "heartbeat_interval": heartbeat_interval(timeout),
    }


def _dataloader_for_agent(job: Job) -> list:
    """With an archive, the packaged datasets point inside it (``datasets/<folder>``): the
    agent trains on what it downloaded, not on paths of the server's disk."""
    packaged = (job.provider_data or {}).get("archive_dataloader_config")
    if job.archive_path and packaged:
        return job_secrets.unseal(job.id, list(packaged), "archive_dataloader")
    return job_secrets.unseal(job.id, list(job.dataloader_config or []), "dataloader")


def _with_storage(payload: dict | None, worker_name: str) -> dict | None:
    if payload is None:
        return None
    # Outside the claim transaction: minting credentials writes in its own transaction.
    payload["storage"] = storage_for_job(payload["id"], worker_name)
    payload["config"] = with_publishing(payload["config"], payload["storage"])
    return payload


def claim_job(worker_id: str, job_id: str) -> dict | None:
    """One-job mode: the agent started for ``job_id`` (by Slurm) claims exactly that job.

    None while the job is not claimable yet (its submit is still recording the batch job).
    A job still held by an earlier run of its agent — the scheduler restarted it (requeue,
    node failure) — is re-queued first (attempt + 1, resuming from its last checkpoint; or
    failed after ``max_attempts``). Raises Forbidden when the job has ended."""
    now = utcnow()
    with db.transaction() as s:
        timeout = timeout_seconds(s)
        w = _worker(s, worker_id)
        w.last_heartbeat_at = now
        name = w.name
        job = s.scalars(select(Job).where(Job.id == job_id).with_for_update()).first()
        if job is not None and job.status == states.RUNNING and job.worker_id is not None:
            _requeue_in(s, job, "the scheduler restarted the job", source=SOURCE)
        if job is None or states.is_terminal(job.status):
            raise Forbidden(f"job {job_id} is {job.status if job else 'gone'}; nothing to run")
        if job.status not in (states.QUEUED, states.RUNNING) or job.worker_id is not None:
            w.status = IDLE
            return None
        lease = now + timedelta(seconds=timeout)
        # (already ``running`` when the scheduler's view got here first: the claim is then
        # recorded as the attempt, the status does not move)
        job.worker_id, job.lease_expires_at = worker_id, lease
        payload = _take(s, job, w, now, lease, timeout)
    return _with_storage(payload, name)


def storage_for_job(job_id: str, worker_name: str | None = None) -> dict | None:
    """Per-job S3 credentials for the built-in endpoint (bucket ``outputs``, prefix
    ``<job_id>/``), or None when they cannot be minted (the job then runs without uploads).
    A key minted now for the job ``worker_name`` claimed is audited as its doing."""
    try:
        raw = creds_mod.credentials_for_job(job_id)
    except Exception:
        log.exception("could not mint storage credentials for job %s", job_id)
        return None
    get = raw.get
    if worker_name is not None and get("minted"):
        _audit("s3.credential.mint", w_name=worker_name, target=get("access_key_id"),
               detail={"job_id": job_id, "bucket": get("bucket"), "prefix": get("prefix")})
    expires = get("expires_at")
    return {
        "endpoint_path": "/api/cloud/storage",
        "endpoint_url": get("endpoint_url"),
        "region": get("region") or "us-east-1",
        "bucket": get("bucket") or "outputs",
        "prefix": get("prefix") or f"{job_id}/",
        "access_key_id": get("access_key_id") or get("access_key"),
        "secret_access_key": get("secret_access_key") or get("secret_key"),
        "expires_at": expires.isoformat() if isinstance(expires, datetime) else expires,
    }


def with_publishing(config: dict, storage: dict | None) -> dict:
    """The job's own publishing settings, made usable by the worker: the built-in endpoint's
    entry (``publishing_config[]`` with ``stcloud_builtin``, added at submit when the
    delivery is "this machine") gets this job's live key — the stored config may hold it
    redacted. The agent points its ``endpoint_url`` at the server URL it uses. Nothing is
    added when the job did not ask for that delivery: the agent uploads the outputs anyway."""
    entries = config.get("publishing_config")
    if not storage or not storage.get("access_key_id") or not isinstance(entries, list):
        return config
    fixed = []
    for e in entries:
        if isinstance(e, dict) and e.get("stcloud_builtin"):
            e = {**e, "access_key": storage["access_key_id"], "secret_key": storage["secret_access_key"],
                 "bucket": storage["bucket"], "base_path": e.get("base_path") or storage["prefix"],
                 "region": e.get("region") or storage["region"],
                 "endpoint_url": storage.get("endpoint_url") or e.get("endpoint_url")}
        fixed.append(e)
    return {**config, "publishing_config": fixed}


def _held_job(s: Session, worker_id: str, job_id: str, *, running: bool) -> Job:
    """The job, if this worker holds it (``running`` also requires it still running).
    A job that does not exist is reported as not held: workers learn nothing from ids."""
    job = s.get(Job, job_id)
    if job is None or job.worker_id != worker_id:
        raise Forbidden(f"this worker does not hold job {job_id}")
    if running and job.status != states.RUNNING:
        raise Forbidden(f"job {job_id} is {job.status}; this worker no longer holds it")
    return job


def archive_for(worker_id: str, job_id: str) -> tuple[str, str | None]:
    """(archive path, sha256) for the holding worker. Raises Forbidden, NotFound."""
    with db.session() as s:
        job = _held_job(s, worker_id, job_id, running=True)
        if not job.archive_path:
            raise NotFound(f"job {job_id} has no dataset archive")
        return job.archive_path, job.dataset_sha256


MAX_LOG_BATCH = 2 * 1024 * 1024


def report_logs(worker_id: str, job_id: str, seq, lines) -> dict:
    """Append a batch of log lines once: batches carry increasing sequence numbers and a
    batch at or below ``job.log_seq`` is a retry already stored (acknowledged, not added).
    Accepted while the worker holds the job, and for trailing lines after it ended."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise BadRequest("seq must be a positive integer")
    if isinstance(lines, str):
        text = lines
    elif isinstance(lines, list) and all(isinstance(x, str) for x in lines):
        text = "".join(x if x.endswith("\n") else x + "\n" for x in lines)
    else:
        raise BadRequest("lines must be a list of strings")
    if len(text.encode("utf-8", "replace")) > MAX_LOG_BATCH:
        raise BadRequest(f"log batch larger than {MAX_LOG_BATCH} bytes; send smaller batches")
    with db.transaction() as s:
        job = _held_job(s, worker_id, job_id, running=False)
        if seq <= (job.log_seq or 0):
            return {"accepted": False, "duplicate": True, "log_seq": job.log_seq}
        jobs_service.append_log(s, job, text)
        job.log_seq = seq
        return {"accepted": True, "log_seq": seq}


def report_progress(worker_id: str, job_id: str, progress: dict) -> dict:
    if not isinstance(progress, dict):
        raise BadRequest("progress must be an object")
    with db.transaction() as s:
        job = _held_job(s, worker_id, job_id, running=True)
        jobs_service.apply_update_in(s, job, jobs_service.JobUpdate(progress=dict(progress)), source=SOURCE)
        return {"progress": job.progress or {}}


def report_checkpoint(worker_id: str, job_id: str, body: dict) -> dict:
    """A checkpoint directory was uploaded: ``{key, step, files}`` -> ``job.checkpoint``
    (kept when it is not older than the one recorded)."""
    key, step, files = body.get("key"), body.get("step"), body.get("files") or []
    if not isinstance(key, str) or not key:
        raise BadRequest("key is required (the checkpoint's object prefix)")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise BadRequest("step must be a non-negative integer")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise BadRequest("files must be a list of object keys")
    if not key.startswith(f"{job_id}/"):
        raise BadRequest(f"checkpoint key must be under {job_id}/")
    with db.transaction() as s:
        # Not only while running: a trainer stopped by a cancel saves a last checkpoint, which
        # its worker (still the holder) reports after the job turned cancelled.
        job = _held_job(s, worker_id, job_id, running=False)
        current = job.checkpoint or {}
        if current.get("step") is None or step >= int(current.get("step") or 0):
            job.checkpoint = {"bucket": body.get("bucket") or "outputs", "key": key, "step": step,
                              "files": files[:1000], "attempt": job.attempt, "uploaded_at": _iso(utcnow())}
        return {"checkpoint": job.checkpoint}


END_STATUSES = (states.COMPLETED, states.FAILED, states.CANCELLED)


def finish(worker_id: str, job_id: str, body: dict) -> dict:
    """The trainer ended: ``{status: completed|failed|cancelled, exit_code, last_lines,
    outputs, error}``. Moves the job (via the transition function), frees the worker and
    finalizes the cost. A job that was cancelled meanwhile stays cancelled."""
    status = body.get("status")
    if status not in END_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(END_STATUSES)}")
    exit_code = body.get("exit_code")
    last_lines = body.get("last_lines") or []
    if not isinstance(last_lines, list):
        raise BadRequest("last_lines must be a list of strings")
    outputs = body.get("outputs")
    if outputs is not None and not isinstance(outputs, list):
        raise BadRequest("outputs must be a list")
    reported = [dict(o) for o in (outputs or []) if isinstance(o, dict)]
    with db.transaction() as s:
        job = _held_job(s, worker_id, job_id, running=False)
        w = _worker(s, worker_id)
        error = None
        if status == states.FAILED:
            tail = "\n".join(str(x) for x in last_lines[-20:])
            error = body.get("error") or f"trainer exited with code {exit_code}"
            if tail:
                error = f"{error}\n{tail}"
        detail = f"worker {w.name}: " + (
            f"trainer exited with code {exit_code}" if exit_code is not None else (body.get("error") or status))
        cancelled_here = job.status == states.RUNNING and status == states.CANCELLED
        name = w.name
        if job.status == states.RUNNING:
            # Outputs are not taken from the report: the S3 endpoint lists what really
            # arrived under outputs/<job_id>/ (sync_job_outputs below).
            jobs_service.apply_update_in(s, job, jobs_service.JobUpdate(status=status, detail=detail, error=error),
                                         source=SOURCE)
            _end_attempt(job, status)
            if states.is_terminal(job.status):
                _finalize_cost(s, job)
        job.lease_expires_at = None
        if w.current_job_id == job_id:
            w.current_job_id = None
        w.last_heartbeat_at = utcnow()
        w.status = _status_for(w, False)
        final = job.status
        if is_job_agent(worker_id) and states.is_terminal(final):
            s.delete(w)
    if cancelled_here and final == states.CANCELLED:  # the worker stopped a running job on its own
        _audit("job.cancel", w_name=name, target=job_id,
               detail={"source": SOURCE, "exit_code": exit_code, "reason": str(body.get("error") or "")[:200] or None})
    _sync_outputs(job_id, reported)
    return {"status": final}


def _sync_outputs(job_id: str, reported: list[dict]) -> None:
    """Refresh ``job.outputs`` from the built-in endpoint; without it, keep what the agent
    reported."""
    try:
        storage_service.sync_job_outputs(job_id)
        return
    except Exception:
        log.exception("could not list the outputs of %s", job_id)
    if reported:
        jobs_service.apply_update(job_id, jobs_service.JobUpdate(outputs=reported), source=SOURCE)


def release(worker_id: str, job_id: str, reason: str | None = None) -> dict:
    """The agent is stopping (SIGTERM, preemption notice) and gives its job back now rather
    than after the lease: re-queued (attempt + 1) to resume from its last checkpoint."""
    with db.transaction() as s:
        job = _held_job(s, worker_id, job_id, running=True)
        w = _worker(s, worker_id)
        status = _requeue_in(s, job, f"worker {w.name} stopped" + (f" ({reason[:200]})" if reason else ""),
                             source=SOURCE)
        return {"status": status}


# ---- liveness --------------------------------------------------------------------------

def expire_leases(now: datetime | None = None) -> list[str]:
    """Re-queue (or fail) running worker jobs whose lease ran out. Returns their ids."""
    now = now or utcnow()
    with db.session() as s:
        timeout = timeout_seconds(s)
        ids = list(s.scalars(
            select(Job.id).where(Job.status == states.RUNNING, Job.provider.in_(worker_pools()),
                                 Job.lease_expires_at.is_not(None), Job.lease_expires_at < now)))
    done = []
    for job_id in ids:
        with db.transaction() as s:
            # Re-read under the write lock: a heartbeat may have renewed it meanwhile.
            job = s.scalars(select(Job).where(Job.id == job_id).with_for_update()).first()
            if (job is None or job.status != states.RUNNING or job.lease_expires_at is None
                    or job.lease_expires_at >= now):
                continue
            w = s.get(Worker, job.worker_id) if job.worker_id else None
            name = w.name if w is not None else (job.worker_id or "?")
            silent = (f"{(now - w.last_heartbeat_at).total_seconds():.0f}s"
                      if w is not None and w.last_heartbeat_at else "too long")
            _requeue_in(s, job, f"worker {name} lost: no heartbeat for {silent} (timeout {timeout}s)",
                        source="scheduler")
            log.warning("job %s: lease of worker %s expired -> %s", job_id, name, job.status)
            done.append(job_id)
    return done


def check_liveness() -> dict:
    """Scheduler job: workers silent beyond the timeout go offline; expired leases are
    re-queued. Safe to run in several processes at once."""
    now = utcnow()
    requeued = expire_leases(now)
    with db.transaction() as s:
        cutoff = now - timedelta(seconds=timeout_seconds(s))
        res = s.execute(
            update(Worker).where(Worker.status != OFFLINE,
                                 (Worker.last_heartbeat_at.is_(None)) | (Worker.last_heartbeat_at < cutoff))
            .values(status=OFFLINE).execution_options(synchronize_session=False))
        offline = res.rowcount
    return {"requeued": requeued, "offline": offline}
