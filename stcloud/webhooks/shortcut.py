"""``POST /api/webhooks/replicate`` straight from WSGI, around the page machinery.

A delivery authenticates by its signature (``service.receive``); it has no use for what
every other request goes through — the session cookie, the sign-in guard, CSRF, the rate
limiter, the audit hook — and that machinery cost as much as the delivery itself. This
middleware answers the route before Flask dispatches: an app context, the same body
reader and service call as the view in ``routes.py``, the same problem+json for errors,
the same security headers. Any other request passes through untouched.
"""
from __future__ import annotations

import functools
import json
import logging

from flask import Flask
from werkzeug.datastructures import EnvironHeaders
from werkzeug.wrappers import Request

from stcloud import errors
from stcloud.web import security
from stcloud.webhooks import service

log = logging.getLogger(__name__)

PATH = "/api/webhooks/replicate"
# jsonify's encoding of a receipt (Flask's provider: sorted keys, ASCII; compact as jsonify
# makes it outside debug) without the provider's per-call keyword handling
_dumps = functools.partial(json.dumps, separators=(",", ":"), sort_keys=True, ensure_ascii=True)


def _read_sized(environ, limit: int) -> bytes | None:
    """A body with a ``Content-Length`` within ``limit``, read straight from the server's
    input (what Replicate sends); None for anything else (chunked, too large, malformed),
    which the route's reader takes. A body that ends early is a 400, as in the view."""
    if environ.get("HTTP_TRANSFER_ENCODING"):
        return None
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    if not 0 < length <= limit:
        return None
    data = environ["wsgi.input"].read(length)
    if len(data) != length:
        raise errors.BadRequest(f"the request body ended after {len(data)} of its {length} bytes")
    return data


class SignedDeliveries:
    def __init__(self, app: Flask, wsgi_app, read_body):
        self.app = app
        self.wsgi_app = wsgi_app
        self.read_body = read_body  # routes._read_body(req, limit)

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") != PATH:
            return self.wsgi_app(environ, start_response)
        with self.app.app_context():
            try:
                # WSGI joins repeated header lines into one value: the list getlist() makes
                forwarded = environ.get("HTTP_X_FORWARDED_FOR")
                receipt = service.receive(
                    headers=EnvironHeaders(environ),  # what Request.headers is, without a Request
                    peer=environ.get("REMOTE_ADDR"),  # the socket peer: no ProxyFix, see netfilter.py
                    forwarded_for=[forwarded] if forwarded is not None else [],
                    read_body=lambda limit: _read_sized(environ, limit) or self.read_body(Request(environ), limit))
                # The answer of every accepted delivery: the bytes and headers jsonify() and
                # security_headers() make, without building a Response object.
                body = (_dumps(receipt.to_dict()) + "\n").encode()
                start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                          *security.ALL_HEADERS.items()])
                return [body]
            except errors.StcloudError as err:
                body = err.to_problem()
                extra = {k: v for k, v in body.items() if k not in ("type", "title", "status", "detail")}
                resp = errors.problem(err.status, err.title, err.detail, err.headers, **extra)
            except Exception:  # noqa: BLE001 - answered like the app's own handler
                log.exception("unhandled error on POST %s", PATH)
                resp = errors.problem(500, "Internal server error", "An unexpected error occurred; see the server log.")
            security.security_headers(resp)
        return resp(environ, start_response)
