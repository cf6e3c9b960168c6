"""A job's loss history: ``[step, loss]`` points in ``job_loss_points``.

Appended by the one place log text is folded into progress (``service.append_log`` and its
streaming twin ``streaming.apply_streaming``), a row per point, so a new log line costs one
small insert instead of decoding and rewriting the whole history in the job row. A job keeps
at most ``MAX_POINTS``: past it the older half is thinned (every other point), so the chart
keeps its shape and the newest points.

The statements are plain text so they run on a SQLAlchemy connection and on the webhook fast
path's prepared connection alike (``execute(statement, params)`` with ``first()``/``all()``).
"""
from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text

MAX_POINTS = 400

_INSERT = text("INSERT INTO job_loss_points (job_id, step, loss) VALUES (:job_id, :step, :loss)")
_COUNT = text("SELECT count(*) FROM job_loss_points WHERE job_id = :job_id")
_IDS = text("SELECT id FROM job_loss_points WHERE job_id = :job_id ORDER BY id")
_DELETE = text("DELETE FROM job_loss_points WHERE id = :id")
_SERIES = text("SELECT step, loss FROM job_loss_points WHERE job_id = :job_id ORDER BY id")


def thinned(ids: list) -> list:
    """The points kept of ``ids`` (oldest first): while there are more than ``MAX_POINTS``,
    every other one of the older half goes."""
    while len(ids) > MAX_POINTS:
        half = len(ids) // 2
        ids = ids[:half:2] + ids[half:]
    return ids


def append(conn, job_id: str, points: Iterable[tuple[int, float]], *, had: int | None = None) -> None:
    """Add ``points`` to the job's history (in the caller's transaction) and thin it.
    ``had``: the points the job had, when the caller read it in this transaction."""
    added = 0
    for step, loss in points:
        conn.execute(_INSERT, {"job_id": job_id, "step": step, "loss": loss})
        added += 1
    if not added:
        return
    total = had + added if had is not None else conn.execute(_COUNT, {"job_id": job_id}).first()[0]
    if total <= MAX_POINTS:
        return
    ids = [row[0] for row in conn.execute(_IDS, {"job_id": job_id}).all()]
    for gone in set(ids) - set(thinned(ids)):
        conn.execute(_DELETE, {"id": gone})


def series(conn, job_id: str) -> list[list]:
    """``[[step, loss], …]`` oldest first (the job page's chart, compare's curves)."""
    return [[row[0], row[1]] for row in conn.execute(_SERIES, {"job_id": job_id}).all()]
