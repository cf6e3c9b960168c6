"""Direct DBAPI connections for the hottest statements: taken from a list, not a pool checkout.

An ORM session costs ~30 µs before its first statement on SQLite (session, pool checkout
with its events, reset on return) and the execution machinery ~15 µs per statement: more
than the statement itself for the two hottest small operations, a streaming webhook delivery
(``webhooks/fastpath.py``) and a log poll near the end of a log (``jobs/logread.py``). Those
run statements compiled once (``db.Compiled``, with SQLAlchemy's own bind and result
processors) on a DBAPI connection of their own:

- ``Connections``: one list of idle connections per engine and process. The connections
  come from the engine (its connect event set WAL, foreign keys and the busy timeout on
  SQLite; the read engine's AUTOCOMMIT on PostgreSQL) and are detached from its pool, so
  taking one is a list pop. At most ``MAX_IDLE`` wait; a PostgreSQL connection older than
  ``db.POOL_RECYCLE_SECONDS`` is closed instead of kept; all idle ones are closed when the
  engine is disposed. A forked child starts a list of its own and never touches the parent's.
- ``rows(engine, prepared, params)``: a read on one of them, outside any transaction (each
  statement sees its own snapshot, as ``db.read()`` does). A statement that fails because
  the connection dropped (a restarted server, a connection idle past a server timeout) is
  run once more on a new connection; any other error comes out as SQLAlchemy's DBAPIError.
"""
from __future__ import annotations

import os
import time
import weakref

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from stcloud import db, forks


class Connections:
    """This process's idle direct connections to one engine, and their compiled statements."""

    MAX_IDLE = 8

    def __init__(self, engine: Engine):
        # a weak reference: the engine owns its connections (the table below is weak too), and
        # when a test's app and engine go, their connections are closed with them
        self._engine, self.pid = weakref.ref(engine), os.getpid()
        self.dialect = engine.dialect
        self.recycle = None if engine.dialect.name == "sqlite" else db.POOL_RECYCLE_SECONDS
        self.idle: list = []  # (dbapi connection, connected at)
        self.cache: dict = {}  # statement -> db.Compiled

    def compiled(self, statement) -> db.Compiled:
        c = self.cache.get(statement)
        if c is None:
            c = self.cache.setdefault(statement, db.Compiled(statement, self.dialect))
        return c

    def take(self) -> tuple:
        """(connection, connected at): an idle one, else a new one from the engine."""
        try:
            return self.idle.pop()
        except IndexError:
            return self.connect()

    def connect(self) -> tuple:
        pooled = self._engine().raw_connection()
        pooled.detach()  # no longer the pool's: the DBAPI connection is ours to close
        return pooled.dbapi_connection, time.monotonic()

    def give(self, taken: tuple) -> None:
        conn, since = taken
        if len(self.idle) < self.MAX_IDLE and (self.recycle is None or time.monotonic() - since < self.recycle):
            self.idle.append(taken)
        else:
            conn.close()

    def close_idle(self) -> None:
        while self.idle:
            conn, _ = self.idle.pop()
            try:
                conn.close()
            except Exception:  # noqa: BLE001 — closing a dead connection: nothing left to do
                pass


# Engine -> this process's Connections (weak: when a test's app and engine go, so do they)
_lists: forks.PerProcess[Connections] = forks.PerProcess(weakref.WeakKeyDictionary())


def for_engine(engine: Engine) -> Connections:
    return _lists.get(engine, _new)


def _new(engine: Engine) -> Connections:
    if not event.contains(engine, "engine_disposed", _disposed):
        event.listen(engine, "engine_disposed", _disposed)
    return Connections(engine)


def _disposed(engine: Engine) -> None:
    c = _lists.table.get(engine)
    if c is not None and c.pid == os.getpid():
        c.close_idle()


def rows(engine: Engine, prepared: db.Prepared, params: dict) -> list[tuple]:
    """The driver's rows of a read (undecoded, as ``Prepared.rows`` gives them)."""
    c = for_engine(engine)
    compiled = c.compiled(prepared.statement)
    sql, args = compiled.args(params)
    taken = c.take()
    for attempt in (1, 2):
        conn = taken[0]
        try:
            cursor = conn.cursor()  # DBAPI, whatever the driver
            cursor.execute(sql, args)
            found = cursor.fetchall()
            cursor.close()
        except c.dialect.loaded_dbapi.Error as exc:
            dropped = c.dialect.is_disconnect(exc, conn, None)
            try:
                conn.close()
            except c.dialect.loaded_dbapi.Error:
                pass
            if dropped and attempt == 1:
                taken = c.connect()
                continue
            raise sa_exc.DBAPIError.instance(sql, args, exc, c.dialect.loaded_dbapi.Error,
                                             connection_invalidated=dropped, dialect=c.dialect) from exc
        except BaseException:
            conn.close()
            raise
        c.give(taken)
        return found
    raise AssertionError("unreachable")
