"""The hot path of a running job: an update that streams log, progress and cost but does not
change the job's status — most webhook deliveries and poller answers.

``apply_streaming`` does what ``service.apply_update_in`` does for such an update with three
prepared statements (read the job's state, append the new log tail as one chunk, update the
row) instead of loading the job into the ORM and flushing its unit of work. Anything else —
a status change, outputs, an error, progress set by the provider, extra columns — answers None and the
caller takes the full path (``service.apply_update_in``, the one transition function).
tests/jobs/test_streaming.py checks that both paths leave the same job behind.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import JSON, Float, Integer, String, bindparam, text
from sqlalchemy.orm import Session

from stcloud.jobs import progress as progress_mod
from stcloud.jobs.service import ApplyResult, JobUpdate
from stcloud.models import UTCDateTime, utcnow


@dataclass(frozen=True)
class JobState:
    id: str
    status: str
    log_size: int
    progress: dict | None
    started_at: datetime | None
    rate_usd_per_second: float | None
    provider_data: dict | None


_STATE_COLUMNS = dict(id=String(), status=String(), log_size=Integer(), progress=JSON(),
                      started_at=UTCDateTime(), rate_usd_per_second=Float(), provider_data=JSON())
_STATE_SQL = ("SELECT id, status, log_size, progress, started_at, rate_usd_per_second, provider_data FROM jobs "
              "WHERE provider = :provider AND provider_job_id = :provider_job_id LIMIT 1")
_STATE = text(_STATE_SQL).columns(**_STATE_COLUMNS)
_STATE_FOR_UPDATE = text(_STATE_SQL + " FOR UPDATE").columns(**_STATE_COLUMNS)
_APPEND = text('INSERT INTO job_log_chunks (job_id, "offset", data) VALUES (:job_id, :offset, :data)')
_UPDATE = text(
    "UPDATE jobs SET log_size = :log_size, progress = :progress, started_at = :started_at, "
    "provider_data = :provider_data, "
    "billed_seconds = COALESCE(:billed_seconds, billed_seconds), cost_usd = COALESCE(:cost_usd, cost_usd), "
    "updated_at = :updated_at WHERE id = :id"
).bindparams(bindparam("progress", type_=JSON()), bindparam("started_at", type_=UTCDateTime()),
             bindparam("provider_data", type_=JSON()),
             bindparam("updated_at", type_=UTCDateTime()))


def state_by_provider_id(s: Session, provider: str, provider_job_id: str) -> JobState | None:
    """The job's streaming state, its row locked on PostgreSQL (SQLite: the caller's
    ``BEGIN IMMEDIATE`` already holds the write lock)."""
    conn = s.connection()  # plain statements on the session's connection: no ORM machinery
    stmt = _STATE_FOR_UPDATE if conn.dialect.name == "postgresql" else _STATE
    row = conn.execute(stmt, {"provider": provider, "provider_job_id": provider_job_id}).first()
    return JobState(*row) if row is not None else None


def is_streaming(update: JobUpdate, status: str) -> bool:
    return (update.status in (None, status) and update.error is None
            and not (update.logs_full is not None and update.logs_append) and update.outputs is None
            and not update.progress and not update.extra
            and update.completed_at is None)


def apply_streaming(s: Session, job: JobState, update: JobUpdate) -> ApplyResult | None:
    """Apply a streaming-only ``update`` (see module doc); None when it is not one."""
    if not is_streaming(update, job.status):
        return None
    if update.logs_full is not None:
        full = update.logs_full.encode("utf-8", "replace")
        data = full[job.log_size:] if len(full) > job.log_size else b""
    else:
        data = (update.logs_append or "").encode("utf-8", "replace")
    conn = s.connection()
    progress = job.progress
    if data:
        conn.execute(_APPEND, {"job_id": job.id, "offset": job.log_size, "data": data})
        parsed = progress_mod.parse(data.decode("utf-8", "replace"), job.progress)
        if parsed is not None:
            progress = parsed
    started_at = job.started_at
    if update.started_at and (started_at is None or update.started_at < started_at):
        started_at = update.started_at
    billed = cost = None
    if update.billed_seconds is not None and update.billed_seconds >= 0:
        billed = update.billed_seconds
        if job.rate_usd_per_second is not None:
            cost = round(billed * job.rate_usd_per_second, 6)
    if update.cost_usd is not None and update.cost_usd >= 0:  # the provider's own bill wins
        cost = round(float(update.cost_usd), 6)
    provider_data = job.provider_data
    if update.provider_data:
        provider_data = {**(job.provider_data or {}), **update.provider_data}
    if (data or started_at != job.started_at or billed is not None or cost is not None
            or provider_data != job.provider_data):  # the ORM also skips a no-op
        conn.execute(_UPDATE, {"id": job.id, "log_size": job.log_size + len(data), "progress": progress or {},
                               "started_at": started_at, "provider_data": provider_data,
                               "billed_seconds": billed, "cost_usd": cost, "updated_at": utcnow()})
    return ApplyResult(job.id, job.status, job.status, moved=False, accepted=True)
