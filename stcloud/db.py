"""Engine and sessions. SQLite gets WAL, busy_timeout and foreign keys.

Three ways in, all short:
- ``read()``: pure reads (the job list, log and event pages): no transaction, so no
  BEGIN/COMMIT statements (round trips on PostgreSQL); each statement sees its own snapshot.
- ``session()``: reads (and simple writes); commits on clean exit.
- ``transaction()``: read-then-write critical sections. On SQLite it starts with
  ``BEGIN IMMEDIATE`` so the write lock is taken up front — a deferred transaction that
  reads and then writes fails with SQLITE_BUSY (no waiting) when another writer got in
  between. On PostgreSQL callers lock rows with ``with_for_update()``.
Never hold any across an HTTP call.

PostgreSQL connections are not pinged at every checkout (``pool_pre_ping`` is a round trip
per request): one that sat idle in the pool longer than ``IDLE_PING_SECONDS`` is pinged
(a dead one is replaced before use, as the pre-ping did), one used a moment ago is not; a
statement that fails on a dropped connection invalidates it (SQLAlchemy's disconnect
handling; the next checkout connects anew), and ``pool_recycle`` retires connections before
server-side idle timeouts.

``Prepared``: a Core select compiled once per dialect and run on the session's DBAPI cursor
(no statement construction, cache-key lookup or Row building per call); the hot list reads
use it.
"""
from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

from flask import current_app
from sqlalchemy import create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import Session, sessionmaker

from stcloud import sqlite_wal

BUSY_TIMEOUT_MS = 30_000
IDLE_PING_SECONDS = 10.0  # PostgreSQL: a connection idle longer is pinged at checkout
POOL_RECYCLE_SECONDS = 1800  # PostgreSQL: connections are replaced after this long


class Database:
    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict = {"future": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
        else:
            kwargs["pool_recycle"] = POOL_RECYCLE_SECONDS
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            owner_only(self.engine.url.database)
            _sqlite_setup(self.engine)
        else:
            _ping_when_idle(self.engine)
        self._maker = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._immediate_maker = sessionmaker(
            bind=self.engine.execution_options(sqlite_immediate=True), expire_on_commit=False
        )
        # SQLite: our "begin" hook skips its BEGIN (the driver's implicit one is off already).
        # PostgreSQL: a pool of its own whose connections stay in autocommit (no BEGIN/COMMIT
        # round trips, nothing to roll back at checkin, no mode switch per checkout).
        if self.is_sqlite:
            self.read_engine = self.engine.execution_options(stcloud_read=True)
        else:
            self.read_engine = create_engine(url, **kwargs, isolation_level="AUTOCOMMIT", pool_reset_on_return=None)
            _ping_when_idle(self.read_engine)
        self._read_maker = sessionmaker(bind=self.read_engine, expire_on_commit=False)
        # the engine whose connections direct.py reads on outside any transaction
        self.direct_read_engine = self.engine if self.is_sqlite else self.read_engine

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads only: no transaction (nothing it does is ever committed)."""
        s = self._read_maker()
        try:
            yield s
        finally:
            s.close()

    def session(self):
        return _committing(self._maker)

    def transaction(self):
        return _committing(self._immediate_maker)

    def dispose(self) -> None:
        self.engine.dispose()
        sqlite_wal.stop(self.engine)
        if not self.is_sqlite:
            self.read_engine.dispose()


@contextmanager
def _committing(maker: sessionmaker) -> Iterator[Session]:
    """A session that commits on a clean exit and rolls back on any other."""
    s = maker()
    try:
        yield s
        s.commit()
    except BaseException:
        s.rollback()
        raise
    finally:
        s.close()


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
        options = conn.get_execution_options()
        if options.get("sqlite_immediate"):
            begin_immediate(conn.connection.driver_connection)
        elif not options.get("stcloud_read"):
            conn.exec_driver_sql("BEGIN")


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection at checkout only when it sat idle longer than
    IDLE_PING_SECONDS; a dead one raises DisconnectionError, on which the pool connects anew
    (SQLAlchemy retries the checkout)."""
    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn, record):
        if record is not None:
            record.info["stcloud_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, _proxy):
        since = record.info.pop("stcloud_idle_since", None)
        if since is None or time.monotonic() - since <= IDLE_PING_SECONDS:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise sa_exc.DisconnectionError(str(exc)) from exc
        if not alive:
            raise sa_exc.DisconnectionError("connection did not answer a ping")


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


class Compiled:
    """A statement compiled once for a dialect, run on a DBAPI cursor: the SQL, the parameters
    in the driver's form (SQLAlchemy's own bind processors), and the rows decoded by its
    result processors. ``Prepared`` (selects on a session) and the webhook fast path (writes
    on its own sqlite3 connection) both run statements through it."""

    def __init__(self, statement, dialect: Dialect):
        self.compiled = compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.positional = compiled.positiontup is not None
        self.binds = {}  # name -> bind processor
        self.literals = {}  # name -> type of a parameter rendered into the SQL (literal_execute)
        for name, bind in compiled.binds.items():
            if bind.literal_execute:
                self.literals[name] = bind.type
            elif (proc := bind.type._cached_bind_processor(dialect)) is not None:
                self.binds[name] = proc
        self.names = [n for n in compiled.positiontup or () if n not in self.literals]
        # A statement whose values all come from the caller by name (the webhook fast path's,
        # the log read's): its arguments are built straight from a plan, without construct_params.
        self.plan = None
        if self.positional and not self.literals and all(
                compiled.binds[n].value is None and compiled.binds[n].callable is None
                and not compiled.binds[n].expanding for n in self.names):
            self.plan = tuple((n, self.binds.get(n)) for n in self.names)
        self.dialect = dialect
        self.statement = statement
        self.row_class: type[LazyRow] | None = None  # built from the first cursor's description
        self.results: list | None = None  # row()'s decoders, made at its first use

    def decoders(self, description) -> type[LazyRow]:
        """A LazyRow class for this statement's rows: column key -> (index, result processor),
        as SQLAlchemy picks them (some depend on the type the driver reports, e.g. PostgreSQL
        numerics)."""
        if self.row_class is None:
            cols = self.statement.selected_columns
            columns = {c.key: (i, c.type._cached_result_processor(self.dialect, description[i][1]))
                       for i, c in enumerate(cols)}
            self.row_class = type("LazyRow", (LazyRow,), {"__slots__": (), "_columns": columns})
        return self.row_class

    def row(self, raw: tuple | None) -> tuple | None:
        """A row decoded at once, every column (the fast path's small reads on SQLite)."""
        if self.results is None:
            cols = getattr(self.statement, "selected_columns", None)
            procs = [c.type._cached_result_processor(self.dialect, None) for c in cols] if cols is not None else []
            self.results = procs if any(p is not None for p in procs) else []
        if raw is None or not self.results:
            return raw
        return tuple(p(v) if p is not None else v for p, v in zip(self.results, raw, strict=True))

    def args(self, params: dict) -> tuple[str, object]:
        if self.plan is not None:
            return self.sql, [v if proc is None or v is None else proc(v)
                              for name, proc in self.plan for v in (params.get(name),)]
        values = self.compiled.construct_params(params, _check=False)
        sql = self.sql
        for name, type_ in self.literals.items():
            sql = sql.replace(f"__[POSTCOMPILE_{name}]", self.compiled.render_literal_value(values.pop(name), type_))
        for name, proc in self.binds.items():
            if values.get(name) is not None:
                values[name] = proc(values[name])
        return sql, [values[n] for n in self.names] if self.positional else values


class Prepared:
    """A Core select compiled once per dialect and run on the session's own DBAPI cursor.

    ``rows(s, params)`` gives the driver's tuples, undecoded; ``objects(s, params)`` gives
    ``LazyRow`` objects that decode a value (datetime, JSON) with SQLAlchemy's own result
    processor when it is first read. A driver error comes out as SQLAlchemy's ``DBAPIError``;
    one that means the connection dropped invalidates it.
    """

    def __init__(self, statement):
        self.statement = statement
        self._by_dialect: dict[tuple, Compiled] = {}

    def _for(self, dialect: Dialect) -> Compiled:
        key = (dialect.name, dialect.driver, dialect.paramstyle)
        c = self._by_dialect.get(key)
        if c is None:
            c = self._by_dialect.setdefault(key, Compiled(self.statement, dialect))
        return c

    def objects(self, s: Session, params: dict | None = None) -> list[LazyRow]:
        """The rows as ``LazyRow`` objects (attribute access, each column decoded when read)."""
        raw, row_class = self._run(s, params, decoders=True)
        return list(map(row_class, raw))

    def rows(self, s: Session, params: dict | None = None) -> list[tuple]:
        return self._run(s, params)[0]

    def _run(self, s: Session, params: dict | None,
             decoders: bool = False) -> tuple[list[tuple], type[LazyRow] | None]:
        conn = s.connection()
        dialect = conn.dialect
        compiled = self._for(dialect)
        sql, args = compiled.args(params or {})
        cursor = conn.connection.cursor()
        try:
            cursor.execute(sql, args)
            rows = cursor.fetchall()
            # the description only the first time (psycopg builds its column objects on
            # every read of it)
            columns = (compiled.row_class or compiled.decoders(cursor.description)) if decoders else None
        except dialect.loaded_dbapi.Error as exc:
            dropped = dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
            cursor.close()
            if dropped:
                conn.invalidate(exc)
            raise sa_exc.DBAPIError.instance(sql, args, exc, dialect.loaded_dbapi.Error,
                                             connection_invalidated=dropped, dialect=dialect) from exc
        cursor.close()
        return rows, columns


class LazyRow:
    """A read-only row with attribute access like a mapped object's (``row.created_at``); a
    column is decoded by SQLAlchemy's result processor (datetime, JSON…) when first read, so
    a caller pays only for the columns it uses. A column the query did not select is an
    AttributeError."""

    __slots__ = ("_raw", "_seen")
    _columns: dict[str, tuple[int, object]] = {}  # key -> (index, result processor); set per statement

    def __init__(self, raw: tuple):
        self._raw = raw

    def __getattr__(self, name: str):
        if name.startswith("_"):  # a slot not set yet (_seen before the first read, copy): never a column
            raise AttributeError(name)
        try:
            seen = self._seen
        except AttributeError:
            seen = self._seen = {}
        if name in seen:
            return seen[name]
        try:
            index, proc = self._columns[name]
        except KeyError:
            raise AttributeError(f"{name!r} was not read") from None
        value = self._raw[index]
        if proc is not None and value is not None:
            value = proc(value)
        seen[name] = value
        return value

    def __repr__(self) -> str:
        return f"<LazyRow {dict(zip(self._columns, self._raw, strict=True))!r}>"


def get_db() -> Database:
    """The current app's database (needs an app context)."""
    return current_app.extensions["stcloud.db"]


def session():
    return get_db().session()


def read():
    return get_db().read()


def transaction():
    return get_db().transaction()
