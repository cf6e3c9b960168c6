"""Notification settings: which events, which channels. Stored in the settings table under
``notifications``; webhook URLs, the webhook signing secret and the SMTP password live in the
secret store (``STCLOUD_HOME/secrets.json``) and are never returned — views say ``*_set``."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy.orm import Session

from stcloud import secrets, settings
from stcloud.errors import BadRequest
from stcloud.notify import channels

SETTING_KEY = "notifications"
EVENTS = ("job.completed", "job.failed", "job.cancelled", "spend.warn", "spend.block", "approval.requested")
CHANNELS = ("slack", "discord", "email", "webhook")
SECRET_KEYS = {"slack.url": "notify.slack_url", "discord.url": "notify.discord_url",
               "webhook.url": "notify.webhook_url", "webhook.secret": "notify.webhook_secret",
               "email.password": "notify.smtp_password"}
EMAIL_FIELDS = ("host", "port", "sender", "to", "username", "starttls")


def _home() -> str:
    return current_app.config["STCLOUD_HOME"]


def secret(name: str) -> str | None:
    return secrets.get(_home(), SECRET_KEYS[name])


def stored(s: Session | None = None) -> dict:
    raw = settings.get(SETTING_KEY, s=s) or {}
    out = {"events": list(raw.get("events") or EVENTS)}
    for ch in CHANNELS:
        out[ch] = dict(raw.get(ch) or {})
        out[ch]["enabled"] = bool(out[ch].get("enabled"))
    return out


def enabled_channels(s: Session, event: str) -> list[str]:
    """The channels an ``event`` goes to (reads the settings row in ``s``; no file, no network)."""
    cfg = stored(s)
    if event not in cfg["events"]:
        return []
    return [ch for ch in CHANNELS if cfg[ch]["enabled"]]


def view() -> dict:
    cfg = stored()
    out: dict[str, Any] = {"events": cfg["events"], "all_events": list(EVENTS)}
    out["slack"] = {"enabled": cfg["slack"]["enabled"], "url_set": bool(secret("slack.url"))}
    out["discord"] = {"enabled": cfg["discord"]["enabled"], "url_set": bool(secret("discord.url"))}
    out["webhook"] = {"enabled": cfg["webhook"]["enabled"], "url_set": bool(secret("webhook.url")),
                      "secret_set": bool(secret("webhook.secret"))}
    email = cfg["email"]
    out["email"] = {"enabled": email["enabled"], **{k: email.get(k) for k in EMAIL_FIELDS},
                    "password_set": bool(secret("email.password"))}
    out["email"]["to"] = list(email.get("to") or [])
    out["email"]["starttls"] = bool(email.get("starttls"))
    return out


def _url(value: Any, field: str) -> str:
    if not isinstance(value, str) or urlsplit(value.strip()).scheme not in ("http", "https") \
            or not urlsplit(value.strip()).netloc:
        raise BadRequest(f"{field} must be an http(s) URL", extra={"field": field})
    return value.strip()


def _bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("1", "true", "on", "yes"):
        return True
    if value in ("0", "false", "off", "no", "", None):
        return False
    raise BadRequest(f"{field} must be true or false", extra={"field": field})


def _email(body: dict, current: dict) -> tuple[dict, dict]:
    """Validated e-mail settings and the secrets to store."""
    new = dict(current)
    secret_updates: dict[str, str | None] = {}
    for key in ("host", "sender", "username"):
        if key in body:
            value = body[key]
            if value is not None and not isinstance(value, str):
                raise BadRequest(f"email.{key} must be a string", extra={"field": f"email.{key}"})
            new[key] = (value or "").strip() or None
    if "port" in body:
        try:
            port = int(body["port"])
        except (TypeError, ValueError):
            port = 0
        if not 1 <= port <= 65535:
            raise BadRequest("email.port must be a port number (1-65535)", extra={"field": "email.port"})
        new["port"] = port
    if "to" in body:
        to = body["to"]
        to = [t.strip() for t in to.split(",")] if isinstance(to, str) else to
        if not isinstance(to, list) or not all(isinstance(t, str) and "@" in t for t in to if t):
            raise BadRequest("email.to must be a list of e-mail addresses", extra={"field": "email.to"})
        new["to"] = [t for t in to if t]
    if "starttls" in body:
        new["starttls"] = _bool(body["starttls"], "email.starttls")
    if "password" in body:
        secret_updates["email.password"] = body["password"] or None
    if "enabled" in body:
        new["enabled"] = _bool(body["enabled"], "email.enabled")
    if new.get("enabled"):
        for key in ("host", "sender"):
            if not new.get(key):
                raise BadRequest(f"email.{key} is required to enable e-mail", extra={"field": f"email.{key}"})
        if not new.get("to"):
            raise BadRequest("email.to is required to enable e-mail", extra={"field": "email.to"})
        if "@" not in new["sender"]:
            raise BadRequest("email.sender must be an e-mail address", extra={"field": "email.sender"})
        new.setdefault("port", 25)
    return new, secret_updates


def update(body: Any) -> dict:
    """Apply a partial update; returns the view (plus ``webhook_secret`` once when stcloud
    created the signing secret). Raises BadRequest naming the field; nothing is stored then."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = set(body) - {"events", *CHANNELS}
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0]!r}", extra={"field": sorted(unknown)[0]})
    cfg = stored()
    secret_updates: dict[str, str | None] = {}
    if "events" in body:
        events = body["events"]
        if not isinstance(events, list) or any(e not in EVENTS for e in events):
            raise BadRequest(f"events must be a list out of {', '.join(EVENTS)}", extra={"field": "events"})
        cfg["events"] = [e for e in EVENTS if e in events]
    for ch in ("slack", "discord", "webhook"):
        part = body.get(ch)
        if part is None:
            continue
        if not isinstance(part, dict):
            raise BadRequest(f"{ch} must be an object", extra={"field": ch})
        if "url" in part:
            secret_updates[f"{ch}.url"] = _url(part["url"], f"{ch}.url") if part["url"] else None
        if ch == "webhook" and part.get("secret"):
            if not str(part["secret"]).startswith(channels.SECRET_PREFIX):
                raise BadRequest("webhook.secret must start with whsec_", extra={"field": "webhook.secret"})
            secret_updates["webhook.secret"] = part["secret"]
        if "enabled" in part:
            cfg[ch]["enabled"] = _bool(part["enabled"], f"{ch}.enabled")
        url_after = secret_updates.get(f"{ch}.url", secret(f"{ch}.url") if f"{ch}.url" not in secret_updates else None)
        if cfg[ch]["enabled"] and not url_after:
            raise BadRequest(f"{ch}.url is required to enable {ch}", extra={"field": f"{ch}.url"})
    if body.get("email") is not None:
        if not isinstance(body["email"], dict):
            raise BadRequest("email must be an object", extra={"field": "email"})
        cfg["email"], more = _email(body["email"], cfg["email"])
        secret_updates.update(more)
    created_secret = None
    if cfg["webhook"]["enabled"] and not secret_updates.get("webhook.secret") and not secret("webhook.secret"):
        created_secret = secret_updates["webhook.secret"] = channels.new_webhook_secret()
    for name, value in secret_updates.items():
        if value:
            secrets.put(_home(), SECRET_KEYS[name], value)
        else:
            secrets.delete(_home(), SECRET_KEYS[name])
    settings.put(SETTING_KEY, cfg)
    out = view()
    if created_secret:
        out["webhook_secret"] = created_secret  # shown once, like an API key
    return out
