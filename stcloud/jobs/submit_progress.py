"""The submit progress bar (scan -> package -> upload -> submit), written on the job itself so
the UI, the CLI and ``GET /api/cloud/jobs/submit/progress`` read it like any other field."""
from __future__ import annotations

import logging
import time
from typing import Any

from stcloud.jobs import reconcile
from stcloud.jobs import service as jobs_service
from stcloud.jobs.service import JobUpdate

log = logging.getLogger(__name__)

STAGES = ("scan", "package", "upload", "submit")
# share of the submit progress bar per stage: (start %, end %)
STAGE_SPAN = {"scan": (0, 5), "package": (5, 40), "upload": (40, 95), "submit": (95, 100)}


class SubmitProgress:
    """Writes the submit stage on the job (``progress.stage`` and bytes), at most every
    ``interval`` seconds per stage, in short transactions of their own."""

    def __init__(self, job_id: str, interval: float = 0.4):
        self.job_id = job_id
        self.interval = interval
        self.stage: str | None = None
        self.last = 0.0
        self.owner = reconcile.submit_owner()  # whoever reports progress runs the submit now

    def __call__(self, stage: str, done: int, total: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and stage == self.stage and now - self.last < self.interval and done < total:
            return
        self.stage, self.last = stage, now
        lo, hi = STAGE_SPAN.get(stage, (0, 100))
        frac = (done / total) if total else 1.0
        prog: dict[str, Any] = {"stage": stage, "stage_done": int(done), "stage_total": int(total),
                                "submit_percent": round(lo + (hi - lo) * min(1.0, max(0.0, frac)), 1)}
        if stage == "upload":
            prog.update(upload_bytes=int(done), upload_total=int(total))
        try:
            jobs_service.apply_update(self.job_id, JobUpdate(progress=prog, provider_data={"submit_owner": self.owner}),
                                      source="submit")
        except Exception:  # noqa: BLE001 - progress is informative; never fail a submit for it
            log.debug("could not record submit progress for %s", self.job_id, exc_info=True)
