"""Builds the Replicate adapter from the app's settings (entry point ``replicate`` in the
``stcloud.providers`` group). Runs inside an app context; the adapter itself never touches
Flask or the database."""
from __future__ import annotations

from flask import current_app

from stcloud import proxy_settings
from stcloud.providers import config
from stcloud.providers.replicate import MAX_UPLOAD_BYTES, TOKEN_HELP, ReplicateService

__all__ = ["TOKEN_HELP", "create"]


def create() -> ReplicateService:
    """The Replicate adapter with the current token, model, version pin and webhook URL.
    Without a token it still answers what it is (``not_ready_reason`` says why)."""
    cfg = config.get_config("replicate")
    app_cfg = current_app.config
    base_url = config.replicate_base_url()
    return ReplicateService(
        config.replicate_token(),
        base_url=base_url,
        proxy=proxy_settings.current().for_url(base_url),
        model=cfg.get("model"),
        version=cfg.get("version"),
        webhook_url=config.webhook_endpoint(cfg),
        default_hardware=cfg.get("hardware"),
        max_upload_bytes=int(app_cfg.get("REPLICATE_MAX_UPLOAD_BYTES") or MAX_UPLOAD_BYTES),
        timeout=float(app_cfg.get("REPLICATE_TIMEOUT", 30.0)),
        connect_timeout=float(app_cfg.get("REPLICATE_CONNECT_TIMEOUT", 5.0)),
        upload_timeout=float(app_cfg.get("REPLICATE_UPLOAD_TIMEOUT", 120.0)),
        retry_after_cap=float(app_cfg.get("REPLICATE_RETRY_AFTER_CAP", 2.0)),
        create_attempts=int(app_cfg.get("REPLICATE_CREATE_ATTEMPTS", 4)),
        backoff=float(app_cfg.get("REPLICATE_BACKOFF", 1.0)),
        max_retry_wait=float(app_cfg.get("REPLICATE_MAX_RETRY_WAIT", 30.0)),
    )
