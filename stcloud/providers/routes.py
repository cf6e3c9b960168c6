"""Providers: ``/api/cloud/providers/*`` (the seeds' API reference) and the Providers page.

The Replicate token is write-only: stored in ``secrets.json`` (0600), reported only as
"set / from env / stored", never returned and never logged — not even in error messages.
"""
from __future__ import annotations

from flask import (
    Blueprint,
    current_app,
    jsonify,
    make_response,
    render_template,
    request,
)

from stcloud import secrets
from stcloud import settings as settings_store
from stcloud.api import validation
from stcloud.api.schemas import settings as schemas
from stcloud.api.spec import operation
from stcloud.errors import (
    BadRequest,
    NotConfigured,
    ProviderError,
    RateLimited,
    StcloudError,
)
from stcloud.models import utcnow
from stcloud.providers import config, registry
from stcloud.providers import replicate_status as status_service
from stcloud.providers.replicate import (
    DEFAULT_HARDWARE,
    TOKEN_MISSING,
    ReplicateAPIError,
)
from stcloud.web import auth
from stcloud.web.htmx import render

api = Blueprint("providers_api", __name__, url_prefix="/api/cloud/providers")
pages = Blueprint("providers_pages", __name__)

PUBLIC_URL_HELP = "set your public URL without the path; stcloud appends /api/webhooks/replicate"
BILLING_NOTE = ("Replicate has no API for the account balance, so balance is null. Check it at "
                "https://replicate.com/account/billing. The spend figures are stcloud's own records of "
                "the jobs it ran (predict_time × the rate recorded on each job).")
TOKEN_PREFIX = "r8_"


# ---- helpers (the routes stay thin) ---------------------------------------------------------

def _service():
    """The Replicate adapter, with a token. Raises NotConfigured ("REPLICATE_API_TOKEN not set")."""
    service = registry.get("replicate")
    if service.not_ready_reason():
        raise NotConfigured(service.not_ready_reason(), extra={"field": "token"})
    return service


def _provider_error(exc: ReplicateAPIError) -> StcloudError:
    if exc.kind == "rate_limited":
        headers = {"Retry-After": str(int(exc.retry_after))} if exc.retry_after else None
        return RateLimited(f"Replicate: {exc}", headers=headers)
    return ProviderError(f"Replicate: {exc}", extra={"kind": exc.kind, "provider_status": exc.status})


def _pricing():
    """Prices and spend (``stcloud.costs.pricing``, registered by costs: it prices through the
    adapters, so this page reaches it through the app instead of importing it)."""
    return current_app.extensions[config.PRICING]


def replicate_view() -> dict:
    cfg = config.get_config("replicate")
    visible = {k: v for k, v in cfg.items() if "secret" not in k and "token" not in k}
    service = registry.get("replicate")
    profiles = []
    pricing = _pricing()
    catalogue = pricing.profiles("replicate")
    for hw in pricing.hardware("replicate", service):
        rate = hw["rate"]
        profiles.append({"name": hw["name"], "label": hw["label"],
                         "vram_gb": catalogue.get(hw["name"], {}).get("vram_gb"),
                         "usd_per_second": rate, "usd_per_hour": round(rate * 3600, 4) if rate is not None else None,
                         "default": hw["name"] == (cfg.get("hardware") or DEFAULT_HARDWARE)})
    return {
        "provider": "replicate",
        **visible,
        "webhook_url": cfg.get("public_url"),  # the seeds' name for the same setting
        "webhook_endpoint": config.webhook_endpoint(cfg),
        "public_url_help": PUBLIC_URL_HELP,
        "token_set": bool(config.replicate_token()),
        "token_source": config.replicate_token_source(),
        "hardware_profiles": profiles,
    }


def _parse_rates(raw) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise BadRequest("hardware_rates must be an object of hardware -> $/second (or {usd_per_hour: n})",
                         extra={"field": "hardware_rates"})
    out = {}
    for hw, value in raw.items():
        if not isinstance(hw, str) or not hw or len(hw) > 64:
            raise BadRequest(f"hardware_rates: bad hardware name {hw!r}", extra={"field": "hardware_rates"})
        if isinstance(value, dict):
            if "usd_per_second" in value:
                value = value["usd_per_second"]
            elif "usd_per_hour" in value and isinstance(value["usd_per_hour"], (int, float)):
                value = value["usd_per_hour"] / 3600
            else:
                raise BadRequest(f"hardware_rates.{hw} needs usd_per_second or usd_per_hour",
                                 extra={"field": "hardware_rates"})
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < 100):
            raise BadRequest(f"hardware_rates.{hw} must be a positive number of dollars per second",
                             extra={"field": "hardware_rates"})
        out[hw] = float(value)
    return out


def update_replicate(changes: dict) -> dict:
    """Validate everything first, then write (nothing half-written). Raises BadRequest."""
    changes = dict(changes)
    rates = _parse_rates(changes.pop("hardware_rates")) if "hardware_rates" in changes else {}
    if not changes and not rates:
        raise BadRequest("nothing to change: send at least one setting")
    clean = config.validate_replicate(changes)
    if "hardware" in clean:
        known = set(_pricing().profiles("replicate")) | set(rates)
        if clean["hardware"] not in known:
            raise BadRequest(f"hardware: unknown profile {clean['hardware']!r}; expected one of "
                             f"{', '.join(sorted(known))}", extra={"field": "hardware"})
    if clean:
        config.update_config("replicate", changes)
    if "public_url" in clean:
        settings_store.put("public_url", clean["public_url"])
    if rates:
        _pricing().set_rates("replicate", rates, note="set via PUT /api/cloud/providers/replicate")
    return replicate_view()


def save_token(token) -> dict:
    """Store the Replicate token (0600). Raises BadRequest without echoing the value."""
    if not isinstance(token, str) or not token.strip():
        raise BadRequest("token is required (a Replicate API token starting with r8_)", extra={"field": "token"})
    token = token.strip()
    if not token.startswith(TOKEN_PREFIX):
        raise BadRequest("token must start with r8_ (copy it from https://replicate.com/account/api-tokens)",
                         extra={"field": "token"})
    if any(c.isspace() for c in token) or not token.isprintable() or len(token) > 200 or len(token) < 8:
        raise BadRequest("token looks malformed (spaces, line breaks or a wrong length); paste it again",
                         extra={"field": "token"})
    secrets.put(current_app.config["STCLOUD_HOME"], config.TOKEN_SECRET_KEY, token)
    return token_view()


def delete_token() -> dict:
    secrets.delete(current_app.config["STCLOUD_HOME"], config.TOKEN_SECRET_KEY)
    return token_view()


def token_view() -> dict:
    source = config.replicate_token_source()
    view = {"token_set": source is not None, "token_source": source}
    if source == "env":
        view["note"] = "REPLICATE_API_TOKEN is set in the environment and takes precedence over a stored token"
    elif source is None:
        view["note"] = TOKEN_MISSING
    return view


def validate() -> dict:
    """Raises NotConfigured (no token) or ProviderError (unreachable)."""
    service = _service()
    source = config.replicate_token_source()
    try:
        account = service.validate_credentials()
    except ReplicateAPIError as exc:
        if exc.kind == "auth":
            return {"valid": False, "error": str(exc), "token_source": source}
        raise _provider_error(exc) from None
    return {"valid": True, "account": account, "token_source": source}


def versions() -> dict:
    service = _service()
    try:
        items = service.list_versions()
    except ReplicateAPIError as exc:
        raise _provider_error(exc) from None
    pinned = service.version
    newest = items[0]["id"] if items else None
    for v in items:
        v["newest"] = v["id"] == newest
        v["pinned"] = v["id"] == pinned
    return {"model": service.model, "pinned": pinned, "newest": newest,
            "in_use": pinned or newest, "versions": items}


def billing() -> dict:
    spent = _pricing().spend("replicate")
    return {"provider": "replicate", "balance": None, "currency": "USD", "note": BILLING_NOTE,
            "billing_url": "https://replicate.com/account/billing", **spent,
            "as_of": utcnow().isoformat().replace("+00:00", "Z")}


def provider_view(name: str) -> dict:
    """One provider: its capabilities and (for a provider with declared settings) their values."""
    service = registry.get(name)
    view = service.capabilities()
    if service.settings_fields():
        view["values"] = config.declared_values(name, service.settings_fields())
    return view


def providers_list() -> list[dict]:
    out = []
    for name in registry.display_order():
        item = provider_view(name)
        if name == "replicate":
            rep = replicate_view()
            item.update(token_source=rep["token_source"], model=rep.get("model"), version=rep.get("version"),
                        hardware=rep.get("hardware"), webhook_endpoint=rep["webhook_endpoint"])
            if not rep["token_set"]:
                item["note"] = TOKEN_MISSING
        out.append(item)
    return out


# ---- API -------------------------------------------------------------------------------------

@api.get("")
@operation(summary="Every provider and what it supports", tags=["providers"], responses={200: schemas.ProviderList})
def list_providers():
    return jsonify({"providers": providers_list()})


@api.get("/<name>")
@operation(summary="One provider and its settings", tags=["providers"], responses={200: schemas.ProviderSettings})
def get_provider(name):
    registry.validate_name(name)
    if name == "replicate":
        return jsonify(replicate_view())
    return jsonify({"provider": name, **provider_view(name)})


@api.put("/<name>")
@operation(body=schemas.ProviderSettingsBody, summary="Change a provider's settings", tags=["providers"],
           responses={200: schemas.ProviderSettings})
def put_provider(name):
    registry.validate_name(name)
    body = validation.checked(schemas.ProviderSettingsBody)
    if name == "replicate":
        return jsonify(update_replicate(body))
    config.update_declared(name, registry.get(name).settings_fields(), body)
    return jsonify({"provider": name, **provider_view(name)})


@api.get("/replicate/versions")
@operation(summary="The trainer model's versions on Replicate", tags=["providers"],
           responses={200: schemas.ReplicateVersions})
def replicate_versions():
    return jsonify(versions())


@api.get("/replicate/validate")
@operation(summary="Check the Replicate token", tags=["providers"], responses={200: schemas.ReplicateCheck})
def replicate_validate():
    return jsonify(validate())


@api.get("/replicate/billing")
@operation(summary="Replicate spend (stcloud's own records)", tags=["providers"],
           responses={200: schemas.ReplicateBilling})
def replicate_billing():
    return jsonify(billing())


@api.get("/replicate/status")
@operation(summary="Replicate's service status", tags=["providers"], responses={200: schemas.ReplicateStatus})
def replicate_status():
    return jsonify(status_service.status_page())


@api.put("/replicate/token")
@operation(body=schemas.TokenBody, summary="Store the Replicate API token", tags=["providers"],
           responses={200: schemas.TokenView})
def put_token():
    return jsonify(save_token(validation.body(schemas.TokenBody).token))


@api.delete("/replicate/token")
@operation(summary="Forget the stored Replicate token", tags=["providers"], responses={200: schemas.TokenView})
def del_token():
    return jsonify(delete_token())


# ---- pages -----------------------------------------------------------------------------------

def _fragment(template: str, http_status: int = 200, **ctx):
    resp = make_response(render_template(template, **ctx), http_status)
    resp.headers.add("Vary", "HX-Request")
    return resp


@pages.get("/providers")
def providers_page():
    return render("providers/index.html", view=replicate_view(), providers=providers_list(),
                  nav="providers", title="Providers")


@pages.post("/providers/<name>/settings")
def declared_settings_form(name):
    registry.validate_name(name)
    fields = registry.get(name).settings_fields()
    changes = {f.name: request.form.get(f.name) for f in fields
               if f.name in request.form and not (f.kind == "secret" and not request.form.get(f.name))}
    for f in fields:
        if f.kind == "boolean":
            changes[f.name] = f.name in request.form
    try:
        config.update_declared(name, fields, changes)
    except StcloudError as err:
        return _fragment("providers/_generic.html", 422, p=provider_view(name), error=err.detail,
                         field=err.extra.get("field"))
    return _fragment("providers/_generic.html", p=provider_view(name), saved=True)


@pages.post("/providers/replicate/token")
def token_form():
    try:
        view = save_token(request.form.get("token", ""))
    except StcloudError as err:
        return _fragment("providers/_token.html", 422, token=token_view(), error=err.detail)
    return _fragment("providers/_token.html", token=view, saved=True)


@pages.post("/providers/replicate/token/delete")
def token_delete_form():
    return _fragment("providers/_token.html", token=delete_token(), deleted=True)


@pages.get("/providers/replicate/validate")
def validate_fragment():
    try:
        result = validate()
    except StcloudError as err:
        result = {"valid": False, "error": err.detail}
    return _fragment("providers/_validate.html", result=result)


@pages.get("/providers/replicate/versions")
def versions_fragment():
    try:
        data, error = versions(), None
    except StcloudError as err:
        data, error = None, err.detail
    return _fragment("providers/_versions.html", data=data, error=error)


@pages.get("/providers/replicate/status")
def status_fragment():
    return _fragment("providers/_status.html", status=status_service.status_page())


def _lines(text: str) -> list[str]:
    return [p.strip() for chunk in (text or "").splitlines() for p in chunk.split(",") if p.strip()]


@pages.post("/providers/replicate/settings")
def settings_form():
    f = request.form
    changes = {
        "public_url": f.get("public_url", "").strip() or None,
        "webhook_allowed_ips": _lines(f.get("webhook_allowed_ips", "")),
        "trusted_proxies": _lines(f.get("trusted_proxies", "")),
        "model": f.get("model", "").strip() or "simpletuner/advanced-trainer",
        "version": f.get("version", "").strip() or None,
        "hardware": f.get("hardware", "").strip() or DEFAULT_HARDWARE,
    }
    if "webhook_require_signature_present" in f:
        changes["webhook_require_signature"] = f.get("webhook_require_signature") in ("1", "on", "true")
    try:
        view = update_replicate(changes)
    except StcloudError as err:
        view = {**replicate_view(), **{k: v for k, v in changes.items()}}
        return _fragment("providers/_settings.html", 422, view=view, error=err.detail,
                         field=err.extra.get("field"))
    return _fragment("providers/_settings.html", view=view, saved=True)


def _trusted_proxies() -> list[str]:
    return config.get_config("replicate").get("trusted_proxies") or []


def init_app(app):
    # The instance-wide proxy trust is stored with these settings; the web floor reads it.
    app.extensions[auth.TRUSTED_PROXIES] = _trusted_proxies
    app.register_blueprint(api)
    app.register_blueprint(pages)
