"""The prepared statements of a streaming delivery, run on the pooled sqlite3 connection.

A webhook delivery that only streams log and progress (most of them) runs four prepared
statements (``jobs.streaming`` and the delivery row) in one ``BEGIN IMMEDIATE``
transaction. Through an ORM session and SQLAlchemy's execution machinery those cost more
than half of a delivery; here the same statements, compiled once for the engine's dialect,
run on the pool's DBAPI connection, with the same bind and result processors SQLAlchemy
applies (so the rows are byte for byte what the ORM path writes; tests/webhooks check it).

Only SQLite takes this path (``available``); PostgreSQL and every delivery that changes a
job's status keep the ORM path. ``transaction()`` yields an object with ``connection()``
(as a Session has), whose ``execute(statement, params)`` returns a result with ``first()``
and ``rowcount``: ``jobs.streaming`` runs on it unchanged.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Engine

from stcloud import db


class _Compiled:
    def __init__(self, statement, dialect):
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.names = list(compiled.positiontup or ())
        procs = {}
        for name, bind in compiled.binds.items():
            proc = bind.type._cached_bind_processor(dialect)
            if proc is not None:
                procs[name] = proc
        self.bind = procs
        cols = getattr(statement, "selected_columns", None)
        self.results = [c.type._cached_result_processor(dialect, None) for c in cols] if cols is not None else []

    def params(self, values: dict) -> list:
        out = []
        for name in self.names:
            v = values[name]
            proc = self.bind.get(name)
            out.append(proc(v) if proc is not None and v is not None else v)
        return out

    def row(self, raw: tuple | None) -> tuple | None:
        if raw is None or not self.results:
            return raw
        return tuple(p(v) if p is not None else v for p, v in zip(self.results, raw, strict=True))


class _Result:
    def __init__(self, cursor, compiled: _Compiled):
        self._cursor, self._compiled = cursor, compiled
        self.rowcount = cursor.rowcount

    def first(self):
        return self._compiled.row(self._cursor.fetchone())


class _Connection:
    def __init__(self, dbapi_conn, dialect, cache: dict):
        self._conn, self.dialect, self._cache = dbapi_conn, dialect, cache

    def execute(self, statement, params: dict | None = None) -> _Result:
        compiled = self._cache.get(statement)
        if compiled is None:
            compiled = self._cache.setdefault(statement, _Compiled(statement, self.dialect))
        return _Result(self._conn.execute(compiled.sql, compiled.params(params or {})), compiled)


class _Tx:
    def __init__(self, conn: _Connection):
        self._conn = conn

    def connection(self) -> _Connection:
        return self._conn


_caches: dict[int, dict] = {}
_lock = threading.Lock()


def available(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def _cache(engine: Engine) -> dict:
    with _lock:
        return _caches.setdefault(id(engine.dialect), {})


def scalar(engine: Engine, statement, params: dict):
    """The first column of the first row of a read (no transaction needed)."""
    pooled = engine.raw_connection()
    try:
        row = _Connection(pooled.driver_connection, engine.dialect, _cache(engine)).execute(statement, params).first()
    finally:
        pooled.close()
    return row[0] if row is not None else None


@contextmanager
def transaction(engine: Engine) -> Iterator[_Tx]:
    """``BEGIN IMMEDIATE`` on a pooled connection; COMMIT on a clean exit, else ROLLBACK."""
    pooled = engine.raw_connection()
    try:
        conn = pooled.driver_connection
        db.begin_immediate(conn)
        try:
            yield _Tx(_Connection(conn, engine.dialect, _cache(engine)))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        pooled.close()
