"""Periodic jobs, declared as data, run by APScheduler in exactly one process.

``stcloud serve`` (running alone) or ``stcloud scheduler`` (beside gunicorn) start it; the
web app factory never does, so N gunicorn workers never mean N pollers. Each run opens its
own app context and sessions and holds ids, not ORM objects.
"""
from __future__ import annotations

import importlib
import logging
import os
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger(__name__)


def env_seconds(name: str, default: int) -> int:
    """A whole number of seconds (>= 1) from the environment, else ``default``."""
    raw = os.environ.get(name, "").strip()
    try:
        return max(1, int(raw)) if raw else default
    except ValueError:
        log.warning("%s=%r is not a whole number of seconds; using %d", name, raw, default)
        return default


# (id, "module:function", interval seconds). Each function takes no arguments and runs
# inside an app context.
PERIODIC = [
    ("scheduler_heartbeat", "stcloud.scheduler:beat", 10),
    ("poll_providers", "stcloud.jobs.poller:poll_due", 5),
    ("enforce_cost_limits", "stcloud.jobs.enforce:enforce_limits", 60),
    ("worker_liveness", "stcloud.workers.service:check_liveness", 15),
    ("purge_storage", "stcloud.storage.credentials:purge_expired", 300),
    ("deliver_outputs", "stcloud.publishing.service:deliver_pending", 10),
    ("send_notifications", "stcloud.notify.sender:send_due", 5),
    # interrupted submits, uploads of ended jobs, leftover archives (jobs/reconcile.py)
    ("reconcile_submits", "stcloud.jobs.reconcile:run", env_seconds("STCLOUD_RECONCILE_SECONDS", 30)),
    ("delete_dataset_links", "stcloud.jobs.dataset_url:cleanup", 60),
    ("auto_resume", "stcloud.jobs.resume:auto_resume_due", 15),
    ("release_waiting_jobs", "stcloud.pipelines.service:tick", 3),
    ("fold_job_counts", "stcloud.jobs.counts:fold", 5),  # PostgreSQL's count deltas (jobs/counts.py)
]

HEARTBEAT_KEY = "scheduler_heartbeat"
_started_pid: int | None = None


def resolve(path: str):
    module, _, func = path.partition(":")
    return getattr(importlib.import_module(module), func)


def beat() -> None:
    from stcloud import settings

    settings.put(HEARTBEAT_KEY, {"at": datetime.now(UTC).isoformat(), "pid": os.getpid()})


def _wrap(app, func_path: str):
    func = resolve(func_path)

    def run():
        with app.app_context():
            try:
                func()
            except Exception:
                log.exception("scheduled job %s failed", func_path)

    return run


def start(app) -> BackgroundScheduler:
    """Start the scheduler once per process. Raises RuntimeError if already started here."""
    global _started_pid
    if _started_pid == os.getpid():
        raise RuntimeError("scheduler already running in this process")
    # Every run of every job at INFO would drown the server log; failures are logged by _wrap.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    sched = BackgroundScheduler(timezone="UTC", job_defaults={"max_instances": 1, "coalesce": True,
                                                               "misfire_grace_time": 30})
    for job_id, path, seconds in PERIODIC:
        sched.add_job(_wrap(app, path), "interval", seconds=seconds, id=job_id, name=job_id,
                      next_run_time=datetime.now(UTC))
    extra = app.extensions.get("stcloud.schedule_hooks", [])
    for hook in extra:  # e.g. period-boundary jobs added by the cost module
        hook(sched, app)
    sched.start()
    _started_pid = os.getpid()
    app.extensions["stcloud.scheduler"] = sched
    log.info("scheduler started in pid %s with %d jobs", os.getpid(), len(sched.get_jobs()))
    return sched


def status(app) -> dict:
    from stcloud import settings

    beat_ = settings.get(HEARTBEAT_KEY) or {}
    at = beat_.get("at")
    alive = False
    if at:
        age = (datetime.now(UTC) - datetime.fromisoformat(at)).total_seconds()
        alive = age < 45
    return {"alive": alive, "last_beat": at, "pid": beat_.get("pid"),
            "in_this_process": "stcloud.scheduler" in app.extensions}
