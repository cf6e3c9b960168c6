"""Idempotency keys of submits (SPEC §3 step 1): the same key within 24 h answers with the
first job; the same key with a different body is a conflict."""
from __future__ import annotations

from datetime import timedelta

from stcloud import db
from stcloud.accounts import scope
from stcloud.errors import Conflict
from stcloud.jobs import service as jobs_service
from stcloud.models import IdempotencyKey, Job, utcnow

TTL = timedelta(hours=24)


def fresh(row: IdempotencyKey) -> bool:
    return utcnow() - row.created_at < TTL


def job_for_key(key: str) -> dict | None:
    """The job submitted with ``key`` within 24 h (for progress polling), or None."""
    with db.session() as s:
        row = s.get(IdempotencyKey, key)
        if row is None or not fresh(row):
            return None
        job = s.get(Job, row.job_id)
        visible = job is not None and scope.may_see(job.owner_id)  # keys are global; jobs are not
        return jobs_service.to_dict(job, include_config=False) if visible else None


def first_job(key: str, fingerprint: str) -> dict | None:
    """The job a fresh ``key`` was first used for, or None. Raises Conflict when that job was
    submitted with a different body."""
    with db.session() as s:
        row = s.get(IdempotencyKey, key)
        if row is None or not fresh(row):
            return None
        job = s.get(Job, row.job_id)
        if job is None:
            return None
        if not scope.may_see(job.owner_id):
            raise Conflict(f"idempotency key {key!r} is already in use; use a new key")
        first = (job.provider_data or {}).get("submit_fingerprint")
        if first and first != fingerprint:
            raise Conflict(f"idempotency key {key!r} was already used for a different submission "
                           f"(job {job.id}); use a new key", extra={"job_id": job.id})
        return jobs_service.to_dict(job)
