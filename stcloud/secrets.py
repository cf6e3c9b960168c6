"""``STCLOUD_HOME/secrets.json`` (mode 0600): tokens and keys that never go to the database.

Values are never logged and never returned by a route; callers ask for one key at a time.
"""
from __future__ import annotations

import json
import os
import secrets as _secrets
import threading
from pathlib import Path

_lock = threading.Lock()


def _path(home: str | os.PathLike) -> Path:
    return Path(home) / "secrets.json"


def _read(home) -> dict:
    path = _path(home)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text() or "{}")
    except json.JSONDecodeError:
        return {}


def _write(home, data: dict) -> None:
    path = _path(home)
    tmp = path.with_suffix(".tmp")
    # Create with 0600 from the start: a chmod after writing leaves a window.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def get(home, key: str) -> str | None:
    with _lock:
        return _read(home).get(key)


def put(home, key: str, value: str) -> None:
    with _lock:
        data = _read(home)
        data[key] = value
        _write(home, data)


def delete(home, key: str) -> bool:
    with _lock:
        data = _read(home)
        if key not in data:
            return False
        del data[key]
        _write(home, data)
        return True


def get_or_create(home, key: str, nbytes: int = 32) -> str:
    with _lock:
        data = _read(home)
        if not data.get(key):
            data[key] = _secrets.token_urlsafe(nbytes)
            _write(home, data)
        return data[key]
