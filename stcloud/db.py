"""Engine and sessions. SQLite gets WAL, busy_timeout and foreign keys.

Two ways in, both short:
- ``session()``: reads (and simple writes); commits on clean exit.
- ``transaction()``: read-then-write critical sections. On SQLite it starts with
  ``BEGIN IMMEDIATE`` so the write lock is taken up front — a deferred transaction that
  reads and then writes fails with SQLITE_BUSY (no waiting) when another writer got in
  between. On PostgreSQL callers lock rows with ``with_for_update()``.
Never hold either across an HTTP call.
"""
from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from stcloud import sqlite_wal

BUSY_TIMEOUT_MS = 30_000


class Database:
    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict = {"future": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            owner_only(self.engine.url.database)
            _sqlite_setup(self.engine)
        self._maker = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._immediate_maker = sessionmaker(
            bind=self.engine.execution_options(sqlite_immediate=True), expire_on_commit=False
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        s = self._maker()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        s = self._immediate_maker()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def dispose(self) -> None:
        self.engine.dispose()
        sqlite_wal.stop(self.engine)


def owner_only(path: str | None) -> None:
    """The SQLite file (created empty if missing, so SQLite never makes it world-readable) and
    its -wal/-shm at 0600. SQLite creates -wal/-shm with the database file's mode."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    if not os.path.exists(path) and os.path.isdir(os.path.dirname(os.path.abspath(path))):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for p in (path, path + "-wal", path + "-shm", path + "-journal"):
        try:
            os.chmod(p, 0o600)
        except FileNotFoundError:
            pass


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # The driver's own implicit BEGIN is switched off; SQLAlchemy's "begin" event
        # below emits BEGIN / BEGIN IMMEDIATE itself.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        if sqlite_wal.take_over(engine):
            cur.execute("PRAGMA wal_autocheckpoint=0")  # sqlite_wal.py runs them off the request path
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        if conn.get_execution_options().get("sqlite_immediate"):
            begin_immediate(conn.connection.driver_connection)
        else:
            conn.exec_driver_sql("BEGIN")


def begin_immediate(dbapi_conn, timeout: float = BUSY_TIMEOUT_MS / 1000) -> None:
    """``BEGIN IMMEDIATE``, waiting for another writer in steps of 0.1-2 ms.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25… ms between tries. Our write
    transactions last well under a millisecond, so with two server processes the waiting
    one would mostly sleep past the moment the lock was free (webhook throughput under
    ``gunicorn -w 2`` was a fraction of one process's).
    """
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + timeout
        delay = 0.0001
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.002)
    finally:
        dbapi_conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def get_db() -> Database:
    """The current app's database (needs an app context)."""
    from flask import current_app

    return current_app.extensions["stcloud.db"]


def session():
    return get_db().session()


def transaction():
    return get_db().transaction()
