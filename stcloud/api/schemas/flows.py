"""Approvals, resume / continue, recovery settings, notification preferences, config
validation and pipelines: request bodies. Each service still gives its own messages for what a
schema cannot know (provider names, events a role may choose, dependency graphs)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from stcloud.api.types import MAX_USD, Int, Num, Str, blank_none


class RejectBody(BaseModel):
    """``POST /api/cloud/jobs/<id>/reject``."""

    model_config = ConfigDict(extra="forbid")
    reason: Str(500) | None = Field(None, description="shown on the job and in the audit log")


class ApprovalSettingsBody(BaseModel):
    """``PUT /api/cloud/settings/approval``: jobs whose p90 estimate is above the threshold wait
    for an admin (null: no approvals)."""

    model_config = ConfigDict(extra="forbid")
    threshold_usd: Num(0, MAX_USD) | None = Field(None, description="US dollars, 0..1,000,000, or null (required)")


class ResumeBody(BaseModel):
    """``POST /api/cloud/jobs/<id>/resume``: a new attempt from a checkpoint."""

    model_config = ConfigDict(extra="forbid")
    provider: Annotated[Str(64) | None, BeforeValidator(blank_none)] = Field(
        None, description="where to resume (default: the job's provider)")
    checkpoint: Annotated[Int(0, 100_000_000) | None, BeforeValidator(blank_none)] = Field(
        None, description="the step of a stored checkpoint (default: the newest)")
    data_consent: bool | None = None


class ContinueBody(BaseModel):
    """``POST /api/cloud/jobs/<id>/checkpoints/<step>/continue``."""

    model_config = ConfigDict(extra="forbid")
    provider: Annotated[Str(64) | None, BeforeValidator(blank_none)] = None
    data_consent: bool | None = None


class RecoveryBody(BaseModel):
    """``PUT /api/cloud/settings/recovery``: what the reconciler does with a remote job found
    for an interrupted submit, and whether uploaded datasets stay with the provider."""

    model_config = ConfigDict(extra="forbid")
    orphan_policy: Literal["adopt", "cancel"] | None = None
    keep_uploads: StrictBool | None = None


class NotificationPrefsBody(BaseModel):
    """``PUT /api/cloud/me/notifications`` (partial). A GET answer may be sent back as is."""

    model_config = ConfigDict(extra="allow")
    events: list[Str(64)] | None = Field(None, max_length=50)
    email: Str(320) | None = None


class ConfigValidateBody(BaseModel):
    """``POST /api/cloud/config/validate``: ``{"config": {...}}`` (or the config itself)."""

    model_config = ConfigDict(extra="allow")


class PipelineBody(BaseModel):
    """``POST /api/cloud/pipelines`` (JSON, or the same document as YAML): named steps that
    depend on each other; each step is a submit body (``docs/pipelines.md``)."""

    model_config = ConfigDict(extra="allow")
    name: Str(200) | None = None
    defaults: dict | None = None
    steps: list[dict] | dict[Str(100), dict | None] = Field(
        min_length=1, max_length=100,
        description="[{name, depends_on?, on?: completed|any, inputs?, ...submit body}] or {name: body}")
