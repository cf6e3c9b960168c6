"""SimpleTuner.io, the SimpleTuner team's hosted training service (the seeds' table lists it
as "Coming Soon"). Listed so users see it; refused at submit until it opens."""
from __future__ import annotations

from typing import Any

from stcloud.providers.base import (
    COMING_SOON,
    CloudJobInfo,
    CloudTrainerService,
    ProviderFailure,
    RunRequest,
)

NOT_YET = "SimpleTuner.io is coming soon: it does not accept jobs yet"


class SimpleTunerIOService(CloudTrainerService):
    provider_name = "simpletuner_io"
    supports_cost_tracking = True
    supports_live_logs = True

    @property
    def label(self) -> str:
        return "SimpleTuner.io"

    @property
    def description(self) -> str:
        return "Hosted training by the SimpleTuner team. Coming soon."

    @property
    def status(self) -> str:
        return COMING_SOON

    def poll_interval(self, status: str) -> float | None:
        return None

    def not_ready_reason(self) -> str | None:
        return NOT_YET

    def validate_credentials(self) -> dict[str, Any]:
        raise ProviderFailure(NOT_YET, http_status=400)

    def list_jobs(self, limit: int = 50) -> list[CloudJobInfo]:
        return []

    def run_job(self, request: RunRequest) -> CloudJobInfo:
        raise ProviderFailure(NOT_YET, http_status=400)

    def cancel_job(self, provider_job_id: str) -> bool:
        return False

    def get_job_logs(self, provider_job_id: str) -> str:
        return ""

    def get_job_status(self, provider_job_id: str) -> CloudJobInfo:
        raise ProviderFailure(NOT_YET, http_status=400)
