"""The provider seam (the seeds' ``CloudTrainerService``).

Adapters import no Flask and no database: they get their settings in the constructor and
return frozen dataclasses. The seeds' interface is async; ours is synchronous because every
caller (Flask request, scheduler job, worker thread) is synchronous — one fewer event loop.
"""
from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class CloudJobStatus(str, enum.Enum):
    PENDING = "pending"
    UPLOADING = "uploading"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class CloudJobInfo:
    provider_job_id: str
    status: CloudJobStatus | None  # None: the provider said something we do not map
    raw_status: str | None = None
    logs: str | None = None  # the provider's whole log so far, when it has one
    output: Any = None
    error: str | None = None
    billed_seconds: float | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RunRequest:
    """What a provider needs to start a job."""

    job_id: str
    name: str
    config: dict
    dataloader_config: list
    hardware: str | None = None
    archive_path: str | None = None  # packaged dataset (zip) or None
    webhook_url: str | None = None
    inputs: dict = field(default_factory=dict)  # provider-specific extra inputs (publishing, hub id)


class CloudTrainerService(abc.ABC):
    @property
    @abc.abstractmethod
    def provider_name(self) -> str: ...

    @property
    @abc.abstractmethod
    def supports_cost_tracking(self) -> bool: ...

    @property
    @abc.abstractmethod
    def supports_live_logs(self) -> bool: ...

    @abc.abstractmethod
    def validate_credentials(self) -> dict[str, Any]:
        """Check the credentials; return account info. Raises ProviderError / NotConfigured."""

    @abc.abstractmethod
    def list_jobs(self, limit: int = 50) -> list[CloudJobInfo]: ...

    @abc.abstractmethod
    def run_job(self, request: RunRequest) -> CloudJobInfo:
        """Start a job. Raises ProviderError with a clear message on failure."""

    @abc.abstractmethod
    def cancel_job(self, provider_job_id: str) -> bool: ...

    @abc.abstractmethod
    def get_job_logs(self, provider_job_id: str) -> str: ...

    @abc.abstractmethod
    def get_job_status(self, provider_job_id: str) -> CloudJobInfo: ...
