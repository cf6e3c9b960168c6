"""Providers, Slurm, storage credentials, notifications and config snapshots: settings bodies."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

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
