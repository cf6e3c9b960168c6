"""Builds provider adapters from the app's settings and registers them by name.

Imported by ``providers.routes.init_app`` so "replicate" is registered at app start. A
factory runs inside an app context; the adapters themselves never touch Flask or the db.
"""
from __future__ import annotations

from flask import current_app

from stcloud.errors import NotConfigured
from stcloud.providers import config, registry, slurm_factory
from stcloud.providers.replicate import TOKEN_MISSING, ReplicateService

TOKEN_HELP = (f"{TOKEN_MISSING}: export REPLICATE_API_TOKEN=r8_... before starting stcloud, "
              "or save a token on the Providers page")


def replicate_service(*, version: str | None = None, model: str | None = None) -> ReplicateService:
    """The Replicate adapter with the current settings. Raises NotConfigured ("REPLICATE_API_TOKEN
    not set") when there is no token."""
    token = config.replicate_token()
    if not token:
        raise NotConfigured(TOKEN_HELP, extra={"field": "token"})
    cfg = config.get_config("replicate")
    app_cfg = current_app.config
    return ReplicateService(
        token,
        base_url=config.replicate_base_url(),
        model=model or cfg.get("model"),
        version=version if version is not None else cfg.get("version"),
        timeout=float(app_cfg.get("REPLICATE_TIMEOUT", 30.0)),
        connect_timeout=float(app_cfg.get("REPLICATE_CONNECT_TIMEOUT", 5.0)),
        upload_timeout=float(app_cfg.get("REPLICATE_UPLOAD_TIMEOUT", 120.0)),
        retry_after_cap=float(app_cfg.get("REPLICATE_RETRY_AFTER_CAP", 2.0)),
        create_attempts=int(app_cfg.get("REPLICATE_CREATE_ATTEMPTS", 4)),
        backoff=float(app_cfg.get("REPLICATE_BACKOFF", 1.0)),
        max_retry_wait=float(app_cfg.get("REPLICATE_MAX_RETRY_WAIT", 30.0)),
    )


def _replicate_factory():
    return replicate_service()


def register_all() -> None:
    registry.register("replicate", _replicate_factory)
    registry.register("slurm", slurm_factory.create)


register_all()
