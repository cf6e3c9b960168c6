"""The CLI user's own config file: the API key ``stcloud login`` stored per server.

``$STCLOUD_CONFIG``, else ``$XDG_CONFIG_HOME/stcloud/config.json``, else
``~/.config/stcloud/config.json``; written atomically with mode 0600 (it holds API keys).
Shape: ``{"default_server": url, "servers": {url: {"token", "key_id", "username"}}}``.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

DEFAULT_SERVER = "http://127.0.0.1:8080"


def path() -> Path:
    explicit = os.environ.get("STCLOUD_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "stcloud" / "config.json"


def load() -> dict:
    p = path()
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {p}: {exc}") from None
    return data if isinstance(data, dict) else {}


def save(data: dict) -> Path:
    p = path()
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".config-", suffix=".json")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def normalize(server: str) -> str:
    return server.strip().rstrip("/")


def default_server() -> str:
    try:
        return load().get("default_server") or DEFAULT_SERVER
    except ValueError:
        return DEFAULT_SERVER


def entry(server: str) -> dict | None:
    try:
        found = (load().get("servers") or {}).get(normalize(server))
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def token_for(server: str) -> str | None:
    found = entry(server)
    return found.get("token") if found else None


def remember(server: str, token: str, key_id: str, username: str) -> Path:
    data = load()
    servers = data.get("servers") if isinstance(data.get("servers"), dict) else {}
    servers[normalize(server)] = {"token": token, "key_id": key_id, "username": username}
    data["servers"] = servers
    data["default_server"] = normalize(server)
    return save(data)


def forget(server: str) -> dict | None:
    data = load()
    servers = data.get("servers") if isinstance(data.get("servers"), dict) else {}
    removed = servers.pop(normalize(server), None)
    if data.get("default_server") == normalize(server):
        data.pop("default_server", None)
    data["servers"] = servers
    save(data)
    return removed
