"""Slurm job states -> stcloud statuses, and the records both transports turn into
``CloudJobInfo``. Pure: no Flask, no database, no subprocess.

Slurm's own state is kept as ``raw_status``; its reason (``Resources``, ``Priority``,
``QOSMaxJobsPerUser``, ``NonZeroExitCode``, ...) goes to ``extra["reason"]`` and, for a job
that did not succeed, into ``error``.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from stcloud.providers.base import CloudJobInfo, CloudJobStatus

# Slurm base states (squeue %T / job_state / scontrol JobState) -> ours.
STATE_MAP: dict[str, CloudJobStatus] = {
    "PENDING": CloudJobStatus.QUEUED,
    "CONFIGURING": CloudJobStatus.QUEUED,  # nodes allocated, still booting
    "REQUEUED": CloudJobStatus.QUEUED,
    "REQUEUE_HOLD": CloudJobStatus.QUEUED,
    "REQUEUE_FED": CloudJobStatus.QUEUED,
    "RUNNING": CloudJobStatus.RUNNING,
    "COMPLETING": CloudJobStatus.RUNNING,  # the batch script ended; epilog/clean-up
    "SUSPENDED": CloudJobStatus.RUNNING,
    "STAGE_OUT": CloudJobStatus.RUNNING,
    "SIGNALING": CloudJobStatus.RUNNING,
    "RESIZING": CloudJobStatus.RUNNING,
    "COMPLETED": CloudJobStatus.COMPLETED,
    "FAILED": CloudJobStatus.FAILED,
    "TIMEOUT": CloudJobStatus.FAILED,
    "OUT_OF_MEMORY": CloudJobStatus.FAILED,
    "NODE_FAIL": CloudJobStatus.FAILED,
    "PREEMPTED": CloudJobStatus.FAILED,
    "BOOT_FAIL": CloudJobStatus.FAILED,
    "DEADLINE": CloudJobStatus.FAILED,
    "SPECIAL_EXIT": CloudJobStatus.FAILED,
    "CANCELLED": CloudJobStatus.CANCELLED,
}
ENDED = frozenset(k for k, v in STATE_MAP.items()
                  if v in (CloudJobStatus.COMPLETED, CloudJobStatus.FAILED, CloudJobStatus.CANCELLED))
# Ended for a reason that is not the job's fault: resumed from its checkpoint (max_attempts).
RETRYABLE = frozenset({"NODE_FAIL", "PREEMPTED", "BOOT_FAIL"})
MESSAGES = {
    "FAILED": "the job failed",
    "TIMEOUT": "the job hit its time limit",
    "OUT_OF_MEMORY": "the job ran out of memory",
    "NODE_FAIL": "a node of the job failed",
    "PREEMPTED": "the job was preempted",
    "BOOT_FAIL": "a node of the job failed to boot",
    "DEADLINE": "the job missed its deadline",
    "CANCELLED": "the job was cancelled in Slurm",
}


@dataclass(frozen=True)
class SlurmJob:
    """What either transport read about one Slurm job."""

    job_id: str
    name: str | None
    state: str  # base state, upper case ("PENDING", "TIMEOUT", ...)
    reason: str | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    restarts: int = 0
    submit_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    nodes: str | None = None
    partition: str | None = None
    stdout: str | None = None
    gpus: int | None = None  # from the job's TRES (gres/gpu=N); None when it has no GPU entry
    source: str = "squeue"  # squeue | scontrol | rest


def base_state(raw: str | None) -> str:
    """``CANCELLED by 0`` -> ``CANCELLED``; ``RUNNING+`` -> ``RUNNING``."""
    text = (raw or "").strip().upper()
    for sep in (" ", "+"):
        text = text.split(sep, 1)[0]
    return text


def gpus_in_tres(*tres: str | None) -> int | None:
    """The GPUs in the first TRES string that names them: ``…,gres/gpu=2`` (allocated TRES,
    with accounting) or ``gres:gpu:2`` / ``gres:gpu:a100:2`` (the job's request). None when
    none does."""
    for text in tres:
        for part in (text or "").split(","):
            part = part.strip()
            if part.startswith("gres/gpu="):
                value = part.split("=", 1)[1]
            elif part.startswith(("gres:gpu:", "gres/gpu:")):
                value = part.rsplit(":", 1)[1]
            else:
                continue
            if value.isdigit():
                return int(value)
    return None


def clean_reason(reason: str | None) -> str | None:
    if reason in (None, "", "None", "(null)"):
        return None
    return str(reason)


def epoch(value) -> datetime | None:
    """A Slurm epoch (0 / None = unset) as an aware datetime."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return datetime.fromtimestamp(n, tz=UTC) if n > 0 else None


def elapsed_seconds(job: SlurmJob, now: datetime | None = None) -> float:
    if job.start_time is None:
        return 0.0
    end = job.end_time if job.state in ENDED and job.end_time else (now or datetime.now(UTC))
    return max(0.0, (end - job.start_time).total_seconds())


def error_text(job: SlurmJob) -> str | None:
    """Why the job did not succeed, in Slurm's words (None while it is fine)."""
    if job.state not in ENDED or job.state == "COMPLETED":
        return None
    text = f"Slurm: {job.state}"
    if job.state in MESSAGES:
        text += f" — {MESSAGES[job.state]}"
    details = []
    if job.exit_code or job.exit_signal:
        details.append(f"exit code {job.exit_code}" + (f", signal {job.exit_signal}" if job.exit_signal else ""))
    if job.reason and job.reason != job.state:
        details.append(f"reason {job.reason}")
    return text + (f" ({', '.join(details)})" if details else "")


def rate_usd_per_second(gpu_hour_usd: float, gpus: int) -> float:
    return round(float(gpu_hour_usd) * max(int(gpus), 0) / 3600.0, 12)


def to_info(job: SlurmJob, *, gpus: int, gpu_hour_usd: float, now: datetime | None = None) -> CloudJobInfo:
    status = STATE_MAP.get(job.state)  # None: a state we do not know (no change, logged)
    seconds = elapsed_seconds(job, now)
    cost = round(gpu_hour_usd * max(gpus, 0) * seconds / 3600.0, 6)
    return CloudJobInfo(
        provider_job_id=job.job_id,
        status=status,
        raw_status=job.state,
        error=error_text(job),
        billed_seconds=seconds,
        created_at=job.submit_time,
        started_at=job.start_time,
        completed_at=job.end_time if job.state in ENDED else None,
        extra={"reason": job.reason, "exit_code": job.exit_code, "exit_signal": job.exit_signal,
               "restarts": job.restarts, "nodes": job.nodes, "partition": job.partition,
               "name": job.name, "stdout": job.stdout, "cost_usd": cost, "gpus": gpus,
               "retryable": job.state in RETRYABLE, "source": job.source,
               "rate_usd_per_second": rate_usd_per_second(gpu_hour_usd, gpus)},
    )
