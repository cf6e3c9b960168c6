"""Conditional refreshes for polled fragments (issue 16 goal 4).

A polled fragment (the job page's status panel, a job-list row) carries a weak ETag derived
from the version of what it shows, computed from one indexed read *before* rendering. The
browser's poller (static/poll.js) sends it back in ``If-None-Match``; while it still matches
the answer is ``304 Not Modified`` with no body: nothing rendered, nothing swapped, and the
poller slows down. The tag also covers who is looking (user, role, CSRF token: the fragment's
forms embed it) and, for jobs still running, a ``TICK_SECONDS`` clock bucket, so durations and
ETAs shown are at most that old.
"""
from __future__ import annotations

import hashlib
import time

from flask import Response, g, make_response, request

from stcloud import __version__
from stcloud.web.auth import csrf_token

TICK_SECONDS = 30  # a running job's fragment is re-rendered at least this often (durations, ETA)


def etag_for(*parts: object, ticking: bool = False) -> str:
    """An opaque tag over ``parts``, the viewer and (``ticking``) the current clock bucket."""
    actor = g.get("actor")  # who the request guard (accounts.guard) let in
    viewer = (actor.name, actor.role) if actor else ("", "")
    h = hashlib.blake2b(digest_size=12)
    for part in (__version__, *viewer, csrf_token(), *parts,
                 int(time.time() // TICK_SECONDS) if ticking else ""):
        h.update(repr(part).encode())
        h.update(b"\x1f")
    return h.hexdigest()


def not_modified(etag: str) -> Response | None:
    """A 304 when the request's ``If-None-Match`` names ``etag``, else None."""
    if not request.if_none_match.contains_weak(etag):
        return None
    resp = make_response("", 304)
    tag(resp, etag)
    return resp


def tag(resp: Response, etag: str) -> Response:
    """Mark ``resp`` with ``etag`` (weak) and keep caches from answering for us."""
    resp.set_etag(etag, weak=True)
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers.add("Vary", "Cookie")
    return resp
