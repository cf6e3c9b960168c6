"""Direct connections (stcloud/direct.py): reused from a list, replaced when the server dropped
them, closed on errors, at recycle age and when the engine is disposed — on SQLite and on a
real PostgreSQL server."""
from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import bindparam, create_engine, select, text
from sqlalchemy import exc as sa_exc

from stcloud import db, direct
from stcloud.models import Job
from tests.test_postgres import pg_url  # noqa: F401 - the throwaway cluster fixture

ONE = db.Prepared(select(bindparam("x")).where(text("1 = 1")))
BAD = db.Prepared(select(text("* FROM no_such_table")))


def test_sqlite_reads_reuse_one_connection_and_close_it_on_errors(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'd.db'}")
    try:
        assert direct.rows(engine, ONE, {"x": 5}) == [(5,)]
        c = direct.for_engine(engine)
        conn = c.idle[-1][0]
        assert direct.rows(engine, ONE, {"x": 6}) == [(6,)] and c.idle[-1][0] is conn and len(c.idle) == 1
        with pytest.raises(sa_exc.OperationalError, match="no such table"):
            direct.rows(engine, BAD, {})
        assert c.idle == []  # the connection of a failed statement is not kept
        with pytest.raises(sqlite3.ProgrammingError):  # ... it is closed
            conn.execute("SELECT 1")
        assert direct.rows(engine, ONE, {"x": 7}) == [(7,)]
        kept = c.idle[-1][0]
        engine.dispose()  # disposing the engine closes its idle direct connections
        assert c.idle == []
        with pytest.raises(sqlite3.ProgrammingError):
            kept.execute("SELECT 1")
    finally:
        engine.dispose()


def test_at_most_max_idle_are_kept(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'd.db'}")
    try:
        c = direct.for_engine(engine)
        taken = [c.take() for _ in range(c.MAX_IDLE + 3)]
        for t in taken:
            c.give(t)
        assert len(c.idle) == c.MAX_IDLE
        with pytest.raises(sqlite3.ProgrammingError):
            taken[-1][0].execute("SELECT 1")
    finally:
        engine.dispose()


@pytest.mark.slow
def test_postgres_dropped_connection_is_replaced_and_old_ones_recycled(pg_url, monkeypatch):  # noqa: F811
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        pid_of = db.Prepared(select(text("pg_backend_pid()")))
        first = direct.rows(engine, pid_of, {})[0][0]
        assert direct.rows(engine, pid_of, {})[0][0] == first  # the same server session, reused
        with admin.connect() as a:  # the server drops it (a restart, an idle timeout)
            assert a.execute(text("SELECT pg_terminate_backend(:p)"), {"p": first}).scalar()
        second = direct.rows(engine, pid_of, {})[0][0]  # run again on a new connection
        assert second != first
        with pytest.raises(sa_exc.ProgrammingError, match="no_such_table"):
            direct.rows(engine, BAD, {})  # other errors are the caller's, as SQLAlchemy's
        c = direct.for_engine(engine)
        assert c.idle == []
        third = direct.rows(engine, pid_of, {})[0][0]
        conn, _since = c.idle[-1]
        c.idle[-1] = (conn, _since - db.POOL_RECYCLE_SECONDS)  # it has lived its recycle age
        assert direct.rows(engine, pid_of, {})[0][0] == third  # used once more, then closed
        assert c.idle == [] and conn.closed
        assert direct.rows(engine, pid_of, {})[0][0] != third
    finally:
        engine.dispose()
        admin.dispose()


@pytest.mark.slow
def test_postgres_log_read_is_one_autocommit_statement(pg_url, tmp_path, monkeypatch):  # noqa: F811
    """The log read runs on the read engine's autocommit connections: no transaction is left
    open on the server between polls (an idle-in-transaction session would hold back vacuum)."""
    from alembic import command

    from stcloud import create_app
    from stcloud.cli import alembic_config
    from stcloud.jobs import logread, service

    command.downgrade(alembic_config(pg_url), "base")
    command.upgrade(alembic_config(pg_url), "head")
    monkeypatch.delenv("STCLOUD_ADMIN_TOKEN", raising=False)
    app = create_app({"STCLOUD_HOME": str(tmp_path), "STCLOUD_DATABASE_URL": pg_url, "TESTING": True})
    try:
        with app.app_context():
            with db.transaction() as s:
                job = Job(name="logs", provider="local", status="running", config={}, dataloader_config=[])
                s.add(job)
                s.flush()
                jid = job.id
            service.apply_update(jid, service.JobUpdate(logs_append="hello\n"), source="test")
            assert logread.read_log(jid, 0)["text"] == "hello\n"
            c = direct.for_engine(db.get_db().read_engine)
            conn = c.idle[-1][0]
            assert conn.autocommit and conn.info.transaction_status == conn.info.transaction_status.IDLE
            service.apply_update(jid, service.JobUpdate(logs_append="world\n"), source="test")
            assert logread.read_log(jid, 6)["text"] == "world\n"  # the next poll sees the new line
    finally:
        app.extensions["stcloud.db"].dispose()
