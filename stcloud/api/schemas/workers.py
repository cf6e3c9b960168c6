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
