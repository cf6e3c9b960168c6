"""Webhook routes.

- ``POST /api/webhooks/replicate`` — machine route (no admin auth, no CSRF): it
  authenticates by allowlist + Standard Webhooks signature itself.
- ``POST /api/cloud/providers/replicate/webhook-test`` — admin: signed test delivery to the
  configured public URL; JSON, or the result fragment for htmx.
- ``GET /api/cloud/webhooks/deliveries?limit=`` — admin: recent deliveries (JSON).
- ``GET /providers/webhooks`` — the deliveries table (page, or fragment for htmx); the
  Providers page includes ``webhooks/_providers_section.html`` which loads it.
"""
from __future__ import annotations

from flask import Blueprint, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from stcloud.api import validation
from stcloud.api.schemas import settings as schemas
from stcloud.api.schemas import webhooks as answers
from stcloud.api.spec import operation
from stcloud.errors import NotConfigured, TooLarge
from stcloud.web import auth
from stcloud.web.htmx import is_fragment_request, render
from stcloud.web.params import int_arg
from stcloud.webhooks import generic, service, shortcut

hook = auth.machine(Blueprint("webhooks", __name__))
admin = Blueprint("webhooks_admin", __name__)
pages = Blueprint("webhooks_pages", __name__)


def _read_body(req, limit: int) -> bytes:
    """The raw body of ``req``, read once, at most ``limit`` bytes (Content-Length or chunked)."""
    # Trap: for a chunked body werkzeug's limited stream stops quietly AT the maximum
    # (the body comes back truncated, no 413). Allow one byte more and look for it.
    req.max_content_length = limit + 1
    try:
        data = req.get_data(cache=False)
    except RequestEntityTooLarge:
        data = None
    if data is None or len(data) > limit:
        raise TooLarge(f"webhook body is larger than the {limit / (1024 * 1024):g} MiB limit",
                       extra={"limit_bytes": limit})
    return data


@hook.post("/api/webhooks/replicate")
@operation(body=answers.ProviderEvent, security="webhook", summary="Replicate's prediction webhook (signed: webhook-id, "
           "webhook-timestamp, webhook-signature)", tags=["webhooks"], responses={200: answers.Receipt})
def replicate_webhook():
    receipt = service.receive(
        headers=request.headers,
        peer=request.remote_addr,  # the socket peer: no ProxyFix, see netfilter.py
        forwarded_for=request.headers.getlist("X-Forwarded-For"),
        read_body=lambda limit: _read_body(request, limit),
    )
    return jsonify(receipt.to_dict())


@hook.post("/api/webhooks/<provider>")
@operation(body=answers.ProviderEvent, security="webhook", summary="Job events of a provider that takes webhooks "
           "(signed with Standard Webhooks under the provider's secret)", tags=["webhooks"],
           responses={200: answers.Receipt})
def provider_webhook(provider):
    receipt = generic.receive(provider, headers=request.headers, read_body=lambda limit: _read_body(request, limit))
    return jsonify(receipt.to_dict())


def _limit() -> int:
    return int_arg("limit", 20, 1, 200)


@admin.post("/api/cloud/providers/replicate/webhook-test")
@operation(summary="Send a signed test event to this instance's public webhook URL", tags=["webhooks"],
           responses={200: answers.TestReport})
def webhook_test():
    if not is_fragment_request():
        return jsonify(service.send_test())
    try:
        report = service.send_test()
    except NotConfigured as err:  # htmx does not swap 4xx: show the message in place
        report = {"ok": False, "reachable": None, "detail": err.detail}
    # the deliveries table listens for this and reloads at once
    return render("webhooks/_test_result.html", report=report, headers={"HX-Trigger": "webhooks-changed"})


@admin.get("/api/cloud/webhooks/deliveries")
@operation(query=schemas.DeliveriesQuery, summary="The last webhook deliveries", tags=["webhooks"],
           responses={200: answers.Deliveries})
def deliveries():
    validation.query(schemas.DeliveriesQuery)
    limit = _limit()
    return jsonify({"deliveries": service.recent_deliveries(limit), "limit": limit})


@pages.get("/providers/webhooks")
def deliveries_page():
    return render("webhooks/deliveries.html", block="deliveries", nav="providers",
                  deliveries=service.recent_deliveries(_limit()))


def init_app(app):
    # A signed machine route: the signature is its gate, no per-address rate limit (the
    # limiter's bookkeeping was a tenth of a delivery's cost; a filter skips it earliest).
    app.extensions["stcloud.limiter"].request_filter(lambda: request.blueprint == hook.name)
    app.register_blueprint(hook)
    # Deliveries are answered before Flask dispatches (shortcut.py, same reader and service);
    # the view above stays the route's endpoint (url_for, the role policy, the OpenAPI list).
    app.wsgi_app = shortcut.SignedDeliveries(app, app.wsgi_app, _read_body)
    app.register_blueprint(admin)
    app.register_blueprint(pages)
