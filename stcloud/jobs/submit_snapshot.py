"""The submit's config snapshot on a thread of its own.

The snapshot is a git commit (a few ``git`` subprocesses, tens of milliseconds, more on a
busy machine). Taken beside the packaging and the launch instead of before them, it no longer
delays the moment the job is queued (issue 16: submit -> first step); the submit still waits
for it before it answers, so the job's ``snapshot`` is set as before.
"""
from __future__ import annotations

import logging
import threading

from flask import current_app

from stcloud import db
from stcloud.accounts import service as accounts
from stcloud.models import Job
from stcloud.snapshots.service import snapshot_for_submit

log = logging.getLogger(__name__)


def _owner(job_id: str) -> str | None:
    """The job's owner (set on its row before the snapshot starts), for the commit's
    ``Owner-Id``. A failed read leaves it out: the snapshot is then its job's by ``Job-Id``."""
    try:
        return accounts.job_owner(job_id)
    except Exception:  # noqa: BLE001 - the snapshot never fails a submit
        log.exception("could not read the owner of %s", job_id)
        return None


class SnapshotInFlight:
    """``start`` the commit on a thread (in the app's context, so the user's switch is read as
    before); ``record`` waits for it and writes the sha (or the error) on the job; ``into``
    also puts it in the answer."""

    def __init__(self, job_id: str, name: str, config: dict, dataloader_config: list, message: str | None):
        self.job_id = job_id
        self.result: tuple[str | None, str | None] = (None, None)
        self._recorded = False
        app = current_app._get_current_object()
        home = app.config["STCLOUD_HOME"]

        def take() -> None:
            with app.app_context():
                self.result = snapshot_for_submit(home, name, config, dataloader_config, job_id, message,
                                                  owner_id=_owner(job_id))

        self._thread = threading.Thread(target=take, name=f"snapshot-{job_id}", daemon=True)
        self._thread.start()

    def record(self) -> None:
        """Wait for the commit and write it on the job (once)."""
        if self._recorded:
            return
        self._recorded = True
        self._thread.join()
        sha, error = self.result
        if not (sha or error):
            return
        try:
            with db.transaction() as s:
                job = s.get(Job, self.job_id)
                if job is not None:
                    job.snapshot, job.snapshot_error = sha, error
        except Exception:  # noqa: BLE001 - the snapshot is a record; it never fails a submit
            log.exception("could not record the snapshot of %s", self.job_id)

    def into(self, job: dict) -> dict:
        """``record``, then the submit's answer ``job`` (read before) with the snapshot in it."""
        self.record()
        sha, error = self.result
        return {**job, "snapshot": sha, "snapshot_error": error} if (sha or error) else job


def start(job_id: str, name: str, config: dict, dataloader_config: list, message: str | None) -> SnapshotInFlight:
    return SnapshotInFlight(job_id, name, config, dataloader_config, message)
