"""Providers, Slurm, storage credentials, notifications and config snapshots: settings bodies."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel

from stcloud.api.types import MAX_GPUS, Int, Num, Str, blank_none


class ProviderSettingsBody(BaseModel):
    """``PUT /api/cloud/providers/<name>``: the provider's declared settings
    (``GET /api/cloud/providers/<name>`` lists them with their types); members not sent keep
    their value. Each provider checks its own members."""

    model_config = ConfigDict(extra="allow")


class TokenBody(BaseModel):
    token: Annotated[Str(500) | None, BeforeValidator(blank_none)] = Field(
        None, json_schema_extra={"writeOnly": True})


class SlurmSettingsBody(BaseModel):
    """``PUT /api/cloud/providers/slurm`` (SPEC §13); members not sent keep their value."""

    model_config = ConfigDict(extra="allow")
    transport: Annotated[Str(8) | None, BeforeValidator(blank_none)] = Field(None, description="cli | rest")
    partition: Str(128) | None = None
    account: Str(128) | None = None
    qos: Str(128) | None = None
    time_limit: Annotated[Int(1, 366 * 24 * 60) | None, BeforeValidator(blank_none)] = Field(
        None, description="minutes")
    gpus_per_job: Annotated[Int(0, MAX_GPUS) | None, BeforeValidator(blank_none)] = None
    cpus_per_job: Annotated[Int(1, 4096) | None, BeforeValidator(blank_none)] = None
    mem_per_job_mb: Annotated[Int(1, 64 * 1024 * 1024) | None, BeforeValidator(blank_none)] = None
    extra_sbatch: list[Str(1000)] | Str(20_000) | None = None
    trainer_command: Str(4096) | None = None
    server_url: Str(2048) | None = None
    agent_python: Str(4096) | None = None
    output_dir: Str(4096) | None = None
    rest_url: Str(2048) | None = None
    rest_user: Str(64) | None = None
    rest_token: Str(8192) | None = Field(None, json_schema_extra={"writeOnly": True})
    gpu_hour_usd: Annotated[Num(0, 10_000) | None, BeforeValidator(blank_none)] = None


class MintBody(BaseModel):
    """``POST /api/cloud/storage/credentials``: a scoped key for the S3 endpoint."""

    bucket: Str(63) | None = Field(None, description='a bucket name, or "*" for any bucket')
    prefix: Str(500) | None = None
    ttl_seconds: Int(60, 366 * 24 * 3600) | None = None
    job_id: Str(64) | None = None
    read_only: bool = False
    description: Str(200) | None = None


class NotificationsBody(BaseModel):
    """``PUT /api/cloud/settings/notifications``: ``events`` and one object per channel
    (``slack``, ``discord``, ``webhook``, ``email``...); members not sent keep their value."""

    model_config = ConfigDict(extra="allow")
    events: list[Str(64)] | None = Field(None, max_length=100)


class ConfigsSettingsBody(BaseModel):
    enabled: bool = Field(description="keep a git history of every submitted config")


class HistoryQuery(BaseModel):
    limit: Int(1, 1000) | None = None


class DeliveriesQuery(BaseModel):
    limit: Int(1, 200) | None = None


class ForceQuery(BaseModel):
    force: Str(8) | None = Field(None, description="true: remove it even while it runs a job")


# ---- answers --------------------------------------------------------------------------------

class HardwareProfile(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    label: str | None = None
    usd_per_hour: float | None = None
    vram_gb: float | None = None


class ProviderView(BaseModel):
    """A provider's capabilities (``GET /api/cloud/providers``): what it supports, its hardware,
    its declared settings (and their ``values`` for a provider that has some)."""

    model_config = ConfigDict(extra="allow")
    name: str
    label: str
    description: str | None
    status: str
    supports_cost_tracking: bool
    supports_live_logs: bool
    uploads_data: bool
    max_upload_bytes: int | None
    supports_webhooks: bool
    supports_cancel: bool
    supports_checkpoint_on_cancel: bool
    runs_own_agent: bool
    worker_pool: str | None = Field(description="the pool of workers that runs its jobs (null: none)")
    accepts_requirements: bool
    poll_interval_seconds: dict[str, float | None] = Field(description="per status (null: not polled)")
    hardware_profiles: list[HardwareProfile]
    default_hardware: str | None
    settings: list[dict[str, Any]] = Field(description="the declared settings: [{name, kind, label, ...}]")
    configured: bool
    note: str | None
    values: dict[str, Any] | None = Field(None, description="the declared settings' values (secrets as *_set)")


class ProviderList(BaseModel):
    providers: list[ProviderView]


class ProviderDetail(ProviderView):
    """``GET|PUT /api/cloud/providers/<name>`` of a provider other than Replicate and Slurm."""

    provider: str


class ReplicateSettings(BaseModel):
    """``GET|PUT /api/cloud/providers/replicate``: the stored settings (no secret), the webhook
    endpoint, the token's source and the hardware profiles with their rates."""

    model_config = ConfigDict(extra="allow")
    provider: Literal["replicate"]
    webhook_url: str | None
    webhook_endpoint: str | None
    public_url_help: str
    token_set: bool
    token_source: str | None = Field(description='"env" | "stored" | null')
    hardware_profiles: list[dict[str, Any]] = Field(
        description="[{name, label, vram_gb, usd_per_second, usd_per_hour, default}]")


class TokenView(BaseModel):
    """``PUT|DELETE /api/cloud/providers/replicate/token`` (the token itself is never shown)."""

    token_set: bool
    token_source: str | None
    note: str | None = None


class SlurmSettings(BaseModel):
    """``GET|PUT /api/cloud/providers/slurm``, ``DELETE .../slurm/token`` (SPEC §13): the stored
    settings (the token only as ``rest_token_set``) and the instance defaults that apply."""

    transport: Literal["cli", "rest"]
    partition: str | None
    account: str | None
    qos: str | None
    time_limit: int | None = Field(description="minutes (null: the partition's)")
    gpus_per_job: int | None
    cpus_per_job: int | None
    mem_per_job_mb: int | None
    extra_sbatch: list[str]
    trainer_command: str | None
    server_url: str | None
    agent_python: str | None
    output_dir: str | None
    rest_url: str | None
    rest_user: str | None
    gpu_hour_usd: float | None
    rest_token_set: bool
    defaults: dict[str, str | None] = Field(description="the instance defaults of the settings left empty")


class ProviderSettings(RootModel[ReplicateSettings | SlurmSettings | ProviderDetail]):
    """A provider's settings: Replicate's and Slurm's own views (their routes answer for those
    names), or the generic one of a provider with declared settings."""


class SlurmCheck(BaseModel):
    """``GET /api/cloud/providers/slurm/validate``: the cluster answered (``ping``, ``version``)
    or ``error`` says why not."""

    model_config = ConfigDict(extra="allow")
    valid: bool
    error: str | None = None
    transport: Literal["cli", "rest"] | None = None
    ping: Any = Field(None, description="scontrol ping's text (cli) or slurmrestd's pings (rest)")
    version: str | None = None


class CredentialView(BaseModel):
    """A key of the S3 endpoint (never its secret)."""

    access_key_id: str
    bucket: str
    prefix: str
    read_only: bool
    job_id: str | None
    description: str | None
    created_at: str | None
    expires_at: str | None
    revoked_at: str | None
    state: str = Field(description="active | expired | revoked")
    owner_id: str | None = Field(None, description="the user who minted it (a job's key: the job's owner); "
                                                   "null: the bootstrap admin token, auth off or background code")


class MintedKey(CredentialView):
    """``POST /api/cloud/storage/credentials``: the new key with its secret (shown once)."""

    secret_access_key: str
    endpoint_url: str
    region: str


class CredentialList(BaseModel):
    credentials: list[CredentialView]


class RevokedKey(BaseModel):
    credential: CredentialView


class Channel(BaseModel):
    model_config = ConfigDict(extra="allow")
    enabled: bool


class NotificationSettings(BaseModel):
    """``GET|PUT /api/cloud/settings/notifications``: events and channels (secrets as ``*_set``;
    a PUT that creates the webhook's signing secret answers it once as ``webhook_secret``)."""

    events: list[str]
    all_events: list[str]
    slack: Channel
    discord: Channel
    webhook: Channel
    email: Channel
    webhook_secret: str | None = None


class NotificationDelivery(BaseModel):
    id: int | str
    event: str
    channel: str
    job_id: str | None
    status: str
    attempts: int
    last_error: str | None
    recipient: str | None
    created_at: str
    sent_at: str | None


class DeliveryLog(BaseModel):
    """``GET /api/cloud/notifications``: the notification delivery log, newest first."""

    deliveries: list[NotificationDelivery]


class ConfigsSettings(BaseModel):
    enabled: bool


class SnapshotCommit(BaseModel):
    commit: str
    short: str
    at: str
    job_id: str | None
    name: str | None
    message: str | None


class ConfigHistory(BaseModel):
    """``GET /api/cloud/configs/<name>/history``."""

    name: str
    history: list[SnapshotCommit]


class ConfigSummary(BaseModel):
    name: str
    snapshots: int
    last_commit: str
    last_at: str
    last_job_id: str | None
    last_message: str | None
    same_as: list[str] = Field(description="the other configs whose latest snapshot is byte-identical")


class ConfigsState(BaseModel):
    """``GET /api/cloud/configs``: the repository's state and the saved configs."""

    enabled: bool
    git: str | None = Field(description="git's version (null: git is not installed)")
    path: str
    error: str | None
    configs: list[ConfigSummary]


class PreviousSnapshot(BaseModel):
    job_id: str | None
    commit: str
    at: str


class ConfigVersion(BaseModel):
    """``GET /api/cloud/configs/<name>/at/<commit>``: the files of a config at a commit."""

    name: str
    commit: str
    files: dict[str, str | None]
    previous: PreviousSnapshot | None
    diff: str | None
    config: Any
    dataloader_config: Any
    config_blob: str | None
    job_id: str | None
    at: str | None
    message: str | None


class JobSnapshot(BaseModel):
    """``GET /api/cloud/jobs/<id>/snapshot``: ``commit``/``files``/``diff`` are null when the job
    has no snapshot (``snapshot_error``) or the repository cannot be read (``error``)."""

    job_id: str
    config_name: str | None
    commit: str | None
    snapshot_error: str | None
    files: dict[str, str | None] | None
    config_blob: str | None
    diff: str | None
    previous: PreviousSnapshot | None
    error: str | None


class ReplicateCheck(BaseModel):
    """``GET /api/cloud/providers/replicate/validate``: the token works (``account``) or not (``error``)."""

    valid: bool
    account: dict[str, Any] | None = Field(None, description="{type, username, name, github_url}")
    error: str | None = None
    token_source: str | None


class ReplicateVersion(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None
    created_at: str | None
    cog_version: str | None
    newest: bool
    pinned: bool


class ReplicateVersions(BaseModel):
    """``GET /api/cloud/providers/replicate/versions``."""

    model: str | None
    pinned: str | None
    newest: str | None
    in_use: str | None
    versions: list[ReplicateVersion]


class ReplicateBilling(BaseModel):
    """``GET /api/cloud/providers/replicate/billing``: stcloud's own spend records (Replicate has
    no balance API: ``balance`` is null)."""

    provider: Literal["replicate"]
    balance: None
    currency: str
    note: str
    billing_url: str
    spend: dict[str, float] = Field(description="today_usd, last_7_days_usd, last_30_days_usd, all_time_usd")
    active: dict[str, float | int] = Field(description="{jobs, estimated_usd}")
    as_of: str


class ReplicateStatus(BaseModel):
    """``GET /api/cloud/providers/replicate/status``: Replicate's status page, when reachable."""

    available: bool
    indicator: str | None = None
    description: str | None = None
    url: str
    error: str | None = None
