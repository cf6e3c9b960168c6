"""Approvals, resume / continue, recovery settings, notification preferences, config
validation and pipelines: request bodies. Each service still gives its own messages for what a
schema cannot know (provider names, events a role may choose, dependency graphs)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from stcloud.api.schemas.jobs import JobView
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


# ---- answers --------------------------------------------------------------------------------

class ApprovalSettings(BaseModel):
    """``GET|PUT /api/cloud/settings/approval``."""

    threshold_usd: float | None = Field(description="null: no approvals")


class RecoverySettings(BaseModel):
    """``GET|PUT /api/cloud/settings/recovery``."""

    orphan_policy: Literal["adopt", "cancel"]
    keep_uploads: bool
    orphan_policies: dict[str, str] = Field(description="policy -> what it does")
    reconcile_seconds: int = Field(description="how often the reconciler runs")


class ConfigError(BaseModel):
    field: str | None = Field(description="the config key (null: the config as a whole)")
    message: str


class ConfigCheck(BaseModel):
    """``POST /api/cloud/config/validate``."""

    valid: bool
    errors: list[ConfigError]


class ConfigField(BaseModel):
    """One field of the config form."""

    name: str
    label: str
    help: str
    group: str
    kind: Literal["number", "select", "text"]
    integer: bool
    choices: list[Any]
    min: float | None
    max: float | None
    step: float | str = Field(description='a number, or "any"')
    applies: Any = Field(description="the model families the field applies to (null: all)")


class ConfigForm(BaseModel):
    """``GET /api/cloud/config/fields``: the form's fields, presets per model family, and the
    JSON schema of the checked fields."""

    fields: list[ConfigField]
    presets: dict[str, dict[str, Any]]
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")


class ResumePlan(BaseModel):
    """What a resume (or continue) does: where, from which step, what is left and its cost."""

    job_id: str
    status: str
    provider: str = Field(description="where the new attempt runs")
    from_provider: str
    hardware: str | None
    step: int
    total_steps: int | None
    remaining_steps: int | None
    estimated_cost_usd: float = Field(description="of the remaining steps on provider")
    estimate_basis: str | None
    chain_cost_usd: float = Field(description="what the attempts so far cost")
    attempt: int = Field(description="the number the new attempt gets in the chain")
    checkpoints: list[int]
    total_cost_usd_if_estimate_holds: float


class PlanAnswer(BaseModel):
    """``GET /api/cloud/jobs/<id>/resume``."""

    plan: ResumePlan


class Resumed(BaseModel):
    """``POST .../resume`` and ``POST .../checkpoints/<step>/continue``: the new job and its plan."""

    job: JobView
    plan: ResumePlan
    idempotent: bool
    warnings: list[Any]


class Attempt(BaseModel):
    attempt: int
    job_id: str
    name: str | None
    provider: str
    hardware: str | None
    status: str
    resumed_from: str | None
    resume_step: int | None
    cost_usd: float | None
    estimated_cost_usd: float | None
    step: int | None
    total_steps: int | None
    error: str | None = Field(description="the first line of the attempt's error")
    auto_resume: dict[str, Any] | None


class Chain(BaseModel):
    """``GET /api/cloud/jobs/<id>/chain``: the attempts across providers."""

    root: str
    total_cost_usd: float
    attempts: list[Attempt]


class CheckpointFile(BaseModel):
    name: str
    size: int
    download_url: str


class Sample(BaseModel):
    name: str
    size: int
    source: str = Field(description="checkpoint | validation")
    url: str


class Checkpoint(BaseModel):
    step: int
    prefix: str | None
    size: int
    downloadable: bool
    download_url: str | None
    files: list[CheckpointFile]
    samples: list[Sample]


class Checkpoints(BaseModel):
    """``GET /api/cloud/jobs/<id>/checkpoints``."""

    job_id: str
    checkpoints: list[Checkpoint]


class NotificationPrefs(BaseModel):
    """``GET|PUT /api/cloud/me/notifications``."""

    email: str | None
    account_email: str | None
    events: list[str]
    available_events: list[dict[str, str]] = Field(description="[{event, label}]")
    smtp_configured: bool


class PipelineStep(BaseModel):
    step: str | None
    job_id: str
    name: str | None
    status: str
    provider: str
    depends_on: list[str]
    depends_on_steps: list[str | None]
    on: str | None
    inputs: dict[str, Any]
    reason: str | None = Field(description="why it waits (waiting steps only)")
    error: str | None


class Pipeline(BaseModel):
    id: str
    name: str | None
    status: str
    created_at: str
    cancelled_at: str | None
    steps: list[PipelineStep]


class PipelineAnswer(BaseModel):
    """``POST /api/cloud/pipelines``, ``GET .../<id>``, ``POST .../<id>/cancel``."""

    pipeline: Pipeline


class PipelineList(BaseModel):
    pipelines: list[Pipeline]
