"""The prepared statements of a streaming delivery, run on a sqlite3 connection of its own.

A webhook delivery that only streams log and progress (most of them) runs four prepared
statements (``jobs.streaming`` and the delivery row) in one ``BEGIN IMMEDIATE``
transaction. Through an ORM session and SQLAlchemy's execution machinery those cost more
than half of a delivery; here the same statements, compiled once for the engine's dialect
(``db.Compiled``), run on a direct connection (``stcloud/direct.py``: taken from a list, not
a pool checkout; fast-path writers queue on a blocking file lock across processes), with the same
bind and result processors SQLAlchemy applies (so the rows are byte for byte what the ORM
path writes; tests/webhooks check it).

Only SQLite takes this path (``available``); PostgreSQL and every delivery that changes a
job's status keep the ORM path. ``transaction()`` yields an object with ``connection()``
(as a Session has), whose ``execute(statement, params)`` returns a result with ``first()``,
``all()`` and ``rowcount``: ``jobs.streaming`` and ``jobs.loss_points`` run on it unchanged.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Engine

from stcloud import db, direct, sqlite_wal


class _Result:
    def __init__(self, cursor, compiled: db.Compiled):
        self._cursor, self._compiled = cursor, compiled
        self.rowcount = cursor.rowcount

    def first(self):
        return self._compiled.row(self._cursor.fetchone())

    def all(self) -> list:
        return [self._compiled.row(raw) for raw in self._cursor.fetchall()]


class _Connection:
    def __init__(self, dbapi_conn, connections: direct.Connections):
        self._conn, self._connections = dbapi_conn, connections
        self.dialect = connections.dialect

    def execute(self, statement, params: dict | None = None) -> _Result:
        compiled = self._connections.compiled(statement)
        sql, args = compiled.args(params or {})
        return _Result(self._conn.execute(sql, args), compiled)


class _Tx:
    def __init__(self, conn: _Connection):
        self._conn = conn

    def connection(self) -> _Connection:
        return self._conn


def available(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def scalar(engine: Engine, statement, params: dict):
    """The first column of the first row of a read (no transaction needed)."""
    c = direct.for_engine(engine)
    taken = c.take()
    try:
        row = _Connection(taken[0], c).execute(statement, params).first()
    except BaseException:
        taken[0].close()
        raise
    c.give(taken)
    return row[0] if row is not None else None


@contextmanager
def transaction(engine: Engine) -> Iterator[_Tx]:
    """``BEGIN IMMEDIATE`` under the writers' lock; COMMIT on a clean exit, else ROLLBACK."""
    c = direct.for_engine(engine)
    taken = c.take()
    conn = taken[0]
    try:
        with sqlite_wal.writer_lock(engine):
            # the other fast-path writers are behind the lock: SQLite's lock is free unless a
            # writer outside the fast path holds it, and then its busy timeout waits
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _Tx(_Connection(conn, c))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    c.give(taken)
