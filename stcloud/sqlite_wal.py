"""SQLite in WAL mode for several server processes: the writers' lock and the checkpoints.

**The writers' lock.** SQLite's write lock does not block: a writer that finds it taken polls
with sleeps (``db.begin_immediate``), and under ``gunicorn -w 2`` the waiting worker slept past
most releases. ``writer_lock(engine)`` is a blocking lock across processes (``flock`` on
``<database>-writer``; a BSD lock on a file of its own, since an fcntl lock on the database
file would be dropped with SQLite's own when any descriptor of it is closed) plus a thread
lock (flock is per open file, so threads of one process queue on the thread lock). The
webhook fast path takes it around its transactions; other writers keep SQLite's lock alone.

**Checkpoints off the request path.**

By default SQLite checkpoints inside whichever commit pushes the WAL past 1000 pages: that
request copies the WAL into the database and fsyncs both. Measured on the webhook path: the
top 1 % of commits (1-9 ms each) were half of all commit time, ~45 us per delivery.

Here every connection of a server process has ``wal_autocheckpoint=0`` and one daemon thread
per process and database file checkpoints every ``INTERVAL`` seconds when something was
committed (``PRAGMA data_version``): a PASSIVE checkpoint (never waits) copies what the WAL
holds. Once the WAL holds ``RESTART_FRAMES`` frames, a second one under the writers' lock
copies the few frames committed meanwhile, so the WAL is fully copied and the next writer
starts it over: without that pause a busy WAL was never fully copied and grew without bound
(400 MB in 10 s); with it after every checkpoint, writers waited on it a tenth of the time. The WAL is synced by
each checkpoint, so the window of commits a power loss can take (``synchronous=NORMAL``) is
``INTERVAL``, where it was "until the next 1000 pages" (hours on a quiet instance).

The thread belongs to the process that started it: after a fork (``gunicorn --preload``) the
child's first connection starts its own. It stops when the database file is gone.
"""
from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from sqlalchemy.engine import Engine

from stcloud import forks

log = logging.getLogger(__name__)

INTERVAL = 0.05  # seconds between checkpoints while commits come in
IDLE_INTERVAL = 1.0  # at most this long between looks at a quiet database
RESTART_FRAMES = 4000  # WAL frames (4 KiB pages) past which the WAL is made to start over


class WriterLock:
    """The writers' lock of one database file in this process (see the module doc)."""

    def __init__(self, path: str):
        self.pid = os.getpid()
        self._thread_lock = threading.Lock()
        fd = os.open(path + "-writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "r+b", buffering=0)

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._thread_lock:
            fcntl.flock(self._file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._file, fcntl.LOCK_UN)

    def close(self) -> None:
        self._file.close()


_locks: forks.PerProcess[WriterLock] = forks.PerProcess()  # path -> this process's lock


def _writer_lock(path: str) -> WriterLock:
    return _locks.get(path, WriterLock)


def writer_lock(engine: Engine):
    """A context manager: the writers' lock of ``engine``'s file (nothing for memory databases)."""
    path = _path(engine)
    return _writer_lock(path).held() if path is not None else nullcontext()


class Checkpointer:
    """The checkpoint thread of one database file in this process. It ends when the file is
    gone or no engine of this process uses it any more (a test's app); while nothing is
    committed it wakes up less and less often (up to ``IDLE_INTERVAL``)."""

    def __init__(self, path: str, interval: float = INTERVAL):
        self.path, self.interval, self.pid = path, interval, os.getpid()
        self.engines: weakref.WeakSet = weakref.WeakSet()
        self.runs = self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self.pid == os.getpid() and self._thread.is_alive()

    def _run(self) -> None:
        conn, seen, wait = None, None, self.interval
        try:
            while not self._stop.wait(wait):
                if not self.engines or not os.path.exists(self.path):
                    return
                try:
                    if conn is None:  # mode=rw: never create the file
                        conn = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=0,
                                               isolation_level=None, check_same_thread=False)
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    if version == seen:
                        wait = min(wait * 2, IDLE_INTERVAL)
                        continue
                    wait = self.interval
                    self.checkpoint(conn)
                    seen = version
                except sqlite3.Error as exc:  # busy, or the file went away: next interval
                    log.debug("checkpoint of %s skipped: %s", self.path, exc)
        finally:
            if conn is not None:
                conn.close()

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames >= RESTART_FRAMES:
            # the frames committed meanwhile, with the writers held off: the WAL then starts over
            with _writer_lock(self.path).held():
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.restarts += 1
        self.runs += 1

    def stop(self) -> None:
        self._stop.set()
        if self.pid == os.getpid() and self._thread is not threading.current_thread():
            self._thread.join(5)


_lock = threading.Lock()
_running: dict[str, Checkpointer] = {}


def _path(engine: Engine) -> str | None:
    path = engine.url.database
    if engine.dialect.name != "sqlite" or not path or path == ":memory:" or path.startswith("file:"):
        return None
    return os.path.abspath(path)


def take_over(engine: Engine) -> bool:
    """Run ``engine``'s checkpoints on this process's thread (started once per file); True when
    the caller's connection should leave checkpoints to it (``wal_autocheckpoint=0``)."""
    path = _path(engine)
    if path is None:
        return False
    with _lock:
        cp = _running.get(path)
        if cp is None or not cp.alive():
            cp = _running[path] = Checkpointer(path)
        cp.engines.add(engine)
    return True


def stop(engine: Engine) -> None:
    """``engine`` is disposed: its file's thread stops when no other engine here uses it."""
    path = _path(engine)
    with _lock:
        cp = _running.get(path) if path else None
        if cp is None:
            return
        cp.engines.discard(engine)
        if cp.engines:
            return
        del _running[path]
    cp.stop()
