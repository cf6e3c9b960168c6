"""Owners: rows a signed-in user creates (jobs, storage credentials, worker registrations)
are stamped with their user id at flush — one hook instead of an ``owner_id=`` in every
writer. Rows created with no actor bound (scheduler, workers, the CLI on the server) keep
``owner_id`` NULL: only admins and viewers see those."""
from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.orm import Session

from stcloud.accounts import scope
from stcloud.models import Job, StorageCredential, Worker

OWNED = (Job, StorageCredential, Worker)


def _stamp(session: Session, _flush_context, _instances) -> None:
    user_id = scope.current_user_id()
    if user_id is None:
        return
    for obj in session.new:
        if isinstance(obj, OWNED) and obj.owner_id is None:
            obj.owner_id = user_id


def install() -> None:
    if not event.contains(Session, "before_flush", _stamp):
        event.listen(Session, "before_flush", _stamp)
