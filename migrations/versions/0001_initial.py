"""Initial schema: jobs, events, logs, settings, providers, rates, limits, workers,
storage credentials, webhook deliveries.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cost_limits',
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('amount_usd', sa.Float(), nullable=False),
    sa.Column('period', sa.String(length=16), nullable=False),
    sa.Column('action', sa.String(length=8), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('stop_running', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('provider', name=op.f('pk_cost_limits'))
    )
    op.create_table('hardware_rates',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('hardware', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=100), nullable=True),
    sa.Column('gpu_count', sa.Integer(), nullable=False),
    sa.Column('vram_gb', sa.Float(), nullable=True),
    sa.Column('usd_per_second', sa.Float(), nullable=False),
    sa.Column('effective_from', sa.DateTime(), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hardware_rates'))
    )
    with op.batch_alter_table('hardware_rates', schema=None) as batch_op:
        batch_op.create_index('ix_hardware_rates_provider_hw', ['provider', 'hardware'], unique=False)

    op.create_table('jobs',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('provider_job_id', sa.String(length=128), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('dataloader_config', sa.JSON(), nullable=False),
    sa.Column('hardware', sa.String(length=64), nullable=True),
    sa.Column('gpu_count', sa.Integer(), nullable=False),
    sa.Column('rate_usd_per_second', sa.Float(), nullable=True),
    sa.Column('estimated_cost_usd', sa.Float(), nullable=True),
    sa.Column('estimate', sa.JSON(), nullable=True),
    sa.Column('cost_usd', sa.Float(), nullable=True),
    sa.Column('billed_seconds', sa.Float(), nullable=True),
    sa.Column('max_cost_usd', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('completed_at', sa.DateTime(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('progress', sa.JSON(), nullable=False),
    sa.Column('outputs', sa.JSON(), nullable=False),
    sa.Column('delivery', sa.JSON(), nullable=True),
    sa.Column('delivery_error', sa.Text(), nullable=True),
    sa.Column('snapshot', sa.String(length=64), nullable=True),
    sa.Column('snapshot_error', sa.Text(), nullable=True),
    sa.Column('config_name', sa.String(length=200), nullable=True),
    sa.Column('dataset_sha256', sa.String(length=64), nullable=True),
    sa.Column('data_summary', sa.JSON(), nullable=True),
    sa.Column('archive_path', sa.Text(), nullable=True),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('worker_id', sa.String(length=40), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('requirements', sa.JSON(), nullable=True),
    sa.Column('checkpoint', sa.JSON(), nullable=True),
    sa.Column('provider_data', sa.JSON(), nullable=True),
    sa.Column('log_size', sa.Integer(), nullable=False),
    sa.Column('log_seq', sa.Integer(), nullable=False),
    sa.Column('rerun_of', sa.String(length=40), nullable=True),
    sa.Column('next_poll_at', sa.DateTime(), nullable=True),
    sa.Column('poll_failures', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_completed_at'), ['completed_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_config_name'), ['config_name'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_idempotency_key'), ['idempotency_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_provider'), ['provider'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_provider_job_id'), ['provider_job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_worker_id'), ['worker_id'], unique=False)

    op.create_table('provider_configs',
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('provider', name=op.f('pk_provider_configs'))
    )
    op.create_table('settings',
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('value', sa.JSON(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_settings'))
    )
    op.create_table('storage_credentials',
    sa.Column('access_key_id', sa.String(length=40), nullable=False),
    sa.Column('secret_enc', sa.Text(), nullable=False),
    sa.Column('bucket', sa.String(length=100), nullable=False),
    sa.Column('prefix', sa.String(length=500), nullable=False),
    sa.Column('read_only', sa.Boolean(), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=True),
    sa.Column('description', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=True),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('access_key_id', name=op.f('pk_storage_credentials'))
    )
    with op.batch_alter_table('storage_credentials', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_storage_credentials_job_id'), ['job_id'], unique=False)

    op.create_table('webhook_deliveries',
    sa.Column('webhook_id', sa.String(length=200), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=True),
    sa.Column('prediction_id', sa.String(length=128), nullable=True),
    sa.Column('event_status', sa.String(length=32), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('source_ip', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('webhook_id', name=op.f('pk_webhook_deliveries'))
    )
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_deliveries_received_at'), ['received_at'], unique=False)

    op.create_table('workers',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('token_hash', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('draining', sa.Boolean(), nullable=False),
    sa.Column('gpu_info', sa.JSON(), nullable=True),
    sa.Column('gpu_count', sa.Integer(), nullable=False),
    sa.Column('vram_gb', sa.Float(), nullable=False),
    sa.Column('hostname', sa.String(length=200), nullable=True),
    sa.Column('agent_version', sa.String(length=40), nullable=True),
    sa.Column('current_job_id', sa.String(length=40), nullable=True),
    sa.Column('is_local', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('registered_at', sa.DateTime(), nullable=True),
    sa.Column('last_heartbeat_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workers'))
    )
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_workers_token_hash'), ['token_hash'], unique=False)

    op.create_table('idempotency_keys',
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_idempotency_keys_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_idempotency_keys'))
    )
    op.create_table('job_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('from_status', sa.String(length=16), nullable=True),
    sa.Column('to_status', sa.String(length=16), nullable=False),
    sa.Column('accepted', sa.Boolean(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_events_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_events'))
    )
    with op.batch_alter_table('job_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_events_job_id'), ['job_id'], unique=False)

    op.create_table('job_log_chunks',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('offset', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_log_chunks_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_log_chunks'))
    )
    with op.batch_alter_table('job_log_chunks', schema=None) as batch_op:
        batch_op.create_index('ix_job_log_chunks_job_offset', ['job_id', 'offset'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('job_log_chunks', schema=None) as batch_op:
        batch_op.drop_index('ix_job_log_chunks_job_offset')

    op.drop_table('job_log_chunks')
    with op.batch_alter_table('job_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_events_job_id'))

    op.drop_table('job_events')
    op.drop_table('idempotency_keys')
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_workers_token_hash'))

    op.drop_table('workers')
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_deliveries_received_at'))

    op.drop_table('webhook_deliveries')
    with op.batch_alter_table('storage_credentials', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_storage_credentials_job_id'))

    op.drop_table('storage_credentials')
    op.drop_table('settings')
    op.drop_table('provider_configs')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_worker_id'))
        batch_op.drop_index(batch_op.f('ix_jobs_status'))
        batch_op.drop_index(batch_op.f('ix_jobs_provider_job_id'))
        batch_op.drop_index(batch_op.f('ix_jobs_provider'))
        batch_op.drop_index(batch_op.f('ix_jobs_idempotency_key'))
        batch_op.drop_index(batch_op.f('ix_jobs_created_at'))
        batch_op.drop_index(batch_op.f('ix_jobs_config_name'))
        batch_op.drop_index(batch_op.f('ix_jobs_completed_at'))

    op.drop_table('jobs')
    with op.batch_alter_table('hardware_rates', schema=None) as batch_op:
        batch_op.drop_index('ix_hardware_rates_provider_hw')

    op.drop_table('hardware_rates')
    op.drop_table('cost_limits')
