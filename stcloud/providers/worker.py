"""Self-hosted workers as providers: ``worker`` (any registered worker machine) and ``local``
(the embedded worker of ``stcloud serve``: a worker pool of one).

``run_job`` queues the job: it answers ``queued`` and the job waits in stcloud's own table
until a worker claims it (``workers.service.claim``, an atomic lease). The dataset archive
stays on this machine and is served to the claiming worker, so nothing leaves it: no consent
is asked. The worker reports logs, progress, checkpoints and its end state itself, so these
jobs are never polled; their cost is their run time at the rate recorded on the job.
"""
from __future__ import annotations

from typing import Any

from stcloud.providers.base import (
    EMBEDDED_POOL,
    SHARED_POOL,
    CloudJobInfo,
    CloudJobStatus,
    CloudTrainerService,
    HardwareProfile,
    RunRequest,
)


class WorkerPoolService(CloudTrainerService):
    """Jobs for any self-hosted worker whose labels and GPUs match the job's requirements."""

    provider_name = "worker"
    supports_cost_tracking = False
    supports_live_logs = True

    @property
    def label(self) -> str:
        return "Self-hosted workers"

    @property
    def description(self) -> str:
        return ("Runs on your own GPU machines (stcloud worker). Nothing is uploaded to a third party; "
                "manage the machines on the Workers page.")

    @property
    def uploads_data(self) -> bool:
        return False

    @property
    def supports_checkpoint_on_cancel(self) -> bool:
        return True  # the agent stops the trainer at a step it saves

    @property
    def worker_pool(self) -> str | None:
        return SHARED_POOL

    @property
    def accepts_requirements(self) -> bool:
        return True

    def poll_interval(self, status: str) -> float | None:
        return None  # workers report by themselves

    def hardware_profiles(self) -> list[HardwareProfile]:
        return [HardwareProfile("default", "Self-hosted worker", 0.0,
                                note="your own machine: set what it costs you")]

    def validate_credentials(self) -> dict[str, Any]:
        return {"kind": "self-hosted", "note": "workers authenticate with their own tokens"}

    def list_jobs(self, limit: int = 50) -> list[CloudJobInfo]:
        return []  # the jobs live in stcloud's own table

    def run_job(self, request: RunRequest) -> CloudJobInfo:
        return CloudJobInfo(provider_job_id="", status=CloudJobStatus.QUEUED, raw_status="waiting for a worker")

    def cancel_job(self, provider_job_id: str) -> bool:
        return True  # the holding worker sees the cancel at its next heartbeat

    def get_job_logs(self, provider_job_id: str) -> str:
        return ""  # workers stream their logs into the job itself

    def get_job_status(self, provider_job_id: str) -> CloudJobInfo:
        return CloudJobInfo(provider_job_id=provider_job_id, status=None)


class LocalService(WorkerPoolService):
    """The embedded worker of ``stcloud serve`` (``--local-worker``): a pool of one."""

    provider_name = "local"

    @property
    def worker_pool(self) -> str | None:
        return EMBEDDED_POOL

    @property
    def label(self) -> str:
        return "This machine"

    @property
    def description(self) -> str:
        return "Runs on this machine's embedded worker (stcloud serve --local-worker): no account, no upload."

    def hardware_profiles(self) -> list[HardwareProfile]:
        return [HardwareProfile("default", "Embedded local worker", 0.0, note="this machine")]
