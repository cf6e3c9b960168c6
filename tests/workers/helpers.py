"""Helpers for the worker tests: queued worker jobs built with the real packaging."""
from __future__ import annotations

from pathlib import Path

from stcloud import db
from stcloud.jobs import service as jobs_service
from stcloud.models import Job
from stcloud.packaging import build_archive
from stcloud.trainer.sample import ensure_sample

FAST_CONFIG = {"max_train_steps": 20, "checkpointing_steps": 5, "learning_rate": 3e-3, "seed": 7,
               "resolution": 16, "train_batch_size": 4, "lora_rank": 2}


def sample(home: Path) -> dict:
    return ensure_sample(Path(home) / "sample-src")


def queue_job(app, *, provider="worker", name="job", config=None, requirements=None, archive=True,
              max_attempts=3, home: Path | None = None) -> str:
    """A queued worker job as submit leaves it: archive in uploads/, rewritten dataloader."""
    home = Path(home or app.config["STCLOUD_HOME"])
    import json

    dataloader = []
    arch = None
    if archive is not True and archive:  # a prebuilt Archive shared by many jobs
        arch = archive
        dataloader = arch.dataloader_config
    elif archive:
        info = sample(home)
        dataloader = json.loads(Path(info["dataloader_path"]).read_text())
        arch = build_archive(dataloader, home / "uploads")
        dataloader = arch.dataloader_config
    with app.app_context():
        with db.transaction() as s:
            job = Job(name=name, provider=provider, status="pending", config=dict(config or FAST_CONFIG),
                      dataloader_config=dataloader, requirements=requirements, max_attempts=max_attempts,
                      archive_path=str(arch.path) if arch else None,
                      dataset_sha256=arch.sha256 if arch else None)
            s.add(job)
            s.flush()
            jobs_service.transition(s, job, "queued", source="test")
            return job.id


def get_job(app, job_id) -> Job:
    with app.app_context():
        with db.session() as s:
            job = s.get(Job, job_id)
            s.expunge(job)
            return job


def bearer(token: str) -> dict:
    """The Authorization header of a worker (or API) token."""
    return {"Authorization": f"Bearer {token}"}
