"""What the provider's own scheduler says about a job, as a structured member of the job
(``provider_state`` in the API, a line on the job page): its state and reason in the
scheduler's words — Slurm's ``PENDING`` / ``PartitionDown``, ``RUNNING`` on ``stnode1`` — for
providers whose batch system starts the agent (``workers/agent_jobs`` keeps them in
``provider_data[<provider>]``). None for jobs no such sync reads."""
from __future__ import annotations

from stcloud.models import Job

# The members shown; the rest of provider_data[<provider>] is internal (credentials' submission
# numbers, retired batch jobs, rates).
SHOWN = ("job_id", "state", "reason", "nodes", "partition", "transport", "polled_at")


def of(job: Job) -> dict | None:
    mine = (job.provider_data or {}).get(job.provider)
    if not isinstance(mine, dict) or not mine.get("state"):
        return None
    return {key: mine.get(key) for key in SHOWN}
