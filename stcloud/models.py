"""All tables (SQLAlchemy 2.0, ``Mapped[]`` style). Migrations live in ``migrations/``.

JSON columns are replaced, never mutated in place (no mutation tracking): assign a new
dict/list so the change is flushed.
"""
from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from ulid import ULID

from stcloud import timeutil

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return timeutil.now()  # the real time unless a test moved the clock


def new_id(prefix: str) -> str:
    return f"{prefix}_{str(ULID()).lower()}"


class UTCDateTime(TypeDecorator):
    """Stores naive UTC, returns aware UTC (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job"))
    name: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(32), index=True)
    provider_job_id: Mapped[str | None] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="pending")
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    dataloader_config: Mapped[list] = mapped_column(JSON, default=list)
    hardware: Mapped[str | None] = mapped_column(String(64))
    gpu_count: Mapped[int] = mapped_column(Integer, default=1)
    rate_usd_per_second: Mapped[float | None] = mapped_column(Float)
    estimated_cost_usd: Mapped[float | None] = mapped_column(Float)
    estimate: Mapped[dict | None] = mapped_column(JSON)  # basis, p50, p90, seconds
    cost_usd: Mapped[float | None] = mapped_column(Float)
    billed_seconds: Mapped[float | None] = mapped_column(Float)
    max_cost_usd: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[dict] = mapped_column(JSON, default=dict)  # step,total_steps,loss,best_loss,stage,resumes
    outputs: Mapped[list] = mapped_column(JSON, default=list)
    delivery: Mapped[dict | None] = mapped_column(JSON)  # destination settings (no secrets)
    delivery_error: Mapped[str | None] = mapped_column(Text)
    snapshot: Mapped[str | None] = mapped_column(String(64))
    snapshot_error: Mapped[str | None] = mapped_column(Text)
    config_name: Mapped[str | None] = mapped_column(String(200), index=True)
    dataset_sha256: Mapped[str | None] = mapped_column(String(64))
    data_summary: Mapped[dict | None] = mapped_column(JSON)
    archive_path: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), index=True)
    worker_id: Mapped[str | None] = mapped_column(String(40), index=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    requirements: Mapped[dict | None] = mapped_column(JSON)  # labels globs, min_gpus, min_vram_gb
    checkpoint: Mapped[dict | None] = mapped_column(JSON)  # last uploaded checkpoint {key, step}
    provider_data: Mapped[dict | None] = mapped_column(JSON)  # provider-specific ids/urls
    log_size: Mapped[int] = mapped_column(Integer, default=0)  # bytes of log stored
    log_seq: Mapped[int] = mapped_column(Integer, default=0)  # last worker log batch accepted
    rerun_of: Mapped[str | None] = mapped_column(String(40))
    next_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    poll_failures: Mapped[int] = mapped_column(Integer, default=0)
    # resume anywhere (jobs/resume.py): the job this one started from (at ``resume_step``),
    # the first job of the chain (every attempt across providers), and ``{max_attempts, provider?}``
    resumed_from: Mapped[str | None] = mapped_column(String(40), index=True)
    resume_step: Mapped[int | None] = mapped_column(Integer)
    chain_root: Mapped[str | None] = mapped_column(String(40), index=True)
    auto_resume: Mapped[dict | None] = mapped_column(JSON)

    events: Mapped[list[JobEvent]] = relationship(
        back_populates="job", cascade="all, delete-orphan", passive_deletes=True,
        order_by="JobEvent.id",
    )


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(32))  # api, webhook, poller, worker, scheduler, submit
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    accepted: Mapped[bool] = mapped_column(Boolean, default=True)
    detail: Mapped[str | None] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="events")


class JobLogChunk(Base):
    """Logs stored incrementally: each append is a chunk starting at byte ``offset``."""

    __tablename__ = "job_log_chunks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    offset: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (Index("ix_job_log_chunks_job_offset", "job_id", "offset", unique=True),)


class JobCount(Base):
    """How many jobs each ``(owner_key, provider, status)`` group holds (``owner_key`` is the
    owner's id or ``''``). Written only by the triggers of migration 0017 on ``jobs`` (and by
    ``jobs.counts.fold``); read through ``jobs.counts``."""

    __tablename__ = "job_counts"

    owner_key: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class JobCountDelta(Base):
    """PostgreSQL's triggers append a ``+1``/``-1`` per job written (no lock on a shared
    counter row); ``jobs.counts.fold`` moves them into ``job_counts``. Empty on SQLite."""

    __tablename__ = "job_count_deltas"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
                                    autoincrement=True)
    owner_key: Mapped[str] = mapped_column(String(40))
    provider: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    d: Mapped[int] = mapped_column(Integer)


class JobLossPoint(Base):
    """The loss history of a job, one ``(step, loss)`` point per row, at most
    ``loss_points.MAX_POINTS`` per job (older ones thinned): appended as log lines arrive
    instead of rewriting the whole history in the job row."""

    __tablename__ = "job_loss_points"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    loss: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_job_loss_points_job_id", "job_id", "id"),)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Setting(Base):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[dict | list | str | int | float | bool | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ProviderConfig(Base):
    __tablename__ = "provider_configs"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class HardwareRate(Base):
    """Dated $/s per hardware profile per provider; the newest ``effective_from`` <= now wins."""

    __tablename__ = "hardware_rates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    hardware: Mapped[str] = mapped_column(String(64))
    label: Mapped[str | None] = mapped_column(String(100))
    gpu_count: Mapped[int] = mapped_column(Integer, default=1)
    vram_gb: Mapped[float | None] = mapped_column(Float)
    usd_per_second: Mapped[float] = mapped_column(Float)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_hardware_rates_provider_hw", "provider", "hardware"),)


class CostLimit(Base):
    __tablename__ = "cost_limits"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)  # or "all"
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    amount_usd: Mapped[float] = mapped_column(Float, default=0.0)
    period: Mapped[str] = mapped_column(String(16), default="monthly")
    action: Mapped[str] = mapped_column(String(8), default="warn")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    stop_running: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Worker(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("wrk"))
    name: Mapped[str] = mapped_column(String(200))
    labels: Mapped[dict] = mapped_column(JSON, default=dict)
    token_hash: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16), default="offline")  # idle busy draining offline
    draining: Mapped[bool] = mapped_column(Boolean, default=False)
    gpu_info: Mapped[list | dict | None] = mapped_column(JSON)
    gpu_count: Mapped[int] = mapped_column(Integer, default=0)
    vram_gb: Mapped[float] = mapped_column(Float, default=0.0)
    hostname: Mapped[str | None] = mapped_column(String(200))
    agent_version: Mapped[str | None] = mapped_column(String(40))
    current_job_id: Mapped[str | None] = mapped_column(String(40))
    is_local: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    registered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class StorageCredential(Base):
    __tablename__ = "storage_credentials"

    access_key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    secret_enc: Mapped[str] = mapped_column(Text)  # encrypted at rest with the instance key
    bucket: Mapped[str] = mapped_column(String(100))  # "*" = any bucket
    prefix: Mapped[str] = mapped_column(String(500), default="")
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    job_id: Mapped[str | None] = mapped_column(String(40), index=True)
    description: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    webhook_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), default="replicate")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    job_id: Mapped[str | None] = mapped_column(String(40))
    prediction_id: Mapped[str | None] = mapped_column(String(128))
    event_status: Mapped[str | None] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(32))  # applied, ignored, duplicate, test
    detail: Mapped[str | None] = mapped_column(Text)
    source_ip: Mapped[str | None] = mapped_column(String(64))


# ---- accounts (stcloud/accounts) --------------------------------------------------------
# Jobs, storage credentials and workers carry a nullable ``owner_id`` (a users.id, no FK:
# records outlive the account that made them; NULL = made before accounts or by the system).

Job.owner_id = mapped_column(String(40), index=True, nullable=True)
StorageCredential.owner_id = mapped_column(String(40), index=True, nullable=True)
Worker.owner_id = mapped_column(String(40), index=True, nullable=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("usr"))
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16), default="member")  # admin member viewer
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    password_hash: Mapped[str | None] = mapped_column(Text)  # argon2; None = no password sign-in
    source: Mapped[str] = mapped_column(String(16), default="local")  # local, ldap, oidc
    session_version: Mapped[int] = mapped_column(Integer, default=1)  # bump = sign out everywhere
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # per-user limits (stcloud/costs/user_limits.py); None = no limit
    max_concurrent_jobs: Mapped[int | None] = mapped_column(Integer)
    spend_limit_usd: Mapped[float | None] = mapped_column(Float)
    spend_period: Mapped[str] = mapped_column(String(16), default="monthly")
    spend_action: Mapped[str] = mapped_column(String(8), default="block")
    # jobs estimated above this wait for an admin (stcloud/jobs/approval.py); None = the instance setting
    approval_threshold_usd: Mapped[float | None] = mapped_column(Float)
    # which notifications this user receives by e-mail (stcloud/notify/prefs.py); None = none yet
    notify_prefs: Mapped[dict | None] = mapped_column(JSON)


class ApiKey(Base):
    """A user's API key (``stc_…``): only its SHA-256 is stored (the key has 256 random bits)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))  # first characters, to recognise it in lists
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LoginLink(Base):
    """A one-time sign-in link (``make run`` prints one): single use, short expiry."""

    __tablename__ = "login_links"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditRecord(Base):
    """Append-only, hash-chained: ``hash`` covers every field and ``prev_hash``."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(200), index=True)  # username, system, webhook, worker:<name>
    key_id: Mapped[str | None] = mapped_column(String(40))  # the API key used, if any
    action: Mapped[str] = mapped_column(String(100), index=True)
    target: Mapped[str | None] = mapped_column(String(500))
    client_addr: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))  # ok, denied, failed
    detail: Mapped[str | None] = mapped_column(Text)  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Notification(Base):
    """One notification for one channel: the outbox (written in the transaction of the event
    that caused it) and the delivery log (status, attempts, last error) in one row."""
    __tablename__ = "notifications"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ntf"))
    event: Mapped[str] = mapped_column(String(40))  # job.completed, spend.warn, ...
    channel: Mapped[str] = mapped_column(String(16))  # slack, discord, email, webhook
    job_id: Mapped[str | None] = mapped_column(String(40), index=True)
    payload: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending, sent, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    recipient: Mapped[str | None] = mapped_column(String(320))  # one user's e-mail (per-user preferences)

    __table_args__ = (Index("ix_notifications_due", "status", "next_attempt_at"),)


class UploadCleanup(Base):
    """Data a job uploaded to its provider, to delete there once the job has ended: queued by
    ``jobs.service.transition`` when a job with a packaged dataset ends (``reason`` ended) or
    by the reconciler for a submit that never got its remote job (``orphan``); worked off by
    ``jobs.reconcile`` (``done_at`` set when deleted, kept per ``keep_uploads`` or given up)."""
    __tablename__ = "upload_cleanups"

    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(16), default="ended")  # ended | orphan
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str | None] = mapped_column(Text)  # what was done, for people
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_upload_cleanups_due", "done_at", "due_at"),)

# ---- pipelines and placement (stcloud/pipelines, stcloud/jobs/placement.py) -----------------
# A job that waits (``depends_on``, a budget hold) has one ``job_dependencies`` row: what it
# waits for and the submit body it runs when released. Pipelines group such jobs by step name.

class Pipeline(Base):
    __tablename__ = "pipelines"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("pip"))
    name: Mapped[str] = mapped_column(String(200))
    owner_id: Mapped[str | None] = mapped_column(String(40), index=True)
    document: Mapped[dict] = mapped_column(JSON, default=dict)  # as submitted
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JobDependency(Base):
    __tablename__ = "job_dependencies"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    pipeline_id: Mapped[str | None] = mapped_column(String(40), index=True)
    step: Mapped[str | None] = mapped_column(String(200))  # the step name in its pipeline
    depends_on: Mapped[list] = mapped_column(JSON, default=list)  # job ids
    on: Mapped[str] = mapped_column(String(16), default="completed")  # completed | any
    inputs: Mapped[dict] = mapped_column(JSON, default=dict)  # {"init_lora_weights": {"from": job id}}
    body: Mapped[dict] = mapped_column(JSON, default=dict)  # the submit body run on release
    hold: Mapped[bool] = mapped_column(Boolean, default=False)  # wait for the budget instead of 402
    reason: Mapped[str | None] = mapped_column(Text)  # why it waits (shown on the job page)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


Job.placement = mapped_column(JSON, nullable=True)  # provider "auto": {provider, reason, candidates}
