"""The two submit-body members of resume anywhere, read by the submit pipeline:

- ``resume_of: {"job": <id>, "step": <n>}`` — this job continues ``job`` from its checkpoint at
  ``step`` (set by :mod:`stcloud.jobs.resume`; a client may send it too);
- ``auto_resume: {"max_attempts": n, "provider"?: name}`` — when this job fails with a
  checkpoint uploaded, a new attempt starts from it (up to ``max_attempts`` jobs in the chain).

``parse`` runs before anything is written (400 naming the field); ``record`` runs once the job
row exists and before the launch: it links the row into its chain and, for providers whose
agent downloads the checkpoint with the job's own storage key (workers, Slurm), copies the
checkpoint under the new job's prefix and records it as ``job.checkpoint`` — the same path a
re-queued worker job resumes by.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from stcloud import db
from stcloud.errors import BadRequest
from stcloud.jobs import checkpoints
from stcloud.jobs import service as jobs_service
from stcloud.models import Job, utcnow
from stcloud.providers import registry
from stcloud.storage import service as storage_service

log = logging.getLogger(__name__)

MAX_AUTO_ATTEMPTS = 20


@dataclass(frozen=True)
class Links:
    resume_job: str | None = None
    resume_step: int | None = None
    auto_resume: dict | None = None

    @property
    def empty(self) -> bool:
        return self.resume_job is None and self.auto_resume is None


def _int(value, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadRequest(f"{field} must be an integer from {lo} to {hi}", extra={"field": field})
    return value


def parse_auto_resume(raw) -> dict | None:
    """``{max_attempts, provider?}`` or None (absent, null, false, 0). Raises BadRequest."""
    if raw in (None, False, 0, {}):
        return None
    if raw is True:
        raw = {"max_attempts": 3}
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = {"max_attempts": raw}
    if not isinstance(raw, dict):
        raise BadRequest('auto_resume must be an object like {"max_attempts": 3}', extra={"field": "auto_resume"})
    unknown = set(raw) - {"max_attempts", "provider"}
    if unknown:
        raise BadRequest(f"unknown auto_resume field {sorted(unknown)[0]!r}",
                         extra={"field": f"auto_resume.{sorted(unknown)[0]}"})
    out = {"max_attempts": _int(raw.get("max_attempts", 3), "auto_resume.max_attempts", 1, MAX_AUTO_ATTEMPTS)}
    provider = raw.get("provider")
    if provider not in (None, ""):
        if not isinstance(provider, str):
            raise BadRequest("auto_resume.provider must be a provider name", extra={"field": "auto_resume.provider"})
        try:
            registry.validate_name(provider)
        except BadRequest as exc:
            raise BadRequest(f"auto_resume.provider: {exc.detail}", extra={"field": "auto_resume.provider"}) from None
        out["provider"] = provider
    return out


def parse(body: dict) -> Links:
    """The resume members of a submit body. Raises BadRequest / NotFound (a job the caller
    may not see)."""
    if not isinstance(body, dict):
        return Links()
    auto = parse_auto_resume(body.get("auto_resume"))
    raw = body.get("resume_of")
    if raw in (None, {}):
        return Links(auto_resume=auto)
    if not isinstance(raw, dict) or not isinstance(raw.get("job"), str):
        raise BadRequest('resume_of must be an object like {"job": "job_…", "step": 100}',
                         extra={"field": "resume_of"})
    step = _int(raw.get("step"), "resume_of.step", 0, 10 ** 9)
    with db.session() as s:
        jobs_service.get_job(s, raw["job"])
    ck = checkpoints.find(raw["job"], step)
    if not ck.downloadable:
        raise BadRequest(f"resume_of: the checkpoint at step {step} of job {raw['job']} holds no files",
                         extra={"field": "resume_of.step"})
    return Links(raw["job"], step, auto)


def record(job_id: str, links: Links) -> None:
    """Link the new row ``job_id`` into its chain (see the module docstring). Called after the
    row exists and before the provider is asked to run it."""
    if links.empty:
        return
    copied = None
    if links.resume_job is not None:
        with db.session() as s:
            provider = s.get(Job, job_id).provider
        if not registry.get(provider).uploads_data:
            copied = _copy_checkpoint(links.resume_job, links.resume_step, job_id)
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if links.auto_resume is not None:
            job.auto_resume = dict(links.auto_resume)
        if links.resume_job is not None:
            src = s.get(Job, links.resume_job)
            job.resumed_from = src.id
            job.resume_step = links.resume_step
            job.chain_root = src.chain_root or src.id
            if src.chain_root is None:
                src.chain_root = src.id
            if job.auto_resume is None and src.auto_resume:
                job.auto_resume = dict(src.auto_resume)
            if src.owner_id and not job.owner_id:
                job.owner_id = src.owner_id
            if copied is not None:
                job.checkpoint = copied


def _copy_checkpoint(src_job: str, step: int, dst_job: str) -> dict:
    """Server-side copy of the checkpoint folder to ``<dst_job>/checkpoints/checkpoint-<step>/``
    (the prefix the new job's storage key may read)."""
    ck = checkpoints.find(src_job, step)
    b = storage_service.backend()
    key = f"{dst_job}/checkpoints/checkpoint-{step}"
    files = []
    for f in ck.files:
        dst = f"{key}/{f['name']}"
        b.copy(checkpoints.BUCKET, f["key"], checkpoints.BUCKET, dst, meta=None)
        files.append(dst)
    log.info("resume: copied checkpoint %s of %s to %s (%d files)", step, src_job, key, len(files))
    return {"bucket": checkpoints.BUCKET, "key": key, "step": step, "files": files, "attempt": 0,
            "copied_from": src_job, "uploaded_at": utcnow().isoformat().replace("+00:00", "Z")}
