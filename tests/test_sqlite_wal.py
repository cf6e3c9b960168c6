"""stcloud/sqlite_wal.py: checkpoints run on a background thread (the WAL is copied and starts
over while writers keep committing), the writers' lock excludes across processes, and the
thread ends with its engine or its file."""
from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time

from stcloud import sqlite_wal
from stcloud.db import Database


def _wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_connections_leave_checkpoints_to_the_thread_and_the_wal_stays_small(tmp_path):
    path = tmp_path / "w.db"
    database = Database(f"sqlite:///{path}")
    try:
        with database.engine.begin() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
            conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB)")
        cp = sqlite_wal._running[str(path)]
        wal = str(path) + "-wal"
        sizes = []
        for _ in range(80):  # ~24 MB through the WAL in ~4 s: without checkpoints it would hold them all
            with database.engine.begin() as conn:
                for _ in range(100):
                    conn.exec_driver_sql("INSERT INTO t (data) VALUES (zeroblob(3000))")
            sizes.append(os.path.getsize(wal))
            time.sleep(0.05)
        assert cp.runs > 5
        assert max(sizes) < 12 * 1024 * 1024  # copied and started over again and again
        with database.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 8000
    finally:
        database.dispose()
    assert str(path) not in sqlite_wal._running and not cp.alive()


def test_the_thread_ends_with_the_last_engine_and_with_the_file(tmp_path):
    path = tmp_path / "g.db"
    a, b = Database(f"sqlite:///{path}"), Database(f"sqlite:///{path}")
    for d in (a, b):
        with d.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    cp = sqlite_wal._running[str(path)]
    a.dispose()
    assert cp.alive()  # b still uses the file
    b.dispose()
    assert _wait(lambda: not cp.alive())
    other = tmp_path / "gone.db"
    c = Database(f"sqlite:///{other}")
    with c.engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    cp = sqlite_wal._running[str(other)]
    c.engine.dispose()
    for p in tmp_path.glob("gone.db*"):
        p.unlink()
    assert _wait(lambda: not cp.alive())
    assert not other.exists()  # the thread never re-creates a removed database


def _hold(path, started, release):
    with sqlite_wal._writer_lock(path).held():
        started.set()
        release.wait(10)


def test_the_writers_lock_excludes_another_process(tmp_path):
    path = str(tmp_path / "l.db")
    sqlite3.connect(path).close()
    ctx = multiprocessing.get_context("fork")
    started, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold, args=(path, started, release))
    child.start()
    try:
        assert started.wait(10)
        got = []

        def take():
            with sqlite_wal._writer_lock(path).held():
                got.append(time.monotonic())

        import threading

        t = threading.Thread(target=take)
        t.start()
        time.sleep(0.3)
        assert got == []  # blocked while the other process holds it
        released = time.monotonic()
        release.set()
        t.join(10)
        assert got and got[0] >= released
    finally:
        release.set()
        child.join(10)
    assert (os.stat(path + "-writer").st_mode & 0o777) == 0o600
