"""Job outputs stored in the built-in S3 endpoint link to the dashboard's download route.

The S3 endpoint answers only signed requests now, so ``download_url`` of ``builtin`` outputs
moves from ``/api/cloud/storage/<bucket>/<key>`` to ``/storage/download/<bucket>/<key>``
(and back on downgrade).

Revision ID: 0007_storage
Revises: 0006
"""
import json

import sqlalchemy as sa
from alembic import op

revision = "0008_storage"
down_revision = "0007_accounts"
branch_labels = None
depends_on = None

OLD = "/api/cloud/storage/"
NEW = "/storage/download/"


def _rewrite(src: str, dst: str) -> None:
    conn = op.get_bind()
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("outputs", sa.JSON))
    for job_id, outputs in conn.execute(sa.select(jobs.c.id, jobs.c.outputs)).all():
        if isinstance(outputs, str):
            outputs = json.loads(outputs)
        if not isinstance(outputs, list):
            continue
        changed = False
        for entry in outputs:
            url = entry.get("download_url") if isinstance(entry, dict) else None
            if entry and isinstance(url, str) and entry.get("destination") == "builtin" and url.startswith(src):
                entry["download_url"] = dst + url[len(src):]
                changed = True
        if changed:
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(outputs=outputs))


def upgrade() -> None:
    _rewrite(OLD, NEW)


def downgrade() -> None:
    _rewrite(NEW, OLD)
