"""The encrypted secret store: tokens and keys that never go to the database in clear.

- ``STCLOUD_HOME/secrets.enc``: one Fernet token (AES-128-CBC + HMAC-SHA256) holding the JSON
  object ``{key: value}``; rewritten atomically (temporary file, fsync, rename).
- ``STCLOUD_HOME/secret.key``: the Fernet key, created with mode 0600 from the start.
- An older plain ``secrets.json`` is folded into the encrypted store the first time the store
  is opened, then deleted.

Values are never logged and never returned by a route; callers ask for one key at a time
(``get``/``put``/``delete``/``get_or_create``). Secrets that come one per job live in their own
small files, ``STCLOUD_HOME/secrets.d/<sha256 of the name>.enc`` (``put_item``/``get_item``/
``delete_item``), encrypted with the same key, so a submit never rewrites the whole store.
Writers of the store in several processes (server, workers, scheduler) take an exclusive
``flock`` on ``secrets.lock`` for the read-modify-write.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets as _secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

STORE = "secrets.enc"
ITEMS_DIR = "secrets.d"
KEY_FILE = "secret.key"
LEGACY = "secrets.json"

_lock = threading.Lock()
# home -> ((mtime_ns, size, inode), data): the decrypted store, re-read when the file changes
_cache: dict[str, tuple[tuple, dict]] = {}


class SecretStoreError(RuntimeError):
    """The store exists but cannot be decrypted (wrong or missing ``secret.key``)."""


def _create_0600(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o600)


def _fernet(home: Path) -> Fernet:
    path = home / KEY_FILE
    try:
        return Fernet(path.read_bytes().strip())
    except FileNotFoundError:
        pass
    if (home / STORE).exists():
        raise SecretStoreError(f"{home / STORE} exists but its key {path} is missing: restore the key file")
    tmp = home / (KEY_FILE + f".{os.getpid()}.tmp")
    _create_0600(tmp, Fernet.generate_key())
    try:
        os.link(tmp, path)  # first writer wins; a concurrent one reads the winner's key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return Fernet(path.read_bytes().strip())


@contextmanager
def _file_lock(home: Path) -> Iterator[None]:
    fd = os.open(home / "secrets.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _read(home: Path) -> dict:
    path = home / STORE
    stamp = _stamp(path)
    if stamp is None:
        return {}
    cached = _cache.get(str(home))
    if cached is not None and cached[0] == stamp:
        return dict(cached[1])
    try:
        data = json.loads(_fernet(home).decrypt(path.read_bytes()))
    except InvalidToken:
        raise SecretStoreError(f"{path} cannot be decrypted with {home / KEY_FILE}") from None
    _cache[str(home)] = (stamp, data)
    return dict(data)


def _write(home: Path, data: dict) -> None:
    path = home / STORE
    token = _fernet(home).encrypt(json.dumps(data, sort_keys=True).encode())
    tmp = home / (STORE + f".{os.getpid()}.tmp")
    _create_0600(tmp, token)
    os.replace(tmp, path)
    _cache[str(home)] = (_stamp(path), dict(data))


def _migrate_legacy(home: Path) -> None:
    """Fold a plain ``secrets.json`` into the encrypted store, then delete it."""
    legacy = home / LEGACY
    if not legacy.exists():
        return
    try:
        old = json.loads(legacy.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        old = {}
    if isinstance(old, dict) and old:
        data = _read(home)
        _write(home, {**{k: str(v) for k, v in old.items()}, **data})
    legacy.unlink(missing_ok=True)


@contextmanager
def _open(home, *, write: bool) -> Iterator[dict]:
    home = Path(home)
    with _lock:
        if not write and not (home / LEGACY).exists():
            yield _read(home)
            return
        with _file_lock(home):
            _migrate_legacy(home)
            yield _read(home)


def get(home, key: str) -> str | None:
    with _open(home, write=False) as data:
        return data.get(key)


def get_many(home, prefix: str) -> dict[str, str]:
    """Every entry whose key starts with ``prefix`` (the job secrets of one job)."""
    with _open(home, write=False) as data:
        return {k: v for k, v in data.items() if k.startswith(prefix)}


def put(home, key: str, value: str) -> None:
    put_many(home, {key: value})


def put_many(home, values: dict[str, str]) -> None:
    if not values:
        return
    with _open(home, write=True) as data:
        data.update({k: str(v) for k, v in values.items()})
        _write(Path(home), data)


def delete(home, key: str) -> bool:
    return delete_where(home, lambda k: k == key) > 0


def delete_where(home, match) -> int:
    """Delete the entries whose key satisfies ``match(key)``; returns how many."""
    with _open(home, write=True) as data:
        gone = [k for k in data if match(k)]
        if gone:
            for k in gone:
                del data[k]
            _write(Path(home), data)
        return len(gone)


def get_or_create(home, key: str, nbytes: int = 32) -> str:
    existing = get(home, key)
    if existing:
        return existing
    with _open(home, write=True) as data:
        if not data.get(key):
            data[key] = _secrets.token_urlsafe(nbytes)
            _write(Path(home), data)
        return data[key]


# ---- one file per item (per-job secrets) ---------------------------------------------------

def _item_path(home: Path, name: str) -> Path:
    return home / ITEMS_DIR / (hashlib.sha256(name.encode()).hexdigest()[:40] + ".enc")


def put_item(home, name: str, value: str) -> None:
    home = Path(home)
    (home / ITEMS_DIR).mkdir(mode=0o700, exist_ok=True)
    path = _item_path(home, name)
    tmp = path.with_name(path.name + f".{os.getpid()}.{threading.get_ident()}.tmp")
    _create_0600(tmp, _fernet(home).encrypt(value.encode()))
    os.replace(tmp, path)


def get_item(home, name: str) -> str | None:
    home = Path(home)
    try:
        token = _item_path(home, name).read_bytes()
    except FileNotFoundError:
        return None
    try:
        return _fernet(home).decrypt(token).decode()
    except InvalidToken:
        raise SecretStoreError(f"{_item_path(home, name)} cannot be decrypted with {home / KEY_FILE}") from None


def delete_item(home, name: str) -> bool:
    try:
        _item_path(Path(home), name).unlink()
        return True
    except FileNotFoundError:
        return False
