"""Configuration: defaults < instance config (``STCLOUD_HOME/config.json``) < ``STCLOUD_*`` env."""
from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULTS = {
    "SECRET_KEY": None,  # generated once and kept in secrets.json
    "STCLOUD_DATABASE_URL": None,  # default: sqlite:///<home>/stcloud.db
    "STCLOUD_ADMIN_TOKEN": None,
    "STCLOUD_AUTH": "on",  # "off": no sign-in at all (served to loopback clients only)
    "STCLOUD_LOGIN_RATE_LIMIT": "10 per minute",  # per client address, on the sign-in endpoints
    "STCLOUD_PUBLIC_URL": None,
    "STCLOUD_WORKER_TIMEOUT": 90,
    "STCLOUD_SCHEDULER": False,  # start APScheduler in this process (serve/scheduler set it)
    "STCLOUD_LOCAL_WORKER": False,
    "STCLOUD_DATASET_ROOTS": None,  # ":"-separated; default STCLOUD_HOME/datasets + the sample
    "MAX_CONTENT_LENGTH": None,  # per-route limits are enforced where bodies are read
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
}

ENV_KEYS = (
    "STCLOUD_DATABASE_URL",
    "STCLOUD_ADMIN_TOKEN",
    "STCLOUD_AUTH",
    "STCLOUD_LOGIN_RATE_LIMIT",
    "STCLOUD_PUBLIC_URL",
    "STCLOUD_WORKER_TIMEOUT",
    "STCLOUD_DATASET_ROOTS",
)
# every variable with these prefixes is read (LDAP and OIDC sign-in: docs/accounts-external.md)
ENV_PREFIXES = ("STCLOUD_LDAP_", "STCLOUD_OIDC_")


def home_dir(explicit: str | os.PathLike | None = None) -> Path:
    raw = explicit or os.environ.get("STCLOUD_HOME") or "instance"
    path = Path(raw).expanduser().resolve()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    tighten_home(path)
    return path


def tighten_home(path: Path) -> None:
    """STCLOUD_HOME holds the database, the secret store and its key: owner-only (0700)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        try:
            os.chmod(path, 0o700)
        except PermissionError:
            log.warning("STCLOUD_HOME %s is mode %s and not ours to change: make it 0700 (it holds secrets)",
                        path, oct(mode))
            return
        log.warning("STCLOUD_HOME %s was mode %s; tightened to 0700 (it holds secrets)", path, oct(mode))


def load(home: Path, overrides: dict | None = None) -> dict:
    """Build the config mapping for ``home``; ``overrides`` (tests) win over everything."""
    cfg = dict(DEFAULTS)
    instance_file = home / "config.json"
    if instance_file.exists():
        cfg.update(json.loads(instance_file.read_text()))
    for key in ENV_KEYS:
        if os.environ.get(key):
            cfg[key] = os.environ[key]
    for key, value in os.environ.items():
        if key.startswith(ENV_PREFIXES):
            cfg[key] = value
    if overrides:
        cfg.update(overrides)
    cfg["STCLOUD_HOME"] = str(home)
    if not cfg.get("STCLOUD_DATABASE_URL"):
        cfg["STCLOUD_DATABASE_URL"] = f"sqlite:///{home / 'stcloud.db'}"
    cfg["STCLOUD_WORKER_TIMEOUT"] = int(cfg["STCLOUD_WORKER_TIMEOUT"])
    return cfg
