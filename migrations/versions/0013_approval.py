"""Approvals and per-user notification preferences: users.approval_threshold_usd,
users.notify_prefs, notifications.recipient.

Revision ID: 0013_approval
Revises: 0012_crash
"""
import sqlalchemy as sa
from alembic import op

revision = "0013_approval"
down_revision = "0012_crash"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("approval_threshold_usd", sa.Float(), nullable=True))
        batch.add_column(sa.Column("notify_prefs", sa.JSON(), nullable=True))
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("recipient", sa.String(320), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("recipient")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("notify_prefs")
        batch.drop_column("approval_threshold_usd")
