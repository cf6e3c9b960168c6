"""Resume anywhere: the chain of attempts across providers and the automatic-resume option.

``jobs.resumed_from`` (the job a resume started from), ``resume_step`` (its checkpoint's step),
``chain_root`` (the first job of the chain; the chain is every job with that root) and
``auto_resume`` (JSON ``{max_attempts, provider?}``).

Revision ID: 0014_checkpoints
Revises: 0013_approval
"""
import sqlalchemy as sa
from alembic import op

revision = "0014_checkpoints"
down_revision = "0013_approval"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("resumed_from", sa.String(40), nullable=True))
        batch.add_column(sa.Column("resume_step", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("chain_root", sa.String(40), nullable=True))
        batch.add_column(sa.Column("auto_resume", sa.JSON(), nullable=True))
        batch.create_index("ix_jobs_resumed_from", ["resumed_from"])
        batch.create_index("ix_jobs_chain_root", ["chain_root"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_chain_root")
        batch.drop_index("ix_jobs_resumed_from")
        batch.drop_column("auto_resume")
        batch.drop_column("chain_root")
        batch.drop_column("resume_step")
        batch.drop_column("resumed_from")
