"""An in-memory provider for tests of the provider seam."""
from stcloud.errors import ProviderError
from stcloud.providers.base import CloudJobInfo, CloudJobStatus, CloudTrainerService, RunRequest


class MemoryProvider(CloudTrainerService):
    def __init__(self):
        self.cancelled: list[str] = []
        self.jobs: dict[str, CloudJobInfo] = {}
        self.fail_cancel = False

    provider_name = "memory"
    supports_cost_tracking = True
    supports_live_logs = True

    def validate_credentials(self):
        return {"username": "mem"}

    def list_jobs(self, limit=50):
        return list(self.jobs.values())[:limit]

    def run_job(self, request: RunRequest):
        info = CloudJobInfo(provider_job_id=f"mem_{len(self.jobs)}", status=CloudJobStatus.QUEUED)
        self.jobs[info.provider_job_id] = info
        return info

    def cancel_job(self, provider_job_id):
        if self.fail_cancel:
            raise ProviderError("memory provider: cancel failed (injected)")
        self.cancelled.append(provider_job_id)
        return True

    def get_job_logs(self, provider_job_id):
        return ""

    def get_job_status(self, provider_job_id):
        return self.jobs[provider_job_id]
