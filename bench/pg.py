"""A throwaway PostgreSQL cluster on loopback for the benchmarks (Debian's server binaries,
run as the ``postgres`` user when we are root, like tests/test_postgres.py)."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text


def _bin(name: str) -> str | None:
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return hits[-1] if hits else None


def unavailable() -> str | None:
    """Why no cluster can be started here, or None."""
    if not (_bin("initdb") and _bin("pg_ctl")):
        return "PostgreSQL server binaries not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a postgres user"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg not installed"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def cluster() -> Iterator[str]:
    """Start a cluster, yield its SQLAlchemy URL, stop and delete it."""
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    base = tempfile.mkdtemp(prefix="stcloud-bench-pg-")
    os.chmod(base, 0o777)
    data, port = os.path.join(base, "data"), _free_port()
    try:
        subprocess.run(run_as + [_bin("initdb"), "-D", data, "-A", "trust", "-U", "stcloud", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        subprocess.run(run_as + [_bin("pg_ctl"), "-D", data, "-l", os.path.join(base, "log"), "-w", "-t", "60",
                                 "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
                                       "-c shared_buffers=256MB -c synchronous_commit=off", "start"],
                       check=True, capture_output=True, timeout=120)
        url = f"postgresql+psycopg://stcloud@127.0.0.1:{port}/postgres"
        deadline = time.time() + 30
        while True:
            try:
                eng = create_engine(url)
                with eng.connect() as c:
                    c.execute(text("select 1"))
                eng.dispose()
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        yield url
    finally:
        subprocess.run(run_as + [_bin("pg_ctl"), "-D", data, "-m", "immediate", "stop"], capture_output=True,
                       timeout=60)
        shutil.rmtree(base, ignore_errors=True)
