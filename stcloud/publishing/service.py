"""Result delivery (HF Hub / external S3 / the built-in endpoint).

FIRST VERSION (foundation): no delivery. The storage issue replaces the bodies; the
signatures are the contract used by the submit path and the scheduler.
"""
from __future__ import annotations


def prepare_for_submit(job_id: str, provider: str, delivery: dict | None, config: dict) -> tuple[dict, dict, dict | None]:
    """Returns (config with SimpleTuner publishing settings added, extra provider inputs,
    the delivery record to store on the job — without secrets). Raises BadRequest."""
    return dict(config), {}, None


def deliver_pending() -> None:
    """Scheduler job: deliver outputs of completed jobs that a provider returned as URLs."""
    return None
