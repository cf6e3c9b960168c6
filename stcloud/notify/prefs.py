"""Per-user notification preferences: which events a user receives by e-mail, and where.

Stored on the user (``users.notify_prefs``: ``{"events": [...], "email": "..."}``); the e-mail
defaults to the account's. A user receives only events about what is theirs:
- ``job.completed`` / ``job.failed`` / ``job.cancelled``: their own jobs;
- ``spend.warn`` / ``spend.block``: their own submits;
- ``approval.requested``: admins only (a job waits for an approval).
Mail goes through the instance's SMTP settings (Settings → Notifications: host and sender);
nothing is queued for users while SMTP is not set up. A user already on the instance's e-mail
list for that event gets one message, not two.
"""
from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from stcloud import db
from stcloud.accounts import scope
from stcloud.errors import BadRequest, NotFound
from stcloud.models import Job, User
from stcloud.notify import config

EVENTS = ("job.completed", "job.failed", "job.cancelled", "spend.warn", "spend.block", "approval.requested")
ADMIN_EVENTS = frozenset({"approval.requested"})
LABELS = {
    "job.completed": "My job completed",
    "job.failed": "My job failed",
    "job.cancelled": "My job was cancelled (or its approval rejected)",
    "spend.warn": "My submit crossed a spend-limit warning",
    "spend.block": "My submit was refused by a spend limit",
    "approval.requested": "A job waits for approval (admins)",
}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def available(role: str) -> list[str]:
    return [e for e in EVENTS if e not in ADMIN_EVENTS or role == scope.ADMIN]


def _smtp_ready(cfg: dict) -> bool:
    return bool(cfg["email"].get("host") and cfg["email"].get("sender"))


def view_of(user: User, cfg: dict | None = None) -> dict:
    cfg = cfg or config.stored()
    raw = user.notify_prefs or {}
    allowed = available(user.role)
    return {"email": raw.get("email") or user.email, "account_email": user.email,
            "events": [e for e in raw.get("events") or [] if e in allowed],
            "available_events": [{"event": e, "label": LABELS[e]} for e in allowed],
            "smtp_configured": _smtp_ready(cfg)}


def _me(s: Session) -> User:
    user_id = scope.current_user_id()
    user = s.get(User, user_id) if user_id else None
    if user is None:  # the admin token or auth off: no account to keep preferences on
        raise NotFound("notification preferences belong to a user account; sign in as a user (the admin token "
                       "and STCLOUD_AUTH=off have none)")
    return user


def get_mine() -> dict:
    """``GET /api/cloud/me/notifications``. Raises NotFound without a user account."""
    with db.session() as s:
        return view_of(_me(s))


def validate(body, role: str) -> dict:
    """``{"events": [...], "email": str|null}`` checked; raises BadRequest naming the field."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object like {\"events\": [...], \"email\": \"…\"}")
    known = {"events", "email"}
    read_only = {"account_email", "available_events", "smtp_configured"}  # a GET answer can be PUT back
    unknown = set(body) - known - read_only
    if unknown:
        first = sorted(unknown)[0]
        raise BadRequest(f"unknown field {first!r}; expected events, email", extra={"field": first})
    out: dict = {}
    if "events" in body:
        events = body["events"]
        allowed = available(role)
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            raise BadRequest(f"events must be a list out of {', '.join(allowed)}", extra={"field": "events"})
        for e in events:
            if e not in allowed:
                why = " (admins only)" if e in ADMIN_EVENTS else ""
                raise BadRequest(f"unknown event {e!r}{why}; expected one of {', '.join(allowed)}",
                                 extra={"field": "events"})
        out["events"] = [e for e in EVENTS if e in events]
    if "email" in body:
        email = body["email"]
        if email is not None and not isinstance(email, str):
            raise BadRequest("email must be an e-mail address or null (the account's)", extra={"field": "email"})
        email = (email or "").strip() or None
        if email is not None and (len(email) > 320 or not _EMAIL.match(email)):
            raise BadRequest(f"email {email!r} is not an e-mail address", extra={"field": "email"})
        out["email"] = email
    return out


def put_mine(body) -> dict:
    """``PUT /api/cloud/me/notifications`` (partial). Raises NotFound, BadRequest."""
    with db.transaction() as s:
        user = _me(s)
        clean = validate(body, user.role)
        user.notify_prefs = {**(user.notify_prefs or {}), **clean}
    return get_mine()


def _wants(user: User, event: str) -> str | None:
    """The address ``user`` gets ``event`` at, or None."""
    if user.disabled or event not in available(user.role):
        return None
    raw = user.notify_prefs or {}
    if event not in (raw.get("events") or []):
        return None
    return raw.get("email") or user.email or None


def recipients(s: Session, event: str, job_id: str | None) -> list[str]:
    """The e-mail addresses of users who asked for ``event`` (in the caller's session)."""
    cfg = config.stored(s)
    if not _smtp_ready(cfg):
        return []
    if event in ADMIN_EVENTS:
        users = s.scalars(select(User).where(User.role == scope.ADMIN, User.disabled.is_(False))).all()
    else:
        owner_id = None
        if job_id:
            owner_id = s.scalar(select(Job.owner_id).where(Job.id == job_id))
        elif event.startswith("spend."):
            owner_id = scope.current_user_id()  # a refused submit has no job row: the submitter
        user = s.get(User, owner_id) if owner_id else None
        users = [user] if user is not None else []
    already = set(cfg["email"].get("to") or []) if cfg["email"]["enabled"] and event in cfg["events"] else set()
    out: list[str] = []
    for user in users:
        address = _wants(user, event)
        if address and address not in already and address not in out:
            out.append(address)
    return out
