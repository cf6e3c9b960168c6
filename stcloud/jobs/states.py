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

# ``waiting`` (SPEC §13): dependencies not finished, or held until a budget period rolls over.
# Cancellable, billed nothing, holds no reservation — so it is not in ACTIVE (which is what
# the spend limits and the per-user limits count). Moves and who makes them: stcloud.pipelines.
WAITING = "waiting"
STATUSES = (*STATUSES, WAITING)
ALLOWED[WAITING] = frozenset({PENDING, CANCELLED, FAILED})

def is_terminal(status: str) -> bool:
    return status in TERMINAL


def can_move(current: str, new: str) -> bool:
    return new in ALLOWED.get(current, frozenset())


def validate_status(value: str) -> str:
    if value not in STATUSES:
        raise ValueError(f"unknown status {value!r}; expected one of {', '.join(STATUSES)}")
    return value
