"""The prepared statements of a streaming delivery, run on a sqlite3 connection of its own.

A webhook delivery that only streams log and progress (most of them) runs four prepared
statements (``jobs.streaming`` and the delivery row) in one ``BEGIN IMMEDIATE``
transaction. Through an ORM session and SQLAlchemy's execution machinery those cost more
than half of a delivery; here the same statements, compiled once for the engine's dialect
(``db.Compiled``), run on the DBAPI connection (``_Writers``: taken from a list, not a pool
checkout; fast-path writers queue on a blocking file lock across processes), with the same
bind and result processors SQLAlchemy applies (so the rows are byte for byte what the ORM
path writes; tests/webhooks check it).

Only SQLite takes this path (``available``); PostgreSQL and every delivery that changes a
job's status keep the ORM path. ``transaction()`` yields an object with ``connection()``
(as a Session has), whose ``execute(statement, params)`` returns a result with ``first()``,
``all()`` and ``rowcount``: ``jobs.streaming`` and ``jobs.loss_points`` run on it unchanged.
"""
from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Engine

from stcloud import db, sqlite_wal


class _Result:
    def __init__(self, cursor, compiled: db.Compiled):
        self._cursor, self._compiled = cursor, compiled
        self.rowcount = cursor.rowcount

    def first(self):
        return self._compiled.row(self._cursor.fetchone())

    def all(self) -> list:
        return [self._compiled.row(raw) for raw in self._cursor.fetchall()]


class _Connection:
    def __init__(self, dbapi_conn, dialect, cache: dict):
        self._conn, self.dialect, self._cache = dbapi_conn, dialect, cache

    def execute(self, statement, params: dict | None = None) -> _Result:
        compiled = self._cache.get(statement)
        if compiled is None:
            compiled = self._cache.setdefault(statement, db.Compiled(statement, self.dialect))
        sql, args = compiled.args(params or {})
        return _Result(self._conn.execute(sql, args), compiled)


class _Tx:
    def __init__(self, conn: _Connection):
        self._conn = conn

    def connection(self) -> _Connection:
        return self._conn


class _Writers:
    """This process's idle fast-path connections (and their compiled statements).

    The connections come from the engine (its connect event set WAL, foreign keys and the
    busy timeout) and are detached from the pool: taking one is a list pop, not a pool
    checkout with its reset-on-return (two of them were a tenth of a delivery).

    Transactions run under ``sqlite_wal.writer_lock``: fast-path writers queue in the kernel
    (woken at the release) instead of polling SQLite's lock with sleeps.
    """

    MAX_IDLE = 8

    def __init__(self, engine: Engine):
        # a weak reference: the engine owns its writers (the table below is weak too), and
        # when a test's app and engine go, their connections and lock file are closed
        self._engine, self.pid = weakref.ref(engine), os.getpid()
        self.idle: list = []
        self.cache: dict = {}

    def take(self):
        try:
            return self.idle.pop()
        except IndexError:
            pooled = self._engine().raw_connection()
            pooled.detach()  # no longer the pool's: the sqlite3 connection is ours to close
            return pooled.dbapi_connection

    def give(self, conn) -> None:
        if len(self.idle) < self.MAX_IDLE:
            self.idle.append(conn)
        else:
            conn.close()


_writers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Engine -> _Writers
_lock = threading.Lock()
_inherited: list[_Writers] = []


def available(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def _for(engine: Engine) -> _Writers:
    w = _writers.get(engine)
    if w is None or w.pid != os.getpid():
        with _lock:  # a forked child starts its own (it never uses the parent's connections)
            w = _writers.get(engine)
            if w is None or w.pid != os.getpid():
                if w is not None:  # the parent's: never used nor closed here (SQLite and fork)
                    _inherited.append(w)
                w = _writers[engine] = _Writers(engine)
    return w


def scalar(engine: Engine, statement, params: dict):
    """The first column of the first row of a read (no transaction needed)."""
    w = _for(engine)
    conn = w.take()
    try:
        row = _Connection(conn, engine.dialect, w.cache).execute(statement, params).first()
    except BaseException:
        conn.close()
        raise
    w.give(conn)
    return row[0] if row is not None else None


@contextmanager
def transaction(engine: Engine) -> Iterator[_Tx]:
    """``BEGIN IMMEDIATE`` under the writers' lock; COMMIT on a clean exit, else ROLLBACK."""
    w = _for(engine)
    conn = w.take()
    try:
        with sqlite_wal.writer_lock(engine):
            # the other fast-path writers are behind the lock: SQLite's lock is free unless a
            # writer outside the fast path holds it, and then its busy timeout waits
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _Tx(_Connection(conn, engine.dialect, w.cache))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    w.give(conn)
