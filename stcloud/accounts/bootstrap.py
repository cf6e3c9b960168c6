"""First start (secure by default): with no account at all, create ``admin`` with a random
password, print it once on the console and keep it in ``STCLOUD_HOME/initial-admin-password``."""
from __future__ import annotations

import sys
from pathlib import Path

from flask import Flask

from stcloud.accounts import service
from stcloud.web import auth


def ensure_admin(app: Flask) -> str | None:
    """Create the first admin if there is no account (and auth is on); announce it."""
    if not auth.auth_enabled(app):
        return None
    home = Path(app.config["STCLOUD_HOME"])
    with app.app_context():
        password = service.ensure_initial_admin(home)
    if password:
        path = service.initial_password_path(home)
        bar = "*" * 72
        sys.stderr.write(
            f"\n{bar}\n  stcloud created the first account.\n"
            f"    username: {service.INITIAL_ADMIN}\n    password: {password}\n"
            f"  (also in {path}, mode 0600; it is removed when you set your own password)\n{bar}\n\n")
        sys.stderr.flush()
    return password


def init_app(app: Flask) -> None:
    ensure_admin(app)


def login_link_url(app: Flask, base_url: str, username: str | None = None) -> str:
    """A one-time sign-in URL (single use, 15 minutes) for ``username`` or the first admin."""
    with app.app_context():
        token = service.create_login_link(username)
    return f"{base_url.rstrip('/')}/login/link/{token}"
