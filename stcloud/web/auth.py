"""Admin auth (SPEC §1) and CSRF.

- With ``STCLOUD_ADMIN_TOKEN`` set, every non-machine route needs it: ``Authorization:
  Bearer <token>`` or the login form's session cookie.
- CSRF: POSTs from a browser carry the session token in ``X-CSRF-Token`` (htmx, via
  ``hx-headers`` on <body>) or the ``csrf_token`` form field. Requests that a browser cannot
  send cross-site without a CORS preflight (which we never grant) need no token: PUT/PATCH/
  DELETE, JSON bodies, and requests with an explicit ``Authorization`` header.
- Machine routes (webhooks, S3 endpoint, worker API) are exempt from both by design:
  they authenticate by signature or token. Mark their blueprint with ``machine(bp)``.
"""
from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlparse

from flask import Blueprint, Flask, current_app, g, redirect, request, session, url_for

from stcloud.errors import Forbidden, Unauthorized

_machine_blueprints: set[str] = set()
PUBLIC_ENDPOINTS = {"static", "web.login", "web.login_post", "web.logout", "web.healthz"}
CSRF_METHODS = {"POST"}  # the only unsafe method a cross-site form or simple fetch can send


def machine(bp: Blueprint) -> Blueprint:
    """Mark a blueprint as a machine route: no session auth, no CSRF."""
    _machine_blueprints.add(bp.name)
    return bp


def is_machine_request() -> bool:
    return bool(request.blueprint and request.blueprint.split(".")[0] in _machine_blueprints)


def csrf_token() -> str:
    tok = session.get("csrf")
    if not tok:
        tok = session["csrf"] = secrets.token_urlsafe(32)
    return tok


def admin_token() -> str | None:
    return current_app.config.get("STCLOUD_ADMIN_TOKEN") or None


def bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def check_token(candidate: str | None) -> bool:
    expected = admin_token()
    return bool(expected and candidate and hmac.compare_digest(candidate.encode(), expected.encode()))


def _json_body() -> bool:
    mime = (request.mimetype or "").lower()
    return mime == "application/json" or mime.endswith("+json")


def init_app(app: Flask) -> None:
    app.jinja_env.globals["csrf_token"] = csrf_token

    @app.before_request
    def _guard():
        if request.endpoint in PUBLIC_ENDPOINTS or is_machine_request():
            return None
        g.via_bearer = False
        if admin_token():
            tok = bearer()
            if tok is not None:
                if not check_token(tok):
                    raise Unauthorized("invalid admin token")
                g.via_bearer = True
            elif not session.get("admin"):
                if request.path.startswith("/api/") or request.method != "GET":
                    raise Unauthorized("admin token required (Authorization: Bearer <token>, or log in)")
                return redirect(url_for("web.login", next=request.full_path.rstrip("?")))
        if request.method in CSRF_METHODS and not g.via_bearer and not _json_body() and not bearer():
            sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
            expected = session.get("csrf", "")
            if not expected or not sent or not hmac.compare_digest(sent, expected):
                raise Forbidden("CSRF token missing or invalid; reload the page and try again")
        return None


def safe_next(target: str | None) -> str:
    if not target:
        return "/"
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith("/"):
        return "/"
    return target
