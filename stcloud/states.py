"""Job statuses and allowed moves (SPEC §2, §13). Pure: no Flask, no database."""
from __future__ import annotations

PENDING, UPLOADING, QUEUED, RUNNING = "pending", "uploading", "queued", "running"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
# SPEC §13. ``pending_approval``: the estimate is above the approval threshold; the job waits
# for an admin before anything is packaged or launched, holds its spend reservation (an ACTIVE
# status) and is billed nothing. Approve -> uploading (the normal launch path); reject or
# cancel -> cancelled. ``waiting``: dependencies not finished, or held until a budget period
# rolls over; cancellable, billed nothing, holds NO reservation — so it is not in ACTIVE
# (which the spend limits and the per-user limits count). Its moves: stcloud.pipelines.
PENDING_APPROVAL, WAITING = "pending_approval", "waiting"

STATUSES = (PENDING, UPLOADING, QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED, PENDING_APPROVAL, WAITING)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
ACTIVE = frozenset(STATUSES) - TERMINAL - {WAITING}

ALLOWED: dict[str, frozenset[str]] = {
    PENDING: frozenset({UPLOADING, QUEUED, RUNNING, CANCELLED, FAILED, PENDING_APPROVAL}),
    UPLOADING: frozenset({QUEUED, RUNNING, CANCELLED, FAILED}),
    QUEUED: frozenset({RUNNING, CANCELLED, FAILED}),
    # running -> queued only when a worker was lost and the job is re-queued.
    RUNNING: frozenset({COMPLETED, FAILED, CANCELLED, QUEUED}),
    PENDING_APPROVAL: frozenset({UPLOADING, CANCELLED, FAILED}),
    WAITING: frozenset({PENDING, CANCELLED, FAILED}),
    COMPLETED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def can_move(current: str, new: str) -> bool:
    return new in ALLOWED.get(current, frozenset())


def validate_status(value: str) -> str:
    if value not in STATUSES:
        raise ValueError(f"unknown status {value!r}; expected one of {', '.join(STATUSES)}")
    return value
