"""The loss history moves out of ``jobs.progress`` into ``job_loss_points``.

``progress`` keeps its scalars and gains ``best_loss`` (the lowest loss of the history);
each ``[step, loss]`` of ``progress["losses"]`` becomes a row, in order. A log line then
appends one small row instead of rewriting the history inside the job row (the webhook
receiver's throughput fell as histories grew). Downgrade folds the points back.

Revision ID: 0016_loss_points
Revises: 0015_pipelines
"""
import json

import sqlalchemy as sa
from alembic import op

revision = "0016_loss_points"
down_revision = "0015_pipelines"
branch_labels = None
depends_on = None

BATCH = 500


def _progress(value):
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def _points(losses):
    out = []
    for p in losses if isinstance(losses, list) else []:
        if isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[1], (int, float)) \
                and not isinstance(p[1], bool) and isinstance(p[0], int) and not isinstance(p[0], bool):
            out.append((p[0], float(p[1])))
    return out


def upgrade() -> None:
    op.create_table(
        "job_loss_points",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_loss_points_job_id_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_job_loss_points"),
    )
    op.create_index("ix_job_loss_points_job_id", "job_loss_points", ["job_id", "id"])
    conn = op.get_bind()
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("progress", sa.JSON))
    points = sa.table("job_loss_points", sa.column("job_id", sa.String), sa.column("step", sa.Integer),
                      sa.column("loss", sa.Float))
    # only rows whose progress mentions a history (a text test: works on both dialects), in
    # batches by id: a large instance's histories never sit in memory all at once
    mentions = sa.cast(jobs.c.progress, sa.Text).like('%"losses"%')
    last = ""
    while True:
        rows = conn.execute(sa.select(jobs.c.id, jobs.c.progress).where(jobs.c.id > last, mentions)
                            .order_by(jobs.c.id).limit(BATCH)).all()
        if not rows:
            break
        last = rows[-1][0]
        for job_id, raw in rows:
            progress = _progress(raw)
            if progress is None or "losses" not in progress:
                continue
            pts = _points(progress.pop("losses"))
            if pts:
                conn.execute(points.insert(), [{"job_id": job_id, "step": s, "loss": loss} for s, loss in pts])
                best = min(loss for _, loss in pts)
                if progress.get("best_loss") is None or best < progress["best_loss"]:
                    progress["best_loss"] = best
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(progress=progress))


def downgrade() -> None:
    conn = op.get_bind()
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("progress", sa.JSON))
    rows = conn.execute(sa.text("SELECT job_id, step, loss FROM job_loss_points ORDER BY job_id, id")).all()
    history: dict[str, list] = {}
    for job_id, step, loss in rows:
        history.setdefault(job_id, []).append([step, loss])
    for job_id, losses in history.items():
        raw = conn.execute(sa.select(jobs.c.progress).where(jobs.c.id == job_id)).scalar()
        progress = _progress(raw) or {}
        progress.pop("best_loss", None)
        progress["losses"] = losses
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(progress=progress))
    op.drop_index("ix_job_loss_points_job_id", table_name="job_loss_points")
    op.drop_table("job_loss_points")
