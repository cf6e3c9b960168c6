"""Pipelines: waiting jobs' dependencies and submit bodies, pipelines, the placement decision.

Revision ID: 0015_pipelines
Revises: 0014_checkpoints
"""
import sqlalchemy as sa
from alembic import op

revision = "0015_pipelines"
down_revision = "0014_checkpoints"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipelines",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=True),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_pipelines"),
    )
    op.create_index("ix_pipelines_owner_id", "pipelines", ["owner_id"])
    op.create_index("ix_pipelines_created_at", "pipelines", ["created_at"])
    op.create_table(
        "job_dependencies",
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("pipeline_id", sa.String(40), nullable=True),
        sa.Column("step", sa.String(200), nullable=True),
        sa.Column("depends_on", sa.JSON(), nullable=False),
        sa.Column("on", sa.String(16), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("hold", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("released_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_dependencies_job_id_jobs",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", name="pk_job_dependencies"),
    )
    op.create_index("ix_job_dependencies_pipeline_id", "job_dependencies", ["pipeline_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("placement", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("placement")
    op.drop_index("ix_job_dependencies_pipeline_id", table_name="job_dependencies")
    op.drop_table("job_dependencies")
    op.drop_index("ix_pipelines_created_at", table_name="pipelines")
    op.drop_index("ix_pipelines_owner_id", table_name="pipelines")
    op.drop_table("pipelines")
