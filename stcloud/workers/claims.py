"""Long-poll claims: ``POST /api/workers/claim?wait=N`` holds an idle worker's claim up to
``N`` seconds (at most ``MAX_WAIT``) and answers as soon as a job it may run is queued.

Two ways to learn that a job was queued:

- in this process, at once: every session commit that queued a job (a ``Job`` flushed
  with status ``queued``) wakes the held claims (``QueueSignal``, a condition variable);
- in other server processes (``gunicorn -w N``, a separate ``stcloud scheduler``): a short
  read every ``DB_POLL`` seconds while the claim is held (one indexed ``LIMIT 1`` query,
  no write); only when it finds a candidate does the held request try a real claim.

The claim itself is ``service.claim`` (the atomic lease), unchanged.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from stcloud import db, states
from stcloud.models import Job, Worker
from stcloud.workers import matching

MAX_WAIT = 30.0  # seconds a claim may be held
DB_POLL = 0.25  # seconds between the reads that notice jobs queued by other processes
CANDIDATES = 20  # queued jobs a poll looks at: a claim is tried only when they change
WAIT_HEADER = "X-Stcloud-Claim-Wait"  # on a 204: how long the server held the claim (agent.CLAIM_WAIT_HEADER)
_QUEUED_FLAG = "stcloud.job_queued"


class QueueSignal:
    """A generation counter under a condition: ``wait(seen, timeout)`` returns at once
    when something was queued since ``seen`` was read, else after the next queue or the
    timeout; it returns the current generation."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.generation = 0

    def notify(self) -> None:
        with self._cond:
            self.generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        with self._cond:
            if self.generation == seen and timeout > 0:
                self._cond.wait(timeout)
            return self.generation


SIGNAL = QueueSignal()


@event.listens_for(Session, "after_flush")
def _note_queued(session: Session, _ctx) -> None:
    for obj in (*session.new, *session.dirty):
        if isinstance(obj, Job) and obj.status == states.QUEUED:
            session.info[_QUEUED_FLAG] = True
            return


@event.listens_for(Session, "after_commit")
def _wake_claims(session: Session) -> None:
    if session.info.pop(_QUEUED_FLAG, False):
        SIGNAL.notify()


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_QUEUED_FLAG, None)


def parse_wait(raw: str | None) -> float:
    """``?wait=`` -> seconds to hold (0 when absent or not a number; capped at MAX_WAIT)."""
    try:
        value = float(raw) if raw not in (None, "") else 0.0
    except ValueError:
        return 0.0
    if value != value or value <= 0:  # NaN or not positive
        return 0.0
    return min(value, MAX_WAIT)


def candidates(worker_id: str, pools: Callable[[], dict[str, str]]) -> Callable[[], tuple[str, ...]]:
    """A reader of the oldest unowned queued jobs of the providers this worker may claim
    (one indexed read per call; the claim decides what it may really run)."""
    with db.session() as s:
        is_local = s.execute(select(Worker.is_local).where(Worker.id == worker_id)).scalar()
    providers = matching.providers_for(pools(), bool(is_local))

    def read() -> tuple[str, ...]:
        if not providers:
            return ()
        with db.session() as s:
            return tuple(s.scalars(
                select(Job.id).where(Job.status == states.QUEUED, Job.worker_id.is_(None),
                                     Job.provider.in_(providers))
                .order_by(Job.created_at, Job.id).limit(CANDIDATES)))

    return read


def claim_waiting(worker_id: str, wait: float, claim: Callable[[str], dict | None],
                  candidates: Callable[[], Callable[[], tuple[str, ...]]], *,
                  clock: Callable[[], float] = time.monotonic,
                  signal: QueueSignal = SIGNAL, db_poll: float = DB_POLL) -> dict | None:
    """``claim(worker_id)`` now; while it finds nothing, hold up to ``wait`` seconds and try
    again when a job is queued (here: at once; elsewhere: within ``db_poll``). None when
    the time is up. ``candidates()`` builds the reader of queued job ids, called only when
    the claim is held. Exceptions of ``claim`` (Draining, Conflict) pass through."""
    deadline = clock() + wait
    seen = signal.generation
    job = claim(worker_id)
    if job is not None or wait <= 0:
        return job
    read = candidates()
    tried = read()  # what the claim just now found nothing in (e.g. jobs it may not run)
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            return None
        now_gen = signal.wait(seen, min(remaining, db_poll))
        woken = now_gen != seen
        seen = now_gen
        queued = read()
        if queued and (woken or queued != tried):
            tried = queued
            job = claim(worker_id)
            if job is not None:
                return job
