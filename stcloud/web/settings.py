"""Settings: data-upload consent (Always Ask / Always Allow / Never Upload) and the instance's
public URL — ``GET|PUT /api/cloud/settings/consent``, ``GET|PUT /api/cloud/settings/public-url``
and the Settings page.

The public URL is one setting: it is stored with the Replicate provider config (where the
webhook endpoint is derived from; ``STCLOUD_PUBLIC_URL`` is the fallback) and mirrored in
the ``public_url`` key of the settings table for readers that look there.
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, make_response, render_template, request

from stcloud import db
from stcloud import settings as settings_store
from stcloud.errors import BadRequest, StcloudError
from stcloud.jobs import consent
from stcloud.models import ProviderConfig
from stcloud.providers import config as provider_config
from stcloud.web.htmx import render
from stcloud.web.params import json_body

api = Blueprint("settings_api", __name__, url_prefix="/api/cloud/settings")
pages = Blueprint("settings_pages", __name__)

PUBLIC_URL_HELP = "set your public URL without the path; stcloud appends /api/webhooks/replicate"


def consent_view() -> dict:
    return consent.view()


def public_url_view() -> dict:
    cfg = provider_config.get_config("replicate")
    with db.session() as s:
        row = s.get(ProviderConfig, "replicate")
        stored = (row.config or {}).get("public_url") if row else None
    source = "settings" if stored else ("env" if current_app.config.get("STCLOUD_PUBLIC_URL") else None)
    return {"public_url": cfg.get("public_url"), "webhook_endpoint": provider_config.webhook_endpoint(cfg),
            "source": source, "help": PUBLIC_URL_HELP}


def set_public_url(value) -> dict:
    """Validate and store the public URL (None clears it). Raises BadRequest naming the field."""
    if value is not None and not isinstance(value, str):
        raise BadRequest("public_url must be a string URL or null", extra={"field": "public_url"})
    clean = provider_config.normalize_public_url(value)
    provider_config.update_config("replicate", {"public_url": clean})
    settings_store.put("public_url", clean)
    return public_url_view()


# ---- API -------------------------------------------------------------------------------------

@api.get("/consent")
def get_consent():
    return jsonify(consent_view())


@api.put("/consent")
def put_consent():
    body = json_body()
    if "consent" not in body:
        raise BadRequest('consent is required: {"consent": "ask" | "allow" | "deny"}', extra={"field": "consent"})
    consent.set_consent(body["consent"])
    return jsonify(consent_view())


@api.get("/public-url")
def get_public_url():
    return jsonify(public_url_view())


@api.put("/public-url")
def put_public_url():
    body = json_body()
    if "public_url" not in body:
        raise BadRequest('public_url is required: {"public_url": "https://training.example.com"} (or null)',
                         extra={"field": "public_url"})
    return jsonify(set_public_url(body["public_url"]))


# ---- pages -----------------------------------------------------------------------------------

def _fragment(template: str, http_status: int = 200, **ctx):
    resp = make_response(render_template(template, **ctx), http_status)
    resp.headers.add("Vary", "HX-Request")
    return resp


@pages.get("/settings")
def settings_page():
    return render("settings/index.html", consent=consent_view(), public=public_url_view(), nav="settings",
                  title="Settings")


@pages.post("/settings/consent")
def consent_form():
    try:
        consent.set_consent(request.form.get("consent"))
    except StcloudError as err:
        return _fragment("settings/_consent.html", 422, consent=consent_view(), error=err.detail)
    return _fragment("settings/_consent.html", consent=consent_view(), saved=True)


@pages.post("/settings/public-url")
def public_url_form():
    raw = (request.form.get("public_url") or "").strip() or None
    try:
        view = set_public_url(raw)
    except StcloudError as err:
        return _fragment("settings/_public_url.html", 422, public={**public_url_view(), "public_url": raw},
                         error=err.detail)
    return _fragment("settings/_public_url.html", public=view, saved=True)


def init_app(app):
    app.register_blueprint(api)
    app.register_blueprint(pages)
