"""Job list at scale: composite indexes for keyset pages, name search, event pages.

- ``(created_at, id)``, ``(status, created_at, id)``, ``(provider, created_at, id)``: every
  list filter walks an index in the list's order and stops after one page.
- ``job_events (job_id, id)``: events of one job in order, paged by id.
- Name search. SQLite: an FTS5 table with the trigram tokenizer (substring matches, like the
  ``LIKE '%q%'`` it replaces) whose rowid is ``job_search.id`` — an integer that never
  changes, unlike the implicit rowid of ``jobs`` (VACUUM may renumber it). Triggers on
  ``jobs`` keep both in step. A build without FTS5 (or older than 3.34, no trigram) skips
  them and the list falls back to ``LIKE``. PostgreSQL: a ``pg_trgm`` GIN index on
  ``name`` that serves ``ILIKE '%q%'``; skipped when the extension is not available.

- ``(owner_id, created_at, id)``: a member's own jobs (accounts' owner filter).

Revision ID: 0009_job_indexes
Revises: 0007_accounts (which adds jobs.owner_id)
"""
import logging

import sqlalchemy as sa
from alembic import op

revision = "0009_job_indexes"
down_revision = "0008_storage"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

INDEXES = {
    "ix_jobs_created_id": ("jobs", ["created_at", "id"]),
    "ix_jobs_status_created_id": ("jobs", ["status", "created_at", "id"]),
    "ix_jobs_provider_created_id": ("jobs", ["provider", "created_at", "id"]),
    "ix_jobs_owner_created_id": ("jobs", ["owner_id", "created_at", "id"]),
    "ix_job_events_job_id_id": ("job_events", ["job_id", "id"]),
}

SQLITE_SEARCH = [
    "CREATE TABLE job_search (id INTEGER PRIMARY KEY, job_id VARCHAR(40) NOT NULL UNIQUE)",
    "CREATE VIRTUAL TABLE jobs_fts USING fts5(name, tokenize='trigram')",
    "INSERT INTO job_search (job_id) SELECT id FROM jobs ORDER BY created_at, id",
    "INSERT INTO jobs_fts (rowid, name) SELECT s.id, j.name FROM job_search s JOIN jobs j ON j.id = s.job_id",
    """CREATE TRIGGER jobs_search_insert AFTER INSERT ON jobs BEGIN
         INSERT INTO job_search (job_id) VALUES (new.id);
         INSERT INTO jobs_fts (rowid, name)
           VALUES ((SELECT id FROM job_search WHERE job_id = new.id), new.name);
       END""",
    """CREATE TRIGGER jobs_search_rename AFTER UPDATE OF name ON jobs
       WHEN old.name IS NOT new.name BEGIN
         UPDATE jobs_fts SET name = new.name
           WHERE rowid = (SELECT id FROM job_search WHERE job_id = new.id);
       END""",
    """CREATE TRIGGER jobs_search_delete AFTER DELETE ON jobs BEGIN
         DELETE FROM jobs_fts WHERE rowid = (SELECT id FROM job_search WHERE job_id = old.id);
         DELETE FROM job_search WHERE job_id = old.id;
       END""",
]


def _sqlite_has_fts5_trigram(bind) -> bool:
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE VIRTUAL TABLE temp._stcloud_fts_probe USING fts5(x, tokenize='trigram')")
            bind.exec_driver_sql("DROP TABLE temp._stcloud_fts_probe")
        return True
    except sa.exc.OperationalError as exc:
        log.warning("SQLite has no FTS5 trigram tokenizer (%s): job name search uses LIKE", exc)
        return False


def upgrade() -> None:
    for name, (table, cols) in INDEXES.items():
        op.create_index(name, table, cols)
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        if _sqlite_has_fts5_trigram(bind):
            for stmt in SQLITE_SEARCH:
                op.execute(stmt)
    elif bind.dialect.name == "postgresql":
        try:
            with bind.begin_nested():
                bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except sa.exc.DBAPIError as exc:
            log.warning("pg_trgm not available (%s): job name search scans", exc)
            return
        op.execute("CREATE INDEX ix_jobs_name_trgm ON jobs USING gin (name gin_trgm_ops)")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for trigger in ("jobs_search_insert", "jobs_search_rename", "jobs_search_delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS jobs_fts")
        op.execute("DROP TABLE IF EXISTS job_search")
    elif bind.dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_jobs_name_trgm")
    for name, (table, _cols) in INDEXES.items():
        op.drop_index(name, table_name=table)
