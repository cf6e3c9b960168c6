"""Upload cleanups: provider-side data of ended jobs (and of interrupted submits) to delete.

Revision ID: 0012_crash
Revises: 0011_secrets
"""
import sqlalchemy as sa
from alembic import op

revision = "0012_crash"
down_revision = "0011_secrets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upload_cleanups",
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("job_id", name="pk_upload_cleanups"),
    )
    op.create_index("ix_upload_cleanups_due", "upload_cleanups", ["done_at", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_upload_cleanups_due", table_name="upload_cleanups")
    op.drop_table("upload_cleanups")
