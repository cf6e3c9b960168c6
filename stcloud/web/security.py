"""HTTPS behind a reverse proxy, and the security headers of pages.

- ``X-Forwarded-Proto`` is believed only from a peer in ``trusted_proxies`` (the Replicate
  provider settings, the same list the webhook allowlist uses). Then the request counts as
  HTTPS: ``url_for(..., _external=True)``, redirects and ``request.is_secure`` say https, and
  the session cookie is sent with ``Secure``. From anyone else the header is ignored.
- The trusted list is read from the database at most every ``TRUSTED_TTL`` seconds per
  process, and only for requests that carry the header.
- Pages (HTML) get a Content-Security-Policy without inline script or eval (behaviour lives in
  ``static/*.js``, keyed on data-* attributes; JSON data islands are not scripts), may not be
  framed (``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``); every response gets
  ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: same-origin``. Inline ``style``
  stays allowed (it cannot run code).
"""
from __future__ import annotations

import logging
import threading
import time

from flask import Flask, Response, has_request_context, request
from flask.sessions import SecureCookieSessionInterface

from stcloud.web import netfilter
from stcloud.web.auth import TRUSTED_PROXIES

log = logging.getLogger(__name__)

TRUSTED_TTL = 5.0
SCHEMES = ("http", "https")
CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY"}
ALL_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


class TrustedForwardedProto:
    """WSGI middleware: ``X-Forwarded-Proto`` from a trusted proxy sets ``wsgi.url_scheme``."""

    def __init__(self, app: Flask, wsgi_app):
        self.app = app
        self.wsgi_app = wsgi_app
        self._lock = threading.Lock()
        self._trusted: tuple = ()
        self._read_at = float("-inf")

    def trusted(self) -> tuple:
        with self._lock:
            if time.monotonic() - self._read_at > TRUSTED_TTL:
                try:
                    with self.app.app_context():
                        getter = self.app.extensions.get(TRUSTED_PROXIES)
                        values = getter() if getter else []
                    self._trusted = netfilter.parse_networks(values)
                except Exception:  # noqa: BLE001 - database down or bad setting: trust nobody
                    log.warning("cannot read trusted_proxies; X-Forwarded-Proto is ignored", exc_info=True)
                    self._trusted = ()
                self._read_at = time.monotonic()
            return self._trusted

    def __call__(self, environ, start_response):
        proto = (environ.get("HTTP_X_FORWARDED_PROTO") or "").split(",")[-1].strip().lower()
        if proto in SCHEMES:
            peer = netfilter.parse_address(environ.get("REMOTE_ADDR"))
            if peer is not None and any(peer.version == net.version and peer in net for net in self.trusted()):
                environ["wsgi.url_scheme"] = proto
        return self.wsgi_app(environ, start_response)


class SecureWhenHttps(SecureCookieSessionInterface):
    """``SESSION_COOKIE_SECURE``, or ``Secure`` whenever the request came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(super().get_cookie_secure(app) or (has_request_context() and request.is_secure))


def security_headers(response: Response) -> Response:
    for name, value in ALL_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.mimetype == "text/html":
        for name, value in PAGE_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    app.wsgi_app = TrustedForwardedProto(app, app.wsgi_app)
    if type(app.session_interface) is SecureCookieSessionInterface:
        app.session_interface = SecureWhenHttps()
    app.after_request(security_headers)
