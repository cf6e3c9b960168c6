"""Seed jobs directly (tests only)."""
from __future__ import annotations

from datetime import timedelta

from stcloud import db
from stcloud.jobs import service
from stcloud.models import Job, utcnow


def make_job(app, status="pending", provider="replicate", name="job", **fields) -> str:
    """Insert a job and walk it to ``status`` through the transition function."""
    path = {
        "pending": [], "uploading": ["uploading"], "queued": ["queued"], "running": ["queued", "running"],
        "completed": ["queued", "running", "completed"], "failed": ["failed"],
        "cancelled": ["cancelled"],
    }[status]
    with app.app_context():
        with db.transaction() as s:
            job = Job(name=name, provider=provider, status="pending", config={"max_train_steps": 10},
                      dataloader_config=[], **fields)
            s.add(job)
            s.flush()
            for st in path:
                service.transition(s, job, st, source="test")
            return job.id


def age(app, job_id, seconds):
    with app.app_context():
        with db.transaction() as s:
            job = s.get(Job, job_id)
            job.created_at = utcnow() - timedelta(seconds=seconds)
