"""The floor every blueprint stands on: which routes are machine or public routes, the
client's address, bearer credentials, CSRF tokens, loopback checks. Who is signed in and what
they may do is the accounts' guard (``stcloud.accounts.guard``), which builds on this.

- Machine routes (webhooks, S3 endpoint, worker API) are exempt from sign-in and CSRF by
  design: they authenticate by signature or token. Mark their blueprint with ``machine(bp)``.
  Routes anyone may reach (health checks) are marked with ``public(bp)``.
- CSRF: POSTs from a browser carry the session token in ``X-CSRF-Token`` (htmx, via
  ``hx-headers`` on <body>) or the ``csrf_token`` form field (checked by the guard).
- The client address believes ``X-Forwarded-For`` only from the ``trusted_proxies`` setting,
  which its owner registers under ``TRUSTED_PROXIES`` in ``app.extensions``.
"""
from __future__ import annotations

import hmac
import ipaddress
import secrets
from urllib.parse import urlparse

from flask import Blueprint, Flask, current_app, g, request, session

from stcloud.errors import StcloudError
from stcloud.web import netfilter

_machine_blueprints: set[str] = set()
_public_blueprints: set[str] = set()
PUBLIC_ENDPOINTS = {"static", "web.login", "web.login_post", "web.logout",
                    "accounts_api.login", "accounts_pages.login_link"}
CSRF_METHODS = {"POST"}  # the only unsafe method a cross-site form or simple fetch can send
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def machine(bp: Blueprint) -> Blueprint:
    """Mark a blueprint as a machine route: no session auth, no CSRF."""
    _machine_blueprints.add(bp.name)
    return bp


def public(bp: Blueprint) -> Blueprint:
    """Mark a blueprint whose routes need no sign-in (CSRF still applies to its POSTs)."""
    _public_blueprints.add(bp.name)
    return bp


def _top_blueprint() -> str | None:
    return request.blueprint.split(".")[0] if request.blueprint else None


def is_machine_request() -> bool:
    return _top_blueprint() in _machine_blueprints


def is_machine_endpoint(endpoint: str) -> bool:
    return endpoint.split(".")[0] in _machine_blueprints


def is_public_endpoint(endpoint: str | None) -> bool:
    return endpoint in PUBLIC_ENDPOINTS or bool(endpoint and endpoint.split(".")[0] in _public_blueprints)


def auth_enabled(app: Flask | None = None) -> bool:
    return (app or current_app).config.get("STCLOUD_AUTH", "on") != "off"


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
    """True for the bootstrap admin token (``STCLOUD_ADMIN_TOKEN``)."""
    expected = admin_token()
    return bool(expected and candidate and hmac.compare_digest(candidate.encode(), expected.encode()))


# app.extensions key: a callable returning the ``trusted_proxies`` setting (a list of
# addresses/networks). The providers' settings register it (they store it); without one,
# no proxy is trusted.
TRUSTED_PROXIES = "stcloud.trusted_proxies"


def trusted_networks(app: Flask | None = None) -> tuple:
    """The proxies whose ``X-Forwarded-For`` / ``-Proto`` are believed (parsed networks)."""
    getter = (app or current_app).extensions.get(TRUSTED_PROXIES)
    try:
        return tuple(netfilter.parse_networks(getter() if getter else []))
    except ValueError:  # stored settings are validated; trust nobody if not
        return ()


def client_addr() -> str | None:
    """The client's address: the socket peer, or ``X-Forwarded-For`` read through the
    ``trusted_proxies`` setting (Providers page) only."""
    if "client_addr" not in g:
        forwarded = request.headers.getlist("X-Forwarded-For")
        # without the header the peer is the client: no settings read per request
        trusted = trusted_networks() if forwarded else ()
        addr = netfilter.client_address(request.remote_addr, forwarded, trusted)
        g.client_addr = str(addr) if addr else request.remote_addr
    return g.client_addr


def is_json_request() -> bool:
    mime = (request.mimetype or "").lower()
    return mime == "application/json" or mime.endswith("+json")


def is_loopback_addr(addr: str | None) -> bool:
    parsed = netfilter.parse_address(addr)
    return bool(parsed and parsed.is_loopback)


def is_loopback_host(host: str) -> bool:
    """For ``stcloud serve --host``: a loopback IP or ``localhost``."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def safe_next(target: str | None) -> str:
    if not target:
        return "/"
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def init_app(app: Flask) -> None:
    mode = str(app.config.get("STCLOUD_AUTH") or "on").strip().lower()
    if mode not in ("on", "off"):
        raise StcloudError(f"STCLOUD_AUTH must be 'on' or 'off', got {mode!r}")
    app.config["STCLOUD_AUTH"] = mode
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["auth_enabled"] = lambda: auth_enabled(app)
