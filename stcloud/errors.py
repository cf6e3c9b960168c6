"""Domain exceptions and their rendering: problem+json for the API, a page for people.

Services raise these; routes never build error responses by hand.
"""
from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class StcloudError(Exception):
    status = 400
    title = "Bad request"
    type = "about:blank"

    def __init__(self, detail: str | None = None, *, status: int | None = None,
                 title: str | None = None, extra: dict | None = None, headers: dict | None = None):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        if status is not None:
            self.status = status
        if title is not None:
            self.title = title
        self.extra = extra or {}
        self.headers = headers or {}

    def to_problem(self) -> dict:
        body = {"type": self.type, "title": self.title, "status": self.status, "detail": self.detail}
        body.update(self.extra)
        return body


class BadRequest(StcloudError):
    status, title = 400, "Bad request"


class ValidationError(StcloudError):
    status, title = 422, "Validation failed"


class Unauthorized(StcloudError):
    status, title = 401, "Unauthorized"


class Forbidden(StcloudError):
    status, title = 403, "Forbidden"


class NotFound(StcloudError):
    status, title = 404, "Not found"


class Conflict(StcloudError):
    status, title = 409, "Conflict"


class PaymentRequired(StcloudError):
    status, title = 402, "Spending limit reached"


class TooLarge(StcloudError):
    status, title = 413, "Payload too large"


class RateLimited(StcloudError):
    status, title = 429, "Too many requests"


class ProviderError(StcloudError):
    """The provider failed or is unreachable (502) — or answered with its own status."""

    status, title = 502, "Provider error"


class NotConfigured(StcloudError):
    status, title = 400, "Not configured"


class Unavailable(StcloudError):
    status, title = 503, "Service unavailable"


def wants_json() -> bool:
    if request.path.startswith("/api/") or request.path == "/healthz":
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and not request.headers.get("HX-Request")


def problem(status: int, title: str, detail: str, headers: dict | None = None, **extra):
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    body.update(extra)
    resp = jsonify(body)
    resp.status_code = status
    resp.mimetype = "application/problem+json"
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def init_app(app: Flask) -> None:
    @app.errorhandler(StcloudError)
    def _domain(err: StcloudError):
        if wants_json():
            body = err.to_problem()
            extra = {k: v for k, v in body.items() if k not in ("type", "title", "status", "detail")}
            return problem(err.status, err.title, err.detail, err.headers, **extra)
        return _page(err.status, err.title, err.detail)

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException):
        if wants_json():
            return problem(err.code or 500, err.name, err.description or err.name)
        return _page(err.code or 500, err.name, err.description or "")

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        if wants_json():
            return problem(500, "Internal server error", "An unexpected error occurred; see the server log.")
        return _page(500, "Internal server error", "An unexpected error occurred; see the server log.")


def _page(status: int, title: str, detail: str):
    if request.headers.get("HX-Request"):
        html = render_template("_error.html", status=status, title=title, detail=detail)
        return html, status
    return render_template("error.html", status=status, title=title, detail=detail), status
