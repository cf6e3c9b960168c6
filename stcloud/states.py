"""Job statuses and allowed moves (SPEC §2). Pure: no Flask, no database."""
from __future__ import annotations

PENDING, UPLOADING, QUEUED, RUNNING = "pending", "uploading", "queued", "running"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"

STATUSES = (PENDING, UPLOADING, QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
ACTIVE = frozenset(STATUSES) - TERMINAL

ALLOWED: dict[str, frozenset[str]] = {
    PENDING: frozenset({UPLOADING, QUEUED, RUNNING, CANCELLED, FAILED}),
    UPLOADING: frozenset({QUEUED, RUNNING, CANCELLED, FAILED}),
    QUEUED: frozenset({RUNNING, CANCELLED, FAILED}),
    # running -> queued only when a worker was lost and the job is re-queued.
    RUNNING: frozenset({COMPLETED, FAILED, CANCELLED, QUEUED}),
    COMPLETED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}

# SPEC §13: a job whose estimate is above the approval threshold waits for an admin before
# anything is packaged or launched; it holds its spend reservation (an ACTIVE status) and is
# billed nothing. Approve -> uploading (the normal launch path); reject or cancel -> cancelled.
PENDING_APPROVAL = "pending_approval"
STATUSES = (*STATUSES, PENDING_APPROVAL)
ACTIVE = ACTIVE | {PENDING_APPROVAL}
ALLOWED[PENDING] = ALLOWED[PENDING] | {PENDING_APPROVAL}
ALLOWED[PENDING_APPROVAL] = frozenset({UPLOADING, CANCELLED, FAILED})

def is_terminal(status: str) -> bool:
    return status in TERMINAL


def can_move(current: str, new: str) -> bool:
    return new in ALLOWED.get(current, frozenset())


def validate_status(value: str) -> str:
    if value not in STATUSES:
        raise ValueError(f"unknown status {value!r}; expected one of {', '.join(STATUSES)}")
    return value
