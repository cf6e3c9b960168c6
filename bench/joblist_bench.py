"""The job list and log reads at a million jobs / a million log lines, SQLite and PostgreSQL.

Ours: what the routes call, in the read session they open (``db.read()``):
``listing.list_jobs`` (page + count, rows decoded when read), ``listing.list_events`` /
``recent_events``; and ``logread.read_log`` (the logs API's reader, on a direct connection of
its own, no session), inside one app context (a route runs in its request's), beside
the best bare indexed SQL for the same rows run on the raw driver connection (the peer),
interleaved. Also the whole API request (Flask test client, JSON) as an absolute p50 for the
issue's < 20 ms goal. Datasets come from bench/dataset.py (SQLite cached between runs).

    python -m bench joblist                  # 1,000,000 jobs and log lines
    python -m bench joblist -- --quick       # 100,000
    python -m bench joblist -- --no-postgres
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bench import dataset, pg
from bench.report import ROWS, Row, interleaved, med, num
from stcloud import create_app, db
from stcloud.jobs import listing, logread
from stcloud.jobs.listing import Filters
from stcloud.models import Job

PAGE = 50
ORDER = "ORDER BY created_at DESC, id DESC"


def _cases(n: int, total: int, dialect: str) -> list[tuple[str, Filters, str, dict]]:
    """(figure, filters, peer SQL, list_jobs kwargs). Deep pages start at job n/10 (90 % down);
    ``total`` is the number of rows in jobs (n plus the long-log job)."""
    like = "ILIKE" if dialect == "postgresql" else "LIKE"
    deep_at = f"job_{n // 10:026d}"
    fts_zebra = ("SELECT * FROM jobs WHERE id IN (SELECT job_id FROM job_search WHERE id IN "
                 f"(SELECT rowid FROM jobs_fts WHERE jobs_fts MATCH '\"zebra\"')) {ORDER} LIMIT {PAGE}")
    return [
        ("default page", Filters(), f"SELECT * FROM jobs {ORDER} LIMIT {PAGE}", {}),
        ("status=completed (70 %)", Filters(status=("completed",)),
         f"SELECT * FROM jobs WHERE status = 'completed' {ORDER} LIMIT {PAGE}", {}),
        ("status=queued (2 %)", Filters(status=("queued",)),
         f"SELECT * FROM jobs WHERE status = 'queued' {ORDER} LIMIT {PAGE}", {}),
        ("provider=worker (30 %)", Filters(provider="worker"),
         f"SELECT * FROM jobs WHERE provider = 'worker' {ORDER} LIMIT {PAGE}", {}),
        ("q=lora (20 % of names)", Filters(q="lora"),
         f"SELECT * FROM jobs WHERE name {like} '%lora%' {ORDER} LIMIT {PAGE}", {}),
        (f"q=zebra ({max(1, n // 50000)} names)", Filters(q="zebra"),
         (f"SELECT * FROM jobs WHERE name ILIKE '%zebra%' {ORDER} LIMIT {PAGE}" if dialect == "postgresql"
          else fts_zebra), {}),
        ("deep page by cursor (90 % down)", Filters(),
         f"SELECT * FROM jobs WHERE (created_at, id) < ((SELECT created_at FROM jobs WHERE id = '{deep_at}'), "
         f"'{deep_at}') {ORDER} LIMIT {PAGE}", {"cursor": "deep"}),
        ("status=failed deep page by cursor", Filters(status=("failed",)),
         f"SELECT * FROM jobs WHERE status = 'failed' AND (created_at, id) < ((SELECT created_at FROM jobs "
         f"WHERE id = '{deep_at}'), '{deep_at}') {ORDER} LIMIT {PAGE}", {"cursor": "deep"}),
        # the best bare query for a page near the end walks from the oldest job, knowing the
        # table's size (the bench built it; ours reads it from job_counts on every request)
        ("offset = N-100 (compatibility)", Filters(),
         f"SELECT * FROM jobs WHERE id IN (SELECT id FROM jobs ORDER BY created_at ASC, id ASC LIMIT {PAGE} "
         f"OFFSET {total - (n - 100) - PAGE}) {ORDER}", {"offset": n - 100}),
    ]


def _cursor_at(app, job_id: str) -> str:
    with app.app_context(), db.session() as s:
        return listing.encode_cursor(s.get(Job, job_id), "next")


def measure(app, raw_conn, n: int, log_bytes: int, dialect: str, rounds: int, per_round: int,
            say=print) -> list[Row]:
    cursor = _cursor_at(app, f"job_{n // 10:026d}")
    pairs, api = {}, {}
    total = raw_conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    for what, f, sql, kw in _cases(n, total, dialect):
        kwargs = {**kw}
        if kwargs.get("cursor") == "deep":
            kwargs["cursor"] = cursor

        def ours(f=f, kwargs=kwargs):
            with db.read() as s:
                page = listing.list_jobs(s, f, limit=PAGE, **kwargs)
                assert page.jobs

        def peer(sql=sql):
            cur = raw_conn.cursor()
            cur.execute(sql)
            assert cur.fetchall()
            cur.close()

        pairs[what] = (ours, peer)
        qs = "&".join(filter(None, [f"status={f.status[0]}" if f.status else "",
                                    f"provider={f.provider}" if f.provider else "", f"q={f.q}" if f.q else "",
                                    f"cursor={kwargs['cursor']}" if "cursor" in kwargs else "",
                                    f"offset={kwargs['offset']}" if "offset" in kwargs else ""]))
        api[what] = f"/api/cloud/jobs?limit={PAGE}&{qs}"
    # logs: the middle of the long log, 1 MiB per call (the API's read size), and the tail.
    # The same result is the text and the job's size and status (next_offset, complete) and
    # owner (who may read it): the best bare query reads the job row and the chunks at once.
    for label, offset in (("log ?offset= middle (1 MiB read)", log_bytes // 2),
                          ("log ?offset= near the end (poll)", log_bytes - 300)):
        def ours(offset=offset):
            assert logread.read_log(dataset.LOG_JOB, offset)["next_offset"] > offset

        mark = "?" if dialect == "sqlite" else "%s"
        sql = ('SELECT j.status, j.log_size, j.owner_id, c."offset", c.data FROM jobs j '
               'LEFT JOIN job_log_chunks c ON c.job_id = j.id AND c."offset" >= '
               f'coalesce((SELECT max("offset") FROM job_log_chunks WHERE job_id = {mark} AND "offset" <= {mark}), 0) '
               f'AND c."offset" < {mark} WHERE j.id = {mark} ORDER BY c."offset"')

        def peer(offset=offset, sql=sql):
            cur = raw_conn.cursor()
            cur.execute(sql, (dataset.LOG_JOB, offset, offset + logread.MAX_LOG_READ, dataset.LOG_JOB))
            assert cur.fetchall()
            cur.close()

        pairs[label] = (ours, peer)
        api[label] = f"/api/cloud/jobs/{dataset.LOG_JOB}/logs?offset={offset}"
    # events of the same job (as many as log lines): a page from the middle, and the job page's
    # timeline (the newest 100)
    mark = "?" if dialect == "sqlite" else "%s"
    events = raw_conn.execute(f"SELECT count(*) FROM job_events WHERE job_id = {mark}",
                              (dataset.LOG_JOB,)).fetchone()[0]
    for label, ours_fn, sql, params in (
        ("events ?after= middle (1000)", lambda s: listing.list_events(s, dataset.LOG_JOB, after=events // 2),
         f"SELECT * FROM job_events WHERE job_id = {mark} AND id > {mark} ORDER BY id LIMIT 1001",
         (dataset.LOG_JOB, events // 2)),
        ("timeline: newest 100 events", lambda s: listing.recent_events(s, dataset.LOG_JOB),
         f"SELECT * FROM job_events WHERE job_id = {mark} ORDER BY id DESC LIMIT 100", (dataset.LOG_JOB,)),
    ):
        def ours(fn=ours_fn):
            with db.read() as s:
                assert fn(s)

        def peer(sql=sql, params=params):
            cur = raw_conn.cursor()
            cur.execute(sql, params)
            assert cur.fetchall()
            cur.close()

        pairs[label] = (ours, peer)
    with app.app_context():  # the request's (a route runs inside it; the API column has its cost)
        for fn, _ in pairs.values():  # warm caches (and the count cache) before timing
            fn()
        times = interleaved(pairs, rounds, per_round)
    client = app.test_client()
    rows = []
    for what, (o, p) in times.items():
        api_ms = None
        if what in api:
            api_times = []
            for _ in range(rounds * per_round):
                t0 = time.perf_counter()
                r = client.get(api[what])
                api_times.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, r.data
            api_ms = med(api_times)
        area = "logs" if what.startswith("log") else "events" if "event" in what else "list"
        row = Row(f"{area}-{dialect[:2]}",
                  what, med(o), med(p), "ms", min(o), min(p),
                  goal="p50<20ms, <=2x" + (f"; API p50 {api_ms:.1f} ms" if api_ms is not None else ""))
        row.met = row.ours < 20 and row.ratio <= 2 and (api_ms is None or api_ms < 20)
        rows.append(row)
        say(f"  {what:40s} ours {num(med(o)):>8} ms (min {num(min(o)):>6})  bare {num(med(p)):>8} ms "
            f"(min {num(min(p)):>6})  x{row.ratio:5.2f}" + (f"  API {api_ms:6.2f} ms" if api_ms is not None else ""))
    return rows


def _app(url: str, home: Path):
    return create_app({"STCLOUD_HOME": str(home), "STCLOUD_DATABASE_URL": url, "TESTING": True,
                       "STCLOUD_AUTH": "off"})  # loopback-only test client; sign-in is not what is measured


def run_sqlite(n: int, log_lines: int, rounds: int, per_round: int) -> list[Row]:
    path = dataset.sqlite_db(n, log_lines)
    with tempfile.TemporaryDirectory(prefix="stcloud-bench-home-") as home:
        app = _app(f"sqlite:///{path}", Path(home))
        raw = sqlite3.connect(path)
        try:
            log_bytes = raw.execute("SELECT log_size FROM jobs WHERE id = ?", (dataset.LOG_JOB,)).fetchone()[0]
            print(f"SQLite {sqlite3.sqlite_version}: {n:,} jobs, log of {log_lines:,} lines ({log_bytes:,} bytes)")
            return measure(app, raw, n, log_bytes, "sqlite", rounds, per_round)
        finally:
            raw.close()
            app.extensions["stcloud.db"].dispose()


def run_postgres(n: int, log_lines: int, rounds: int, per_round: int) -> list[Row]:
    import psycopg

    with pg.cluster() as url, tempfile.TemporaryDirectory(prefix="stcloud-bench-home-") as home:
        dataset.postgres_load(url, n, log_lines)
        app = _app(url, Path(home))
        raw = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
        try:
            log_bytes = raw.execute("SELECT log_size FROM jobs WHERE id = %s", (dataset.LOG_JOB,)).fetchone()[0]
            print(f"PostgreSQL: {n:,} jobs, log of {log_lines:,} lines ({log_bytes:,} bytes)")
            return measure(app, raw, n, log_bytes, "postgresql", rounds, per_round)
        finally:
            raw.close()
            app.extensions["stcloud.db"].dispose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="joblist_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, help="default 1,000,000 (--quick: 100,000)")
    ap.add_argument("--log-lines", type=int, help="default 1,000,000 (--quick: 100,000)")
    ap.add_argument("--rounds", type=int, help="default 5 (--quick: 3)")
    ap.add_argument("--per-round", type=int, help="default 5 (--quick: 3)")
    ap.add_argument("--quick", action="store_true", help="100,000 jobs and log lines, 3 rounds")
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args(argv)
    sizes = (100_000, 100_000, 3, 3) if args.quick else (1_000_000, 1_000_000, 5, 5)
    for field, default in zip(("jobs", "log_lines", "rounds", "per_round"), sizes, strict=True):
        if getattr(args, field) is None:  # an explicit size wins over --quick's
            setattr(args, field, default)
    rows = run_sqlite(args.jobs, args.log_lines, args.rounds, args.per_round)
    reason = "skipped (--no-postgres)" if args.no_postgres else pg.unavailable()
    if reason:
        print(f"PostgreSQL: {reason}", file=sys.stderr)
    else:
        rows += run_postgres(args.jobs, args.log_lines, args.rounds, args.per_round)
    ROWS.extend(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
