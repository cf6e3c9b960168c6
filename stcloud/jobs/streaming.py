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

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import JSON, Float, Integer, String, bindparam, text
from sqlalchemy.orm import Session

from stcloud.jobs import loss_points
from stcloud.jobs import progress as progress_mod
from stcloud.jobs.service import ApplyResult, JobUpdate
from stcloud.models import UTCDateTime, utcnow


@dataclass(frozen=True)
class JobState:
    """The columns a streaming update reads. ``progress`` and ``provider_data`` come as stored
    (JSON text on SQLite, decoded by the driver on PostgreSQL) and are decoded only when the
    update needs them: a delivery that brings no new log line does not parse the loss history."""

    id: str
    status: str
    log_size: int
    progress_stored: str | dict | None
    started_at: datetime | None
    rate_usd_per_second: float | None
    provider_data_stored: str | dict | None
    loss_points: int  # points in the job's loss history (jobs/loss_points.py)

    @property
    def progress(self) -> dict | None:
        return _decoded(self.progress_stored)

    @property
    def provider_data(self) -> dict | None:
        return _decoded(self.provider_data_stored)


def _decoded(stored):
    return json.loads(stored) if isinstance(stored, str) else stored


_STATE_COLUMNS = dict(id=String(), status=String(), log_size=Integer(), progress=String(),
                      started_at=UTCDateTime(), rate_usd_per_second=Float(), provider_data=String(),
                      loss_points=Integer())
_STATE_SQL = ("SELECT id, status, log_size, progress, started_at, rate_usd_per_second, provider_data, "
              "(SELECT count(*) FROM job_loss_points WHERE job_id = jobs.id) AS loss_points FROM jobs "
              "WHERE provider = :provider AND provider_job_id = :provider_job_id LIMIT 1")
_STATE = text(_STATE_SQL).columns(**_STATE_COLUMNS)
_STATE_FOR_UPDATE = text(_STATE_SQL + " FOR UPDATE").columns(**_STATE_COLUMNS)
_APPEND = text('INSERT INTO job_log_chunks (job_id, "offset", data) VALUES (:job_id, :offset, :data)')
_UPDATE_SQL = (
    "UPDATE jobs SET log_size = :log_size, progress = :progress, started_at = :started_at, "
    "provider_data = :provider_data, "
    "billed_seconds = COALESCE(:billed_seconds, billed_seconds), cost_usd = COALESCE(:cost_usd, cost_usd), "
    "updated_at = :updated_at WHERE id = :id")
_UPDATE = text(_UPDATE_SQL).bindparams(
    bindparam("progress", type_=JSON()), bindparam("started_at", type_=UTCDateTime()),
    bindparam("provider_data", type_=JSON()), bindparam("updated_at", type_=UTCDateTime()))
# SQLite stores JSON as text: the columns are written as text, re-encoded only when they changed
# (json.dumps, the JSON type's serializer, so the bytes are the ORM's)
_UPDATE_TEXT = text(_UPDATE_SQL).bindparams(
    bindparam("progress", type_=String()), bindparam("started_at", type_=UTCDateTime()),
    bindparam("provider_data", type_=String()), bindparam("updated_at", type_=UTCDateTime()))


def _stored(value, as_text: bool):
    """``value`` (a dict, or the column as read) in the form the UPDATE binds it."""
    if as_text:
        return value if value is None or isinstance(value, str) else json.dumps(value)
    return _decoded(value)


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
    progress = job.progress_stored
    if data:
        conn.execute(_APPEND, {"job_id": job.id, "offset": job.log_size, "data": data})
        folded = progress_mod.parse(data.decode("utf-8", "replace"), job.progress)
        if folded is not None:
            progress = folded.progress
            loss_points.append(conn, job.id, folded.points, had=job.loss_points)
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
    provider_data, provider_data_changed = job.provider_data_stored, False
    if update.provider_data:
        current = job.provider_data
        merged = {**(current or {}), **update.provider_data}
        if merged != current:
            provider_data, provider_data_changed = merged, True
    if (data or started_at != job.started_at or billed is not None or cost is not None
            or provider_data_changed):  # the ORM also skips a no-op
        as_text = conn.dialect.name == "sqlite"
        conn.execute(_UPDATE_TEXT if as_text else _UPDATE, {
            "id": job.id, "log_size": job.log_size + len(data),
            "progress": _stored(progress or {}, as_text), "started_at": started_at,
            "provider_data": _stored(provider_data, as_text),
            "billed_seconds": billed, "cost_usd": cost, "updated_at": utcnow()})
    return ApplyResult(job.id, job.status, job.status, moved=False, accepted=True)
