"""Who is acting in this request or task, and which jobs they may see. Pure: no Flask, no db.

The web guard binds an ``Actor`` for each request (a context variable, so threads and
requests never share it); services read it to filter what members see and to stamp owners on
new rows. Background code (scheduler, worker API) binds nothing and sees everything.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass

ADMIN, MEMBER, VIEWER = "admin", "member", "viewer"
ROLES = (ADMIN, MEMBER, VIEWER)
RANK = {VIEWER: 0, MEMBER: 1, ADMIN: 2}


@dataclass(frozen=True)
class Actor:
    name: str  # username, or "admin-token", "local" (auth off), "system", "webhook", "worker:<name>"
    role: str
    user_id: str | None = None
    key_id: str | None = None  # the API key used, if any

    def at_least(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


_current: ContextVar[Actor | None] = ContextVar("stcloud_actor", default=None)
_client: ContextVar[str | None] = ContextVar("stcloud_client_addr", default=None)


def bind(actor: Actor | None) -> Token:
    return _current.set(actor)


def reset(token: Token) -> None:
    _current.reset(token)


@contextmanager
def acting_as(actor: Actor | None) -> Iterator[None]:
    token = bind(actor)
    try:
        yield
    finally:
        reset(token)


def bind_client(addr: str | None) -> Token:
    """The client address of this request (through trusted proxies), for the audit log."""
    return _client.set(addr)


def reset_client(token: Token) -> None:
    _client.reset(token)


def client_addr() -> str | None:
    return _client.get()


def current() -> Actor | None:
    return _current.get()


def current_user_id() -> str | None:
    actor = _current.get()
    return actor.user_id if actor else None


def owner_filter() -> str | None:
    """The owner id a listing must be restricted to, or None to see everything.

    Members see their own jobs; admins and viewers see all; no actor (scheduler, workers,
    CLI on the server) sees all.
    """
    actor = _current.get()
    if actor is not None and actor.role == MEMBER:
        return actor.user_id or ""
    return None


def may_see(owner_id: str | None) -> bool:
    wanted = owner_filter()
    return wanted is None or owner_id == wanted
