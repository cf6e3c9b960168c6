"""The factory named by the entry point. stcloud calls it inside an app context, so it may
read the provider's settings (saved with ``PUT /api/cloud/providers/example`` or on the
Providers page); the adapter it builds never touches Flask or the database."""
from __future__ import annotations

from pathlib import Path

from flask import current_app

from stcloud.providers import config
from stcloud_example_provider.adapter import ExampleProvider


def create() -> ExampleProvider:
    settings = config.get_config("example")
    return ExampleProvider(
        str(Path(current_app.config["STCLOUD_HOME"]) / "example-provider"),
        seconds_per_step=settings.get("seconds_per_step") or 0.05,
        usd_per_hour=settings["usd_per_hour"] if settings.get("usd_per_hour") is not None else 1.80,
        api_key=config.get_secret("example", "api_key"),
    )
