"""The submit side of ``waiting`` jobs (SPEC §13): the hook that turns a body with
``depends_on`` / ``hold`` / ``provider: "auto"`` into a waiting job, and the adoption of that
row when it is released through the ordinary submit path.

The hook itself lives in ``stcloud.pipelines`` (which imports ``jobs``); it registers in
``app.extensions[HOOK]`` so ``jobs`` never imports it back.
"""
from __future__ import annotations

from flask import current_app
from sqlalchemy import inspect
from sqlalchemy.orm import Session

from stcloud import states
from stcloud.errors import Conflict
from stcloud.jobs import service as jobs_service
from stcloud.models import Job

HOOK = "stcloud.submit_waiting"
_KEPT = frozenset({"id", "status", "created_at", "owner_id", "placement"})


def intercept(body, source: str):
    """A ``SubmitResult`` when the body makes a waiting job (or places one), else None."""
    hook = current_app.extensions.get(HOOK)
    return hook(body, source) if hook is not None and isinstance(body, dict) else None


def adopt(s: Session, job: Job, *, source: str) -> Job:
    """Add ``job`` to the session — or, when a waiting row with its id exists (a released
    job), move that row to ``pending`` and give it the new row's values. Raises Conflict when
    the row is no longer waiting (cancelled meanwhile)."""
    row = s.get(Job, job.id)
    if row is None:
        s.add(job)
        return job
    if row.status != states.WAITING:
        raise Conflict(f"job {job.id} is {row.status}; it was not started")
    jobs_service.transition(s, row, states.PENDING, source=source, detail="released: submitting")
    for attr in inspect(Job).column_attrs:
        if attr.key in job.__dict__ and attr.key not in _KEPT:
            setattr(row, attr.key, job.__dict__[attr.key])
    return row
