"""``stcloud backup`` / ``stcloud restore``: one ``.tar.gz`` with an online snapshot of the
SQLite database (SQLite's backup API: consistent while the server keeps writing) and the rest
of ``STCLOUD_HOME`` (the encrypted ``secrets.enc`` with its ``secret.key`` and other key files,
``config.json``, ``cloud_outputs/``, ``configs/`` with its git history, ``uploads/``, ``logs/``).
No Flask.

Archive layout: ``manifest.json``, ``database.sqlite3`` (SQLite only) and ``home/...``.
A PostgreSQL database is not in the archive: back it up with ``pg_dump`` (the manifest and
the command say so). Restore refuses a home that already holds files unless ``force``, and
then empties it first, so the result is exactly the backup.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

FORMAT = 1
DB_MEMBER = "database.sqlite3"
HOME_PREFIX = "home"
PG_DUMP_NOTE = ("the database is {kind}, not SQLite: it is not in this archive. Back it up with its own tool "
                "(PostgreSQL: pg_dump --format=custom --file stcloud.dump <database>; restore with pg_restore)")


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why."""


@dataclass
class Manifest:
    format: int
    created_at: str
    stcloud_version: str
    database: str  # "sqlite" or "external:<dialect>"
    alembic_revision: str | None
    files: int = 0
    bytes: int = 0
    notes: list[str] = field(default_factory=list)


def sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite URL; None for another database. Raises BackupError for an in-memory one."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return None
    if not url.database or url.database == ":memory:":
        raise BackupError("the database is an in-memory SQLite database: nothing to back up")
    return Path(url.database).expanduser().resolve()


def _db_files(db_path: Path | None) -> set[Path]:
    if db_path is None:
        return set()
    return {db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm"), Path(f"{db_path}-journal"),
            Path(f"{db_path}-writer")}  # the writers' lock file (sqlite_wal.py)


def _revision(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError:
        return None
    return row[0] if row else None


def create(home: Path, database_url: str, dest: Path, version: str) -> Manifest:
    """Write the backup of ``home`` (and its SQLite database) to ``dest``. Raises BackupError."""
    home = home.resolve()
    if not home.is_dir():
        raise BackupError(f"{home} is not a directory (STCLOUD_HOME)")
    dest = dest.resolve()
    if dest.is_relative_to(home):
        raise BackupError(f"write the backup outside STCLOUD_HOME ({home}), not into it")
    db_path = sqlite_path(database_url)
    manifest = Manifest(format=FORMAT, created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                        stcloud_version=version, database="sqlite", alembic_revision=None)
    skip = _db_files(db_path)
    with tempfile.TemporaryDirectory(prefix="stcloud-backup-") as tmp:
        snapshot = Path(tmp) / DB_MEMBER
        if db_path is not None:
            if not db_path.exists():
                raise BackupError(f"no database at {db_path}; run `stcloud db upgrade` first")
            src = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
            dst = sqlite3.connect(snapshot)
            try:
                src.backup(dst)  # page by page; sees one consistent state of the database
                manifest.alembic_revision = _revision(dst)
            finally:
                dst.close()
                src.close()
        else:
            manifest.database = f"external:{make_url(database_url).get_backend_name()}"
            manifest.notes.append(PG_DUMP_NOTE.format(kind=make_url(database_url).get_backend_name()))
        partial = dest.with_name(dest.name + ".partial")
        with tarfile.open(partial, "w:gz") as tar:
            if db_path is not None:
                tar.add(snapshot, arcname=DB_MEMBER)
            for path in sorted(home.rglob("*")):
                if path in skip or path.is_symlink() and not path.exists():
                    continue
                if path.is_file() or path.is_symlink():
                    tar.add(path, arcname=f"{HOME_PREFIX}/{path.relative_to(home).as_posix()}", recursive=False)
                    manifest.files += 1
                    manifest.bytes += path.lstat().st_size
                elif path.is_dir():
                    tar.add(path, arcname=f"{HOME_PREFIX}/{path.relative_to(home).as_posix()}", recursive=False)
            data = json.dumps(asdict(manifest), indent=2).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(data)
            info.mtime = int(datetime.now(UTC).timestamp())
            tar.addfile(info, io.BytesIO(data))
        os.chmod(partial, 0o600)  # it holds the secrets
        os.replace(partial, dest)
    return manifest


def read_manifest(archive: Path) -> Manifest:
    """Raises BackupError when ``archive`` is not an stcloud backup."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = tar.extractfile("manifest.json")
            raw = json.loads(member.read()) if member else None
    except (OSError, tarfile.TarError, KeyError, json.JSONDecodeError) as exc:
        raise BackupError(f"{archive} is not an stcloud backup ({type(exc).__name__}: {exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BackupError(f"{archive} is not an stcloud backup of format {FORMAT}")
    return Manifest(**raw)


def _has_files(home: Path) -> bool:
    return home.exists() and any(p.is_file() or p.is_symlink() for p in home.rglob("*"))


def restore(archive: Path, home: Path, database_url: str, *, force: bool = False) -> Manifest:
    """Restore ``archive`` into ``home`` (and the SQLite database). Raises BackupError."""
    manifest = read_manifest(archive)
    home = home.resolve()
    db_path = sqlite_path(database_url)
    if manifest.database == "sqlite" and db_path is None:
        raise BackupError("this backup holds a SQLite database but STCLOUD_DATABASE_URL points at another "
                          "database; unset it to restore into STCLOUD_HOME/stcloud.db")
    occupied = _has_files(home) or any(p.exists() for p in _db_files(db_path))
    if occupied and not force:
        raise BackupError(f"{home} already holds data; restore into an empty STCLOUD_HOME, or pass --force "
                          "to replace everything in it")
    if db_path is None:
        manifest.notes.append(PG_DUMP_NOTE.format(kind=make_url(database_url).get_backend_name())
                              .replace("Back it up", "Restore it"))
    with tempfile.TemporaryDirectory(prefix="stcloud-restore-", dir=home.parent) as tmp:
        staging = Path(tmp)
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(staging, filter="data")
        if occupied:
            for child in home.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            for path in _db_files(db_path):
                path.unlink(missing_ok=True)
        home.mkdir(parents=True, exist_ok=True)
        src_home = staging / HOME_PREFIX
        if src_home.is_dir():
            for child in src_home.iterdir():
                shutil.move(str(child), home / child.name)
        if db_path is not None and (staging / DB_MEMBER).exists():
            db_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staging / DB_MEMBER), db_path)
    for name in ("secrets.enc", "secret.key", "secrets.json"):
        if (home / name).exists():
            os.chmod(home / name, 0o600)
    return manifest
