"""Settings: data-upload consent (Always Ask / Always Allow / Never Upload) and the instance's
public URL — ``GET|PUT /api/cloud/settings/consent``, ``GET|PUT /api/cloud/settings/public-url``
and the Settings page; the outbound proxy (``GET|PUT /api/cloud/settings/proxy``, shown on the
Providers page).

The public URL is one setting: it is stored with the Replicate provider config (where the
webhook endpoint is derived from; ``STCLOUD_PUBLIC_URL`` is the fallback) and mirrored in
the ``public_url`` key of the settings table for readers that look there.
"""
from __future__ import annotations

from flask import Blueprint, jsonify, make_response, render_template, request

from stcloud import proxy_settings
from stcloud.api import validation
from stcloud.api.schemas import jobs as schemas
from stcloud.api.spec import operation
from stcloud.errors import BadRequest, StcloudError
from stcloud.jobs import consent
from stcloud.providers import config as provider_config
from stcloud.web.htmx import render

api = Blueprint("settings_api", __name__, url_prefix="/api/cloud/settings")
pages = Blueprint("settings_pages", __name__)

def consent_view() -> dict:
    return consent.view()


# ---- API -------------------------------------------------------------------------------------

@api.get("/consent")
@operation(summary="The data-upload consent setting", responses={200: schemas.ConsentView}, tags=["settings"])
def get_consent():
    return jsonify(consent_view())


@api.put("/consent")
@operation(body=schemas.ConsentBody, summary="Set the data-upload consent setting",
           responses={200: schemas.ConsentView}, tags=["settings"])
def put_consent():
    consent.set_consent(validation.body(schemas.ConsentBody).consent)
    return jsonify(consent_view())


@api.get("/public-url")
@operation(summary="The instance's public URL", tags=["settings"], responses={200: schemas.PublicUrlView})
def get_public_url():
    return jsonify(provider_config.public_url_view())


@api.put("/public-url")
@operation(body=schemas.PublicUrlBody, summary="Set the instance's public URL (null clears it)", tags=["settings"],
           responses={200: schemas.PublicUrlView})
def put_public_url():
    body = validation.checked(schemas.PublicUrlBody)
    if "public_url" not in body:
        raise BadRequest('public_url is required: {"public_url": "https://training.example.com"} (or null)',
                         extra={"field": "public_url"})
    return jsonify(provider_config.set_public_url(body["public_url"]))


@api.get("/proxy")
@operation(summary="The outbound proxy", tags=["settings"], responses={200: schemas.ProxyView})
def get_proxy():
    return jsonify(proxy_settings.view())


@api.put("/proxy")
@operation(body=schemas.ProxyBody, summary="Set the outbound proxy (null clears it)", tags=["settings"],
           responses={200: schemas.ProxyView})
def put_proxy():
    body = validation.checked(schemas.ProxyBody)
    if "proxy_url" not in body:
        raise BadRequest('proxy_url is required: {"proxy_url": "http://proxy:3128", "no_proxy": "localhost"} '
                         "(null clears it)", extra={"field": "proxy_url"})
    return jsonify(proxy_settings.save(body["proxy_url"], body.get("no_proxy")))


# ---- pages -----------------------------------------------------------------------------------

def _fragment(template: str, http_status: int = 200, **ctx):
    resp = make_response(render_template(template, **ctx), http_status)
    resp.headers.add("Vary", "HX-Request")
    return resp


@pages.get("/settings")
def settings_page():
    return render("settings/index.html", consent=consent_view(), public=provider_config.public_url_view(), nav="settings",
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
        view = provider_config.set_public_url(raw)
    except StcloudError as err:
        return _fragment("settings/_public_url.html", 422, public={**provider_config.public_url_view(), "public_url": raw},
                         error=err.detail)
    return _fragment("settings/_public_url.html", public=view, saved=True)


@pages.get("/settings/proxy")
def proxy_fragment():
    return _fragment("settings/_proxy.html", proxy=proxy_settings.view())


@pages.post("/settings/proxy")
def proxy_form():
    raw = (request.form.get("proxy_url") or "").strip() or None
    no_proxy = (request.form.get("no_proxy") or "").strip()
    try:
        view = proxy_settings.save(raw, no_proxy)
    except StcloudError as err:
        return _fragment("settings/_proxy.html", 422, proxy={**proxy_settings.view(), "proxy_url": raw,
                                                              "no_proxy": no_proxy, "has_credentials": False},
                         error=err.detail)
    return _fragment("settings/_proxy.html", proxy=view, saved=True)


def init_app(app):
    app.register_blueprint(api)
    app.register_blueprint(pages)
