"""Workers: the admin API (``/api/cloud/workers``) and the worker API (``/api/workers``)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from stcloud.api.types import MAX_GPUS, MAX_STEPS, MAX_VRAM_GB, Int, Num, Str, blank_none


def _label_text(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


Labels = dict[Str(64, 1), Annotated[Str(256), BeforeValidator(_label_text)]]


class WorkerSettingsBody(BaseModel):
    timeout_seconds: Annotated[Int(1, 86400) | None, BeforeValidator(blank_none)] = Field(
        description="seconds without a heartbeat before a worker is lost (null: the default)")


class WorkerSettingsView(BaseModel):
    timeout_seconds: int
    override: int | None = None


class WorkerCreateBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: Str(100) | None = None
    labels: Labels | None = Field(None, max_length=50)


class Gpu(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: Str(200) | None = None
    memory_gb: Annotated[Num(0, MAX_VRAM_GB) | None, BeforeValidator(blank_none)] = None


class RegisterBody(BaseModel):
    """What an agent tells the server when it (re)starts (all optional)."""

    model_config = ConfigDict(extra="allow")
    name: Str(100) | None = None
    hostname: Str(255) | None = None
    agent_version: Str(100) | None = None
    labels: Labels | None = Field(None, max_length=50)
    gpus: list[Gpu] | None = Field(None, max_length=MAX_GPUS)
    current_job_id: Str(64) | None = None


class HeartbeatBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    job_id: Str(64) | None = None


class Progress(BaseModel):
    model_config = ConfigDict(extra="allow")
    step: Int(0, MAX_STEPS * 10) | None = None
    total_steps: Int(0, MAX_STEPS * 10) | None = None
    loss: Num() | None = None
    stage: Str(100) | None = None


class ProgressBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    progress: Progress | None = None


class LogsBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    seq: Int(0, 2**53) | None = None
    lines: list[Str(1_000_000)] | Str(10_000_000) | None = Field(None, description="lines, or one text")


class ReleaseBody(BaseModel):
    reason: Str(2000) | None = None


class TimeoutView(BaseModel):
    timeout_seconds: int



class CheckpointBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    key: Str(1024, 1) = Field(description="the checkpoint's object prefix, under <job_id>/")
    step: Int(0, MAX_STEPS * 10)
    files: list[Str(1024)] = Field(default_factory=list, max_length=100_000)
    bucket: Str(255) | None = None


class CompleteBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["completed", "failed", "cancelled"]
    exit_code: Int(-(2**31), 2**31) | None = None
    last_lines: list[Str(100_000)] | None = Field(None, max_length=10_000)
    outputs: list[dict[str, Any]] | None = Field(None, max_length=100_000)
    error: Str(10_000) | None = None


# ---- answers --------------------------------------------------------------------------------

class WorkerView(BaseModel):
    """A worker as the admin API shows it."""

    id: str
    name: str
    labels: dict[str, str]
    status: str = Field(description="idle | busy | offline | draining")
    draining: bool
    gpu_info: list[dict[str, Any]]
    gpu_count: int
    vram_gb: float
    hostname: str | None
    agent_version: str | None
    current_job_id: str | None
    is_local: bool
    owner_id: str | None = Field(None, description="the user who created the registration; null: the bootstrap "
                                                   "admin token, auth off, or made by stcloud itself")
    created_at: str | None
    registered_at: str | None
    last_heartbeat_at: str | None
    seconds_since_heartbeat: float | None


class WorkerAnswer(BaseModel):
    worker: WorkerView


class WorkerList(BaseModel):
    workers: list[WorkerView]
    timeout_seconds: int


class WorkerToken(BaseModel):
    """``POST /api/cloud/workers`` and ``.../rotate-token``: the token is shown this once."""

    worker_id: str
    token: str
    command: str = Field(description="the command to start the agent on the worker machine")
    worker: WorkerView


class Registered(BaseModel):
    """``POST /api/workers/register``: what the agent should resume or abandon."""

    worker_id: str
    name: str
    labels: dict[str, str]
    draining: bool
    heartbeat_interval: float
    lease_seconds: int
    resume: list[str] = Field(description="jobs this worker still holds: keep reporting them")
    abandon: list[str] = Field(description="jobs the agent reported that it must stop")


class HeartbeatAnswer(BaseModel):
    cancel: list[str] = Field(description="jobs to stop")
    drain: bool
    lease_expires_at: str | None
    heartbeat_interval: float


class JobStorage(BaseModel):
    """Per-job keys for the built-in S3 endpoint (bucket ``outputs``, prefix ``<job_id>/``)."""

    endpoint_path: str
    endpoint_url: str | None
    region: str
    bucket: str
    prefix: str
    access_key_id: str | None
    secret_access_key: str | None
    expires_at: str | None


class ClaimedJob(BaseModel):
    """What a worker runs: the config, the data and where the outputs go."""

    id: str
    name: str | None
    provider: str
    attempt: int | None
    max_attempts: int | None
    config: dict[str, Any]
    dataloader_config: list[Any]
    archive: dict[str, Any] | None = Field(description="{url, sha256} of the dataset archive (null: none)")
    checkpoint: dict[str, Any] | None = Field(description="the checkpoint to resume from")
    log_seq: int
    requirements: dict[str, Any]
    lease_expires_at: str | None
    heartbeat_interval: float
    storage: JobStorage | None


class Claim(BaseModel):
    """``POST /api/workers/claim``: a job, or ``{job: null, drain: true}`` for a draining worker."""

    job: ClaimedJob | None
    drain: bool | None = None


class LogsAnswer(BaseModel):
    accepted: bool
    duplicate: bool | None = None
    log_seq: int | None


class ProgressAnswer(BaseModel):
    progress: dict[str, Any]


class CheckpointAnswer(BaseModel):
    checkpoint: dict[str, Any] | None


class StatusAnswer(BaseModel):
    """``complete`` and ``release``: the job's status afterwards."""

    status: str
