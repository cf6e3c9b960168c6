"""Exact job counts without scanning: ``job_counts`` kept by triggers on ``jobs``.

One row per ``(owner_key, provider, status)`` (``owner_key`` = ``owner_id`` or ``''``) with
the number of jobs in it. Any count the job list shows for its filters (status, provider,
owner) is a sum over a few of these rows instead of a walk over up to a million index
entries, and it is exact. The triggers run inside the writing transaction, so a count never
disagrees with the committed rows.

- SQLite (one writer at a time): the triggers add and subtract on the group's row directly.
- PostgreSQL (many writers): a counter row updated by every transaction would serialise the
  transactions that touch one group, and two transactions moving jobs between groups in
  opposite orders could deadlock. So its triggers append ``+1``/``-1`` rows to
  ``job_count_deltas``, which take no lock on shared rows; a scheduler job folds them into
  ``job_counts`` (``jobs.counts.fold``). A reader sums both tables in one statement.

Revision ID: 0017_job_counts
Revises: 0016_loss_points
"""
import sqlalchemy as sa
from alembic import op

revision = "0017_job_counts"
down_revision = "0016_loss_points"
branch_labels = None
depends_on = None

CHANGED = ("old.status IS NOT new.status OR old.provider IS NOT new.provider "
           "OR old.owner_id IS NOT new.owner_id")


def _add(row: str) -> str:
    return (f"INSERT INTO job_counts (owner_key, provider, status, n) "
            f"VALUES (coalesce({row}.owner_id, ''), {row}.provider, {row}.status, 1) "
            f"ON CONFLICT (owner_key, provider, status) DO UPDATE SET n = n + 1;")


def _subtract(row: str) -> str:
    return (f"UPDATE job_counts SET n = n - 1 WHERE owner_key = coalesce({row}.owner_id, '') "
            f"AND provider = {row}.provider AND status = {row}.status;")


SQLITE_TRIGGERS = {
    "job_counts_insert": f"AFTER INSERT ON jobs BEGIN {_add('new')} END",
    "job_counts_delete": f"AFTER DELETE ON jobs BEGIN {_subtract('old')} END",
    "job_counts_update": (f"AFTER UPDATE OF status, provider, owner_id ON jobs WHEN {CHANGED} "
                          f"BEGIN {_subtract('old')} {_add('new')} END"),
}

PG_FUNCTION = """
CREATE FUNCTION job_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    INSERT INTO job_count_deltas (owner_key, provider, status, d)
      VALUES (coalesce(OLD.owner_id, ''), OLD.provider, OLD.status, -1);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    INSERT INTO job_count_deltas (owner_key, provider, status, d)
      VALUES (coalesce(NEW.owner_id, ''), NEW.provider, NEW.status, 1);
  END IF;
  RETURN NULL;
END $$
"""
PG_TRIGGERS = [
    "CREATE TRIGGER job_counts_insert_delete AFTER INSERT OR DELETE ON jobs "
    "FOR EACH ROW EXECUTE FUNCTION job_counts_track()",
    "CREATE TRIGGER job_counts_update AFTER UPDATE OF status, provider, owner_id ON jobs FOR EACH ROW "
    "WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.provider IS DISTINCT FROM NEW.provider "
    "OR OLD.owner_id IS DISTINCT FROM NEW.owner_id) EXECUTE FUNCTION job_counts_track()",
]


def upgrade() -> None:
    op.create_table(
        "job_counts",
        sa.Column("owner_key", sa.String(40), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("owner_key", "provider", "status"),
    )
    op.create_table(
        "job_count_deltas",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("owner_key", sa.String(40), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("d", sa.Integer(), nullable=False),
    )
    bind = op.get_bind()
    # the lock on jobs comes first, so no job is written between the count and the triggers
    if bind.dialect.name == "postgresql":
        op.execute("LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE")
    op.execute("INSERT INTO job_counts (owner_key, provider, status, n) "
               "SELECT coalesce(owner_id, ''), provider, status, count(*) FROM jobs "
               "GROUP BY coalesce(owner_id, ''), provider, status")
    if bind.dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        for stmt in PG_TRIGGERS:
            op.execute(stmt)
    else:
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS job_counts_insert_delete ON jobs")
        op.execute("DROP TRIGGER IF EXISTS job_counts_update ON jobs")
        op.execute("DROP FUNCTION IF EXISTS job_counts_track()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("job_count_deltas")
    op.drop_table("job_counts")
