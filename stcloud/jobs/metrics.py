"""Figures the job list, the job page and the compare view show for a job: duration, final
and best loss, throughput (steps/s) and ETA of a running job, the failure reason. Pure."""
from __future__ import annotations

from datetime import UTC, datetime

from stcloud import states

REASON_CHARS = 160


def _aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def failure_reason(error: str | None) -> str | None:
    """The first line of the error, shortened for a table cell."""
    if not error:
        return None
    line = error.strip().splitlines()[0] if error.strip() else ""
    return line if len(line) <= REASON_CHARS else line[:REASON_CHARS - 1] + "…"


def compute(job, now: datetime | None = None) -> dict:
    """``{duration_seconds, final_loss, best_loss, steps_per_second, eta_seconds,
    failure_reason}`` (None where unknown) of a Job row."""
    now = now or datetime.now(UTC)
    started, ended = _aware(job.started_at), _aware(job.completed_at)
    progress = job.progress or {}
    duration = None
    if started is not None:
        duration = max(0.0, ((ended or now) - started).total_seconds())
    final_loss = progress.get("loss")
    best_loss = progress.get("best_loss") if progress.get("best_loss") is not None else final_loss
    rate = eta = None
    step, total = progress.get("step"), progress.get("total_steps")
    resumed_at = max((r.get("step", 0) for r in progress.get("resumes") or []), default=0)
    if job.status == states.RUNNING and duration and step and step > resumed_at:
        rate = (step - resumed_at) / duration
        if total and total >= step and rate > 0:
            eta = (total - step) / rate
    return {"duration_seconds": duration, "final_loss": final_loss, "best_loss": best_loss,
            "steps_per_second": rate, "eta_seconds": eta,
            "failure_reason": failure_reason(job.error) if job.status == states.FAILED else None}
