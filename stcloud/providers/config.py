"""Provider settings (``provider_configs`` rows) and the Replicate token.

Shared by the Replicate adapter factory, the poller and the webhook receiver. Validation
raises ``BadRequest`` naming the field.
"""
from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlparse

from flask import current_app

from stcloud import db, secrets
from stcloud import settings as settings_store
from stcloud.errors import BadRequest
from stcloud.models import ProviderConfig
from stcloud.providers.base import SettingField

# app.extensions key: the module the Providers page prices with (``stcloud.costs.pricing``,
# registered by costs, which itself prices through the adapters).
PRICING = "stcloud.provider_pricing"

TOKEN_SECRET_KEY = "replicate_api_token"

REPLICATE_DEFAULTS: dict = {
    "model": "simpletuner/advanced-trainer",
    "version": None,  # pinned version id; None = newest
    "hardware": "gpu-l40s",
    "public_url": None,
    "webhook_allowed_ips": [],
    "webhook_require_signature": True,
    "trusted_proxies": [],
}
DEFAULTS = {"replicate": REPLICATE_DEFAULTS}


def _networks(field: str, value) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{field} must be a list of IP addresses or CIDR ranges", extra={"field": field})
    out = []
    for v in value:
        try:
            out.append(str(ipaddress.ip_network(v.strip(), strict=False)))
        except ValueError:
            raise BadRequest(f"{field}: {v!r} is not an IP address or CIDR range", extra={"field": field}) from None
    return out


def normalize_public_url(value) -> str | None:
    """A base URL without a path (stcloud appends /api/webhooks/replicate itself)."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise BadRequest("public_url must be a string URL", extra={"field": "public_url"})
    parsed = urlparse(value.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise BadRequest("public_url must be an http(s) URL like https://training.example.com",
                         extra={"field": "public_url"})
    path = parsed.path.rstrip("/")
    if path.endswith("/api/webhooks/replicate"):
        path = path[: -len("/api/webhooks/replicate")]
    if parsed.query or parsed.fragment:
        raise BadRequest("public_url must not have a query or fragment", extra={"field": "public_url"})
    return f"{parsed.scheme}://{parsed.netloc}{path}"


def validate_replicate(changes: dict) -> dict:
    out: dict = {}
    for key, value in changes.items():
        if key in ("public_url", "webhook_url"):
            out["public_url"] = normalize_public_url(value)
        elif key in ("webhook_allowed_ips", "trusted_proxies"):
            out[key] = _networks(key, value)
        elif key == "webhook_require_signature":
            if not isinstance(value, bool):
                raise BadRequest(f"{key} must be true or false", extra={"field": key})
            out[key] = value
        elif key == "model":
            if not isinstance(value, str) or value.count("/") != 1 or not all(value.split("/")):
                raise BadRequest("model must look like owner/name", extra={"field": key})
            out[key] = value
        elif key == "version":
            if value not in (None, "") and (not isinstance(value, str) or not value.isalnum()):
                raise BadRequest("version must be a version id or null (newest)", extra={"field": key})
            out[key] = value or None
        elif key == "hardware":
            if not isinstance(value, str) or not value:
                raise BadRequest("hardware must be a hardware profile name", extra={"field": key})
            out[key] = value
        else:
            raise BadRequest(f"unknown setting {key!r}", extra={"field": key})
    return out


def get_config(provider: str) -> dict:
    with db.session() as s:
        row = s.get(ProviderConfig, provider)
        stored = dict(row.config) if row else {}
    cfg = {**DEFAULTS.get(provider, {}), **stored}
    if provider == "replicate":
        env_public = current_app.config.get("STCLOUD_PUBLIC_URL")
        if env_public and not cfg.get("public_url"):
            cfg["public_url"] = normalize_public_url(env_public)
    return cfg


def update_config(provider: str, changes: dict, validator=None) -> dict:
    clean = (validator or (validate_replicate if provider == "replicate" else (lambda c: c)))(changes)
    with db.transaction() as s:
        row = s.get(ProviderConfig, provider)
        if row is None:
            row = ProviderConfig(provider=provider, config={})
            s.add(row)
        row.config = {**(row.config or {}), **clean}
    return get_config(provider)


PUBLIC_URL_HELP = "set your public URL without the path; stcloud appends /api/webhooks/replicate"


def public_url_view() -> dict:
    """The instance's public URL (stored with the Replicate config, where the webhook
    endpoint is derived from; ``STCLOUD_PUBLIC_URL`` is the fallback) and where it comes from."""
    cfg = get_config("replicate")
    with db.session() as s:
        row = s.get(ProviderConfig, "replicate")
        stored = (row.config or {}).get("public_url") if row else None
    source = "settings" if stored else ("env" if current_app.config.get("STCLOUD_PUBLIC_URL") else None)
    return {"public_url": cfg.get("public_url"), "webhook_endpoint": webhook_endpoint(cfg),
            "source": source, "help": PUBLIC_URL_HELP}


def set_public_url(value) -> dict:
    """Validate and store the public URL (None clears it); mirrored in the ``public_url``
    setting for readers that look there. Raises BadRequest naming the field."""
    if value is not None and not isinstance(value, str):
        raise BadRequest("public_url must be a string URL or null", extra={"field": "public_url"})
    clean = normalize_public_url(value)
    update_config("replicate", {"public_url": clean})
    settings_store.put("public_url", clean)
    return public_url_view()


def webhook_endpoint(cfg: dict | None = None) -> str | None:
    cfg = cfg if cfg is not None else get_config("replicate")
    return f"{cfg['public_url']}/api/webhooks/replicate" if cfg.get("public_url") else None


def replicate_token() -> str | None:
    """``REPLICATE_API_TOKEN`` wins over the stored token."""
    return os.environ.get("REPLICATE_API_TOKEN") or secrets.get(current_app.config["STCLOUD_HOME"], TOKEN_SECRET_KEY)


def replicate_token_source() -> str | None:
    if os.environ.get("REPLICATE_API_TOKEN"):
        return "env"
    return "stored" if secrets.get(current_app.config["STCLOUD_HOME"], TOKEN_SECRET_KEY) else None


def replicate_base_url() -> str:
    return os.environ.get("REPLICATE_BASE_URL") or current_app.config.get("REPLICATE_BASE_URL") or "https://api.replicate.com"


# ---- declared settings (plugin providers) ---------------------------------------------------

def _secret_key(provider: str, name: str) -> str:
    return f"provider:{provider}:{name}"


def get_secret(provider: str, name: str) -> str | None:
    """A write-only (``secret``) setting of ``provider``, for its factory."""
    return secrets.get(current_app.config["STCLOUD_HOME"], _secret_key(provider, name))


def declared_values(provider: str, fields: tuple[SettingField, ...]) -> dict:
    """The current values of declared settings (defaults filled in; secrets as set / not set)."""
    stored = get_config(provider)
    out = {}
    for f in fields:
        if f.kind == "secret":
            out[f.name] = {"set": bool(get_secret(provider, f.name))}
        else:
            out[f.name] = stored.get(f.name, f.default)
    return out


def update_declared(provider: str, fields: tuple[SettingField, ...], changes) -> dict:
    """Validate ``changes`` against the declared settings, then store them (secrets in
    ``secrets.json``): nothing is written when one is bad. Raises BadRequest naming the field."""
    if not isinstance(changes, dict) or not changes:
        raise BadRequest("send at least one setting as a JSON object")
    by_name = {f.name: f for f in fields}
    clean: dict = {}
    for key, value in changes.items():
        spec = by_name.get(key)
        if spec is None:
            known = ", ".join(by_name) or "none"
            raise BadRequest(f"unknown setting {key!r} for {provider}; its settings: {known}", extra={"field": key})
        try:
            clean[key] = spec.parse(value)
        except ValueError as exc:
            raise BadRequest(str(exc), extra={"field": key}) from None
    home = current_app.config["STCLOUD_HOME"]
    plain = {k: v for k, v in clean.items() if by_name[k].kind != "secret"}
    if plain:
        update_config(provider, plain, validator=lambda c: c)
    for key, value in clean.items():
        if by_name[key].kind == "secret":
            if value:
                secrets.put(home, _secret_key(provider, key), value)
            else:
                secrets.delete(home, _secret_key(provider, key))
    return declared_values(provider, fields)
