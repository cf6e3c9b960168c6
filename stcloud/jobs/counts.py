"""Exact job counts for the list's filters without scanning the jobs (issue 16).

Migration 0017 keeps ``job_counts`` — jobs per ``(owner_key, provider, status)`` — by
triggers on ``jobs``, inside the writing transaction. A count for any mix of the list's
status, provider and owner filters is a sum over a few of those rows, whatever the number of
jobs. On PostgreSQL the triggers append ``+1``/``-1`` rows to ``job_count_deltas`` instead
(no lock on a shared counter row, so writers never wait on each other or deadlock), the sum
reads both tables in one statement (one snapshot), and ``fold`` — a scheduler job — moves
the deltas into ``job_counts`` in one statement. On SQLite the deltas table stays empty.

A name search (``q``) is not a group: its counts stay in ``listing``.
"""
from __future__ import annotations

import threading

from sqlalchemy import bindparam, func, literal, select, text, union_all
from sqlalchemy.orm import Session

from stcloud import db
from stcloud.models import JobCount, JobCountDelta

_GROUPS = union_all(
    select(JobCount.owner_key, JobCount.provider, JobCount.status, JobCount.n.label("n")),
    select(JobCountDelta.owner_key, JobCountDelta.provider, JobCountDelta.status, JobCountDelta.d.label("n")),
).subquery("groups")

_statements: dict[tuple[int, bool, bool], db.Prepared] = {}
_lock = threading.Lock()


def _statement(statuses: int, provider: bool, owner: bool) -> db.Prepared:
    key = (statuses, provider, owner)
    found = _statements.get(key)
    if found is None:
        stmt = select(func.coalesce(func.sum(_GROUPS.c.n), literal(0)))
        if statuses:
            binds = [bindparam(f"status_{i}") for i in range(statuses)]
            stmt = stmt.where(_GROUPS.c.status == binds[0] if statuses == 1 else _GROUPS.c.status.in_(binds))
        if provider:
            stmt = stmt.where(_GROUPS.c.provider == bindparam("provider"))
        if owner:
            stmt = stmt.where(_GROUPS.c.owner_key == bindparam("owner_id"))
        with _lock:
            found = _statements.setdefault(key, db.Prepared(stmt))
    return found


def count(s: Session, statuses: tuple[str, ...] = (), provider: str | None = None,
          owner_id: str | None = None) -> int:
    """How many jobs have one of ``statuses`` (any when empty), ``provider`` (any when None)
    and owner ``owner_id`` (anyone's when None). Exact."""
    statuses = tuple(dict.fromkeys(statuses))
    params: dict = {f"status_{i}": status for i, status in enumerate(statuses)}
    if provider:
        params["provider"] = provider
    if owner_id is not None:
        params["owner_id"] = owner_id
    return int(_statement(len(statuses), bool(provider), owner_id is not None).rows(s, params)[0][0])


FOLD = text("""
WITH gone AS (DELETE FROM job_count_deltas RETURNING owner_key, provider, status, d),
folded AS (
  INSERT INTO job_counts (owner_key, provider, status, n)
  SELECT owner_key, provider, status, sum(d) FROM gone GROUP BY owner_key, provider, status
  ON CONFLICT (owner_key, provider, status) DO UPDATE SET n = job_counts.n + excluded.n
)
SELECT count(*) FROM gone
""")
VACUUM_AFTER = 10_000  # deltas folded at once (a bulk import) after which their table is vacuumed


def fold() -> int:
    """Scheduler job: move PostgreSQL's count deltas into ``job_counts``; returns how many.
    The rows deleted are exactly the rows summed (one statement), so a delta committed
    meanwhile waits for the next fold instead of being lost. After a large fold the table is
    vacuumed at once: a reader sums it, and its dead rows would slow every count until
    autovacuum came by. Nothing to do on SQLite."""
    with db.transaction() as s:
        if s.get_bind().dialect.name != "postgresql":
            return 0
        moved = int(s.execute(FOLD).scalar_one())
    if moved >= VACUUM_AFTER:
        with db.get_db().engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE job_count_deltas")
    return moved
