"""Resume anywhere (issue 18): a new attempt that starts from an uploaded checkpoint of an
earlier job, on the same provider or another, through the one submit pipeline.

- ``plan`` says what a resume would do: the checkpoint (newest by default), the steps left,
  the estimated cost of those steps on the target provider, and what the chain cost so far.
- ``resume`` submits it. On a cloud provider the new job's config gets
  ``resume_from_checkpoint``: a presigned URL under the public URL of a zip of the checkpoint
  folder (``checkpoint-<step>/…``), readable by any trainer. On workers and Slurm the checkpoint
  is copied under the new job's prefix; their agent downloads it with the job's own key,
  unpacks it and points ``resume_from_checkpoint`` at the folder
  (``stcloud.jobs.resume_links.record``).
- ``continue_from`` ("Continue from this checkpoint") is the same with any finished or running
  job and any of its checkpoints; ``resume`` is for jobs that failed or were cancelled (a
  timed-out job fails).
- ``chain`` lists the attempts of a chain (across providers) with their summed cost.
- ``auto_resume_due`` (scheduler) resumes failed jobs whose ``auto_resume`` allows another
  attempt; the chain stops at ``max_attempts`` jobs.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import timedelta

import boto3
from botocore.config import Config
from flask import current_app
from sqlalchemy import or_, select

from stcloud import db, states
from stcloud.costs import estimates as est_mod
from stcloud.costs import service as costs
from stcloud.errors import BadRequest, Conflict, NotConfigured, StcloudError
from stcloud.jobs import checkpoints
from stcloud.jobs import service as jobs_service
from stcloud.jobs.rerun import RerunSource, rerun_body
from stcloud.jobs.submit import SubmitResult, submit
from stcloud.models import Job, utcnow
from stcloud.providers import registry
from stcloud.storage import backend as bk
from stcloud.storage import credentials
from stcloud.storage import service as storage_service

log = logging.getLogger(__name__)

RESUMABLE = (states.FAILED, states.CANCELLED)
URL_TTL_SECONDS = 7 * 24 * 3600  # covers the queue time of a cloud provider
AUTO_LOOKBACK = timedelta(days=2)


@dataclass(frozen=True)
class Plan:
    job_id: str
    status: str
    provider: str  # where the new attempt runs
    from_provider: str
    hardware: str | None
    step: int
    total_steps: int | None
    remaining_steps: int | None
    estimated_cost_usd: float  # of the remaining steps on ``provider``
    estimate_basis: str | None
    chain_cost_usd: float  # what the attempts so far cost
    attempt: int  # the number the new attempt gets in the chain
    checkpoints: tuple[int, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["checkpoints"] = list(self.checkpoints)
        d["total_cost_usd_if_estimate_holds"] = round(self.chain_cost_usd + self.estimated_cost_usd, 6)
        return d


def _target(job: Job, provider: str | None) -> tuple[str, str | None]:
    """(provider, hardware) of the new attempt: the job's hardware on its own provider, the
    target's default elsewhere."""
    name = provider or job.provider
    registry.validate_name(name)
    service = registry.get(name)
    reason = service.not_ready_reason()
    if reason:
        raise NotConfigured(reason, extra={"field": "provider", "provider": name})
    return name, (job.hardware if name == job.provider else None)


def _chain_jobs(s, root: str) -> list[Job]:
    return list(s.scalars(select(Job).where(or_(Job.id == root, Job.chain_root == root))
                          .order_by(Job.created_at, Job.id)))


def plan(job_id: str, provider: str | None = None, step: int | None = None, *, any_status: bool = False) -> Plan:
    """What resuming ``job_id`` would do. ``step`` None = its newest checkpoint.
    Raises NotFound (job or checkpoint), Conflict (not resumable, no checkpoint, nothing
    left to train), BadRequest / NotConfigured (provider)."""
    with db.session() as s:
        job = jobs_service.get_job(s, job_id)
        if any_status:
            if job.status in (states.PENDING, states.UPLOADING):
                raise Conflict(f"job {job_id} is still being submitted")
        elif job.status not in RESUMABLE:
            raise Conflict(f"job {job_id} is {job.status}: only a failed, cancelled or timed-out job can be "
                           "resumed (use “Continue from this checkpoint” to train on from a finished one)",
                           extra={"status": job.status})
        stored = [ck for ck in checkpoints.scan(job_id) if ck.downloadable]
        if not stored:
            raise Conflict(f"job {job_id} has no uploaded checkpoint to resume from",
                           extra={"reason": "no_checkpoint"})
        if step is None:
            ck = stored[-1]
        else:
            ck = next((c for c in stored if c.step == step), None)
            if ck is None:
                raise Conflict(f"job {job_id} has no checkpoint at step {step} (stored: "
                               f"{', '.join(str(c.step) for c in stored)})", extra={"reason": "no_checkpoint"})
        target, hardware = _target(job, provider)
        total = est_mod.steps_of(job.config)
        remaining = max(total - ck.step, 0) if total else None
        if remaining == 0:
            raise Conflict(f"the checkpoint at step {ck.step} is the last step of job {job_id}: nothing left to train",
                           extra={"reason": "nothing_left"})
        config = dict(job.config or {})
        if remaining:
            config["max_train_steps"] = remaining
        est = costs.estimate(s, target, hardware, config)
        root = job.chain_root or job.id
        chain = _chain_jobs(s, root)
        return Plan(job_id=job.id, status=job.status, provider=target, from_provider=job.provider,
                    hardware=hardware, step=ck.step, total_steps=total, remaining_steps=remaining,
                    estimated_cost_usd=est.estimated_cost_usd, estimate_basis=(est.detail or {}).get("basis_text"),
                    chain_cost_usd=round(sum(j.cost_usd or 0.0 for j in chain), 6), attempt=len(chain) + 1,
                    checkpoints=tuple(c.step for c in stored))


def checkpoint_url(job_id: str, step: int) -> str:
    """A presigned GET URL of ``<job>/checkpoints/resume-<step>.zip`` (made once) with a
    read-only key for that object alone."""
    key = f"{job_id}/checkpoints/resume-{step}.zip"
    b = storage_service.backend()
    try:
        b.head(checkpoints.BUCKET, key)
    except Exception:  # noqa: BLE001 - not made yet
        with checkpoints.build_zip(job_id, step) as fh:
            b.put(checkpoints.BUCKET, key, fh, bk.Expectations(max_size=b.max_put_size),
                  {"content_type": "application/zip"})
    base = credentials.public_base_url()
    if not base:
        raise BadRequest("Resuming on a cloud provider needs a public URL it can download the checkpoint from "
                         "(set public_url on the Providers page or STCLOUD_PUBLIC_URL).",
                         extra={"field": "provider"})
    cred = credentials.mint(bucket=checkpoints.BUCKET, prefix=key, ttl_seconds=URL_TTL_SECONDS, read_only=True,
                            description=f"resume from {job_id} step {step}")
    client = boto3.client("s3", endpoint_url=base + credentials.ENDPOINT_PATH, region_name=credentials.REGION,
                          aws_access_key_id=cred["access_key_id"], aws_secret_access_key=cred["secret_access_key"],
                          config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    return client.generate_presigned_url("get_object", Params={"Bucket": checkpoints.BUCKET, "Key": key},
                                         ExpiresIn=URL_TTL_SECONDS)


def _body(p: Plan, *, data_consent: bool | None, idempotency_key: str | None) -> dict:
    with db.session() as s:
        src = RerunSource.of(jobs_service.get_job(s, p.job_id))
    body, _source = rerun_body(current_app.config["STCLOUD_HOME"], src, exact=False, data_consent=data_consent,
                               snapshot_message=f"resume of {p.job_id} from step {p.step}")
    body.pop("rerun_of", None)
    service = registry.get(p.provider)
    if p.provider != src.provider:
        body["provider"] = p.provider
        body.pop("hardware", None)
        body.pop(src.provider, None)  # the old provider's per-job options
        if service.uploads_data:
            body.pop("requirements", None)  # worker labels mean nothing to a cloud provider
    config = dict(body["config"])
    # The old job's key for the built-in endpoint must not travel: delivery mints a new one.
    entries = config.get("publishing_config")
    if isinstance(entries, list):
        kept = [e for e in entries if not (isinstance(e, dict) and e.get("stcloud_builtin"))]
        if kept:
            config["publishing_config"] = kept
        else:
            config.pop("publishing_config", None)
    if service.uploads_data and not body.get("delivery"):
        body["delivery"] = {"type": "builtin"}  # its checkpoints come back here: resumable again
    if service.uploads_data:
        config["resume_from_checkpoint"] = checkpoint_url(p.job_id, p.step)
    else:
        # The agent downloads the copied checkpoint with the job's key and points
        # resume_from_checkpoint at the unpacked folder (resume_links.record).
        config.pop("resume_from_checkpoint", None)
    body["config"] = config
    body["resume_of"] = {"job": p.job_id, "step": p.step}
    if idempotency_key:
        body["idempotency_key"] = idempotency_key
    return body


def _submit(p: Plan, *, data_consent: bool | None, source: str, idempotency_key: str | None = None) -> SubmitResult:
    result = submit(_body(p, data_consent=data_consent, idempotency_key=idempotency_key), source=source)
    new_id = result.job["id"]
    if not result.idempotent:
        with db.transaction() as s:
            job = s.get(Job, new_id)
            # The reservation is what is left to train, not the whole run again.
            if job is not None and not states.is_terminal(job.status):
                job.estimated_cost_usd = p.estimated_cost_usd
                job.estimate = {**(job.estimate or {}), "resume": {"from": p.job_id, "step": p.step,
                                                                    "remaining_steps": p.remaining_steps}}
        with db.session() as s:
            result = SubmitResult(jobs_service.to_dict(jobs_service.get_job(s, new_id)), False,
                                  list(result.warnings), result.status_code)
    return result


def resume(job_id: str, provider: str | None = None, step: int | None = None, *,
           data_consent: bool | None = None, source: str = "api") -> tuple[SubmitResult, Plan]:
    """Resume a failed/cancelled job from its checkpoint (see ``plan``) as a new job.
    Raises what ``plan`` and the submit raise."""
    p = plan(job_id, provider, step)
    return _submit(p, data_consent=data_consent, source=source), p


def continue_from(job_id: str, step: int, provider: str | None = None, *,
                  data_consent: bool | None = None, source: str = "api") -> tuple[SubmitResult, Plan]:
    """A new job that trains on from checkpoint ``step`` of ``job_id`` (any job past submit)."""
    p = plan(job_id, provider, step, any_status=True)
    return _submit(p, data_consent=data_consent, source=source), p


# ---- the chain ----------------------------------------------------------------------------

def chain_of(s, job: Job) -> list[Job]:
    return _chain_jobs(s, job.chain_root or job.id)


def chain(job_id: str) -> dict:
    """``{root, attempts: [{job_id, provider, status, resumed_from, resume_step, cost_usd,
    step, total_steps}], total_cost_usd}``. Raises NotFound."""
    with db.session() as s:
        job = jobs_service.get_job(s, job_id)
        jobs = chain_of(s, job)
        return {"root": job.chain_root or job.id, "total_cost_usd": round(sum(j.cost_usd or 0.0 for j in jobs), 6),
                "attempts": [attempt_dict(j, n) for n, j in enumerate(jobs, 1)]}


def attempt_dict(j: Job, n: int) -> dict:
    progress = j.progress or {}
    return {"attempt": n, "job_id": j.id, "name": j.name, "provider": j.provider, "hardware": j.hardware,
            "status": j.status, "resumed_from": j.resumed_from, "resume_step": j.resume_step,
            "cost_usd": j.cost_usd, "estimated_cost_usd": j.estimated_cost_usd,
            "step": progress.get("step"), "total_steps": progress.get("total_steps"),
            "error": (j.error or "").splitlines()[0][:300] if j.error else None,
            "auto_resume": j.auto_resume}


# ---- automatic resume (scheduler) -----------------------------------------------------------

def auto_resume_due() -> list[str]:
    """Resume failed jobs that asked for it (``auto_resume``) while their chain has room.
    Returns the new job ids. A job whose chain is full gets a line in its log once."""
    since = utcnow() - AUTO_LOOKBACK
    with db.session() as s:
        ids = list(s.scalars(select(Job.id).where(
            Job.status == states.FAILED, Job.auto_resume.is_not(None), Job.completed_at.is_not(None),
            Job.completed_at >= since).order_by(Job.completed_at)))
    started = []
    for job_id in ids:
        try:
            new = _auto_resume_one(job_id)
        except StcloudError as exc:
            log.warning("auto-resume of %s refused: %s", job_id, exc.detail)
            _note(job_id, f"automatic resume refused: {exc.detail}")
            continue
        except Exception:  # noqa: BLE001 - one job's trouble must not stop the others
            log.exception("auto-resume of %s failed", job_id)
            continue
        if new:
            started.append(new)
    return started


def _auto_resume_one(job_id: str) -> str | None:
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None or job.status != states.FAILED or not job.auto_resume:
            return None
        if s.scalar(select(Job.id).where(Job.resumed_from == job_id).limit(1)) is not None:
            return None  # already resumed
        if (job.provider_data or {}).get("auto_resume_done"):
            return None
        opts = dict(job.auto_resume)
        attempts = len(chain_of(s, job))
    if attempts >= int(opts.get("max_attempts") or 1):
        _note(job_id, f"automatic resume stopped: the chain has {attempts} attempt(s), "
                      f"max_attempts is {opts.get('max_attempts')}")
        return None
    if checkpoints.latest(job_id) is None:
        _note(job_id, "automatic resume not possible: no checkpoint was uploaded")
        return None
    p = plan(job_id, opts.get("provider"))
    result = _submit(p, data_consent=True, source="auto-resume", idempotency_key=f"auto-resume:{job_id}:{p.step}")
    new_id = result.job["id"]
    log.info("auto-resume: %s -> %s on %s from step %s", job_id, new_id, p.provider, p.step)
    _note(job_id, f"automatically resumed as {new_id} on {p.provider} from step {p.step} "
                  f"(attempt {p.attempt}/{opts.get('max_attempts')})")
    return new_id


def _note(job_id: str, text: str) -> None:
    """Say it once in the job's log and stop looking at the job."""
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None or (job.provider_data or {}).get("auto_resume_done"):
            return
        job.provider_data = {**(job.provider_data or {}), "auto_resume_done": text}
        jobs_service.append_log(s, job, f"[stcloud] {text}\n")
