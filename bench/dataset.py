"""Large synthetic job tables for the benchmarks, built fast and cached between runs.

SQLite: the schema comes from the real migrations, then one ``INSERT … SELECT`` over a
recursive CTE writes N jobs (the migration's triggers fill the search index as they would
for jobs submitted one by one). The file is cached under the temp dir, keyed by N and a hash
of the migrations, so a schema change rebuilds it. PostgreSQL: the same rows through
``generate_series`` into a throwaway cluster's database.

Distribution (fixed, so figures compare between runs): 70 % completed, 15 % failed, 10 %
cancelled, 3 % running, 2 % queued; providers replicate 60 %, worker 30 %, local 10 %; one job
every 30 s; names ``<base>-<style>-<n>`` from small word lists (so ``lora`` matches a fifth of
the jobs) and one ``zebra-…`` job in 50,000 (a rare term). A job with a long log (``LOG_JOB``)
holds ``log_lines`` lines in chunks of 4 lines (as a webhook or worker appends them) and as
many timeline events.
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, text

from stcloud.cli import alembic_config
from stcloud.jobs import counts

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("STCLOUD_BENCH_CACHE") or Path(tempfile.gettempdir()) / "stcloud-bench-cache")
LOG_JOB = "job_00000000000000000000000000log"
EPOCH = "2024-01-01 00:00:00"
BASES = ["flux", "sdxl", "sd3", "pixart", "kolors"]
STYLES = ["lora", "portrait", "anime", "product", "style"]

STATUS_SQL = ("CASE WHEN i % 100 < 70 THEN 'completed' WHEN i % 100 < 85 THEN 'failed' "
              "WHEN i % 100 < 95 THEN 'cancelled' WHEN i % 100 < 98 THEN 'running' ELSE 'queued' END")
PROVIDER_SQL = "CASE WHEN i % 10 < 6 THEN 'replicate' WHEN i % 10 < 9 THEN 'worker' ELSE 'local' END"


def _name_sql() -> str:
    bases = " ".join(f"WHEN {k} THEN '{b}'" for k, b in enumerate(BASES))
    styles = " ".join(f"WHEN {k} THEN '{w}'" for k, w in enumerate(STYLES))
    return (f"CASE WHEN i % 50000 = 7 THEN 'zebra-finetune-' || i ELSE "
            f"(CASE i % 5 {bases} END) || '-' || (CASE (i / 5) % 5 {styles} END) || '-' || i END")


def schema_key() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "migrations" / "versions").glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def log_line(k: int) -> str:
    return f"step {k}/1000000 loss={1 / (k + 1):.6f} lr=1e-4 stage=train\n"


def _sqlite_jobs(conn: sqlite3.Connection, n: int) -> None:
    conn.execute(f"""
        WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {n})
        INSERT INTO jobs (id, name, provider, status, config, dataloader_config, gpu_count,
                          created_at, updated_at, progress, outputs, attempt, max_attempts,
                          log_size, log_seq, poll_failures, cost_usd, hardware)
        SELECT printf('job_%026d', i), {_name_sql()}, {PROVIDER_SQL}, {STATUS_SQL},
               '{{}}', '[]', 1,
               strftime('%Y-%m-%d %H:%M:%S', '{EPOCH}', '+' || (i * 30) || ' seconds') || '.000000',
               strftime('%Y-%m-%d %H:%M:%S', '{EPOCH}', '+' || (i * 30) || ' seconds') || '.000000',
               '{{"step": 10, "total_steps": 100}}', '[]', 1, 3, 0, 0, 0, 0.01 * (i % 97), 'gpu-a40'
        FROM seq""")


def _sqlite_log(conn: sqlite3.Connection, lines: int, chunk_lines: int = 4) -> int:
    """The long-log job: ``lines`` lines in chunks; returns the log size in bytes."""
    conn.execute(f"""INSERT INTO jobs (id, name, provider, status, config, dataloader_config, gpu_count,
                     created_at, updated_at, progress, outputs, attempt, max_attempts, log_size, log_seq,
                     poll_failures) VALUES ('{LOG_JOB}', 'long log', 'worker', 'running', '{{}}', '[]', 1,
                     '2023-01-01 00:00:00.000000', '2023-01-01 00:00:00.000000', '{{}}', '[]', 1, 3, 0, 0, 0)""")
    offset = 0
    batch = []
    for start in range(0, lines, chunk_lines):
        data = "".join(log_line(k) for k in range(start, min(lines, start + chunk_lines))).encode()
        batch.append((LOG_JOB, offset, data))
        offset += len(data)
        if len(batch) >= 2000:
            conn.executemany("INSERT INTO job_log_chunks (job_id, \"offset\", data) VALUES (?, ?, ?)", batch)
            batch.clear()
    if batch:
        conn.executemany("INSERT INTO job_log_chunks (job_id, \"offset\", data) VALUES (?, ?, ?)", batch)
    conn.execute("UPDATE jobs SET log_size = ? WHERE id = ?", (offset, LOG_JOB))
    return offset


def events_sql(events: int, series: str) -> str:
    """``events`` timeline events of the long-log job (a heartbeat each), ids 1..events in
    order; ``series`` yields ``i`` (a recursive CTE or generate_series)."""
    return (f"INSERT INTO job_events (id, job_id, at, source, from_status, to_status, accepted, detail) "
            f"SELECT i, '{LOG_JOB}', {{at}}, 'worker', 'running', 'running', {{true}}, 'heartbeat ' || i FROM {series}")


def _sqlite_events(conn: sqlite3.Connection, events: int) -> None:
    conn.execute(f"WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {events}) "
                 + events_sql(events, "seq").format(
                     at="strftime('%Y-%m-%d %H:%M:%S', '2023-01-01 00:00:00', '+' || i || ' seconds') || '.000000'",
                     true="1"))


DATASET_VERSION = 2  # 2: the long-log job has as many timeline events as log lines


def sqlite_db(n: int, log_lines: int, *, rebuild: bool = False, say=print) -> Path:
    """A migrated SQLite file with ``n`` jobs and the long-log job, holding ``log_lines`` log
    lines and as many events (cached)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"jobs-{n}-{log_lines}-{schema_key()}-v{DATASET_VERSION}.db"
    if path.exists() and not rebuild:
        return path
    tmp = path.with_suffix(".building")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    started = time.monotonic()
    command.upgrade(alembic_config(f"sqlite:///{tmp}"), "head")
    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-200000")
    conn.execute("BEGIN")
    _sqlite_jobs(conn, n)
    _sqlite_log(conn, log_lines)
    _sqlite_events(conn, log_lines)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    os.replace(tmp, path)
    say(f"built {path.name}: {n} jobs, {log_lines} log lines in {time.monotonic() - started:.1f} s")
    return path


def postgres_load(url: str, n: int, log_lines: int) -> None:
    """Migrate the database at ``url`` and fill it like ``sqlite_db``."""
    command.upgrade(alembic_config(url), "head")
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(text(f"""
            INSERT INTO jobs (id, name, provider, status, config, dataloader_config, gpu_count,
                              created_at, updated_at, progress, outputs, attempt, max_attempts,
                              log_size, log_seq, poll_failures, cost_usd, hardware)
            SELECT 'job_' || lpad(i::text, 26, '0'), {_name_sql()}, {PROVIDER_SQL}, {STATUS_SQL},
                   '{{}}', '[]', 1,
                   timestamp '{EPOCH}' + (i * 30) * interval '1 second',
                   timestamp '{EPOCH}' + (i * 30) * interval '1 second',
                   '{{"step": 10, "total_steps": 100}}', '[]', 1, 3, 0, 0, 0, 0.01 * (i % 97), 'gpu-a40'
            FROM generate_series(1, {n}) AS i"""))
    raw = eng.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.cursor() as cur:
            cur.execute(f"""INSERT INTO jobs (id, name, provider, status, config, dataloader_config, gpu_count,
                        created_at, updated_at, progress, outputs, attempt, max_attempts, log_size, log_seq,
                        poll_failures) VALUES ('{LOG_JOB}', 'long log', 'worker', 'running', '{{}}', '[]', 1,
                        '2023-01-01 00:00:00', '2023-01-01 00:00:00', '{{}}', '[]', 1, 3, 0, 0, 0)""")
            offset, rows = 0, []
            for start in range(0, log_lines, 4):
                data = "".join(log_line(k) for k in range(start, min(log_lines, start + 4))).encode()
                rows.append((LOG_JOB, offset, data))
                offset += len(data)
            with cur.copy('COPY job_log_chunks (job_id, "offset", data) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute("UPDATE jobs SET log_size = %s WHERE id = %s", (offset, LOG_JOB))
            cur.execute(events_sql(log_lines, f"generate_series(1, {log_lines}) AS i").format(
                at="timestamp '2023-01-01 00:00:00' + i * interval '1 second'", true="true"))
            cur.execute("SELECT setval(pg_get_serial_sequence('job_events', 'id'), %s)", (log_lines,))
            cur.execute(str(counts.FOLD))  # the scheduler folds a load's count deltas within seconds
            cur.execute("ANALYZE")
        conn.commit()
    finally:
        raw.close()
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql("VACUUM ANALYZE job_count_deltas")  # as counts.fold does after a large fold
    eng.dispose()
