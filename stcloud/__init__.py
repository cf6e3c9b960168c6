"""stcloud: run and track model-training jobs on cloud GPUs and self-hosted workers."""
from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from stcloud import resources

if TYPE_CHECKING:  # Flask is imported by create_app: the trainer and the worker agent, which
    from flask import Flask  # live in this package, start without it (issue 16: first step)

__version__ = "0.1.0"

ROOT = resources.DATA_DIR  # templates/, static/, migrations/, alembic.ini (see stcloud.resources)

# Each module has ``init_app(app)`` that registers its blueprints.
BLUEPRINT_MODULES = (
    "stcloud.accounts.signin",
    "stcloud.jobs.settings_routes",
    "stcloud.jobs.routes",
    "stcloud.jobs.submit_routes",
    "stcloud.providers.routes",
    "stcloud.webhooks.routes",
    "stcloud.storage.routes",
    "stcloud.storage.pages",
    "stcloud.workers.api",
    "stcloud.workers.routes",
    "stcloud.costs.routes",
    "stcloud.snapshots.routes",
    "stcloud.accounts.routes",
    "stcloud.jobs.rerun_routes",
    "stcloud.web.security",
    "stcloud.ops.routes",
    "stcloud.providers.slurm_routes",
    "stcloud.jobs.compare_routes",
    "stcloud.notify.routes",
    "stcloud.accounts.extroutes",
    "stcloud.web.api_docs",
    "stcloud.jobs.recovery_routes",
    "stcloud.jobs.approval_routes",
    "stcloud.notify.prefs_routes",
    "stcloud.jobs.config_routes",
    "stcloud.jobs.checkpoint_routes",
    "stcloud.pipelines.routes",
)


def create_app(config: dict | None = None, home: str | None = None) -> Flask:
    """App factory: config -> db -> auth/csrf -> blueprints -> errors -> cli.

    Never starts the scheduler or workers: ``stcloud serve`` / ``stcloud scheduler`` do.
    """
    from flask import Flask

    from stcloud import config as config_mod
    from stcloud import errors, secrets
    from stcloud.accounts import guard
    from stcloud.db import Database
    from stcloud.web import auth

    home_path = config_mod.home_dir(home or (config or {}).get("STCLOUD_HOME"))
    cfg = config_mod.load(home_path, config)
    app = Flask(__name__, instance_path=str(home_path), instance_relative_config=True,
                template_folder=str(resources.TEMPLATES), static_folder=str(resources.STATIC))
    app.config.update(cfg)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = secrets.get_or_create(home_path, "flask_secret_key")
    for sub in ("uploads", "cloud_outputs", "configs", "logs", "datasets"):
        (home_path / sub).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    app.extensions["stcloud.db"] = Database(app.config["STCLOUD_DATABASE_URL"])
    app.extensions["stcloud.schedule_hooks"] = []
    auth.init_app(app)
    guard.init_app(app)
    errors.init_app(app)
    from stcloud.web import filters

    filters.init_app(app)
    for name in BLUEPRINT_MODULES:
        importlib.import_module(name).init_app(app)
    from stcloud import cli

    cli.init_app(app)
    from stcloud.accounts import bootstrap

    bootstrap.init_app(app)
    return app
