"""The outbox of provider-side data to delete: one ``upload_cleanups`` row per job that
packaged a dataset, written in the transaction that ends the job (``jobs.service.transition``)
and worked off by ``jobs.reconcile.delete_uploads_due`` in the scheduler. Models only: the
transition function imports this, so it imports nothing from ``jobs``."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from stcloud.models import Job, UploadCleanup, utcnow

ENDED, ORPHAN = "ended", "orphan"  # orphan: no remote job ever used the data


def queue(s: Session, job: Job, *, reason: str = ENDED, at: datetime | None = None) -> UploadCleanup | None:
    """Queue the deletion of what ``job`` uploaded (only jobs that packaged a dataset can
    have uploaded one). An ``orphan`` reason wins over ``ended``. Returns the row or None."""
    if not job.dataset_sha256:
        return None
    row = s.get(UploadCleanup, job.id)
    if row is None:
        row = UploadCleanup(job_id=job.id, provider=job.provider, reason=reason, due_at=at or utcnow(),
                            attempts=0)
        s.add(row)
    elif reason == ORPHAN and row.done_at is None:
        row.reason = ORPHAN
    return row
