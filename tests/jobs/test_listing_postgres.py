"""The job list on PostgreSQL: the 0007 indexes (pg_trgm for names), keyset pages, search,
counts and log offsets — the same answers as on SQLite."""
from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from stcloud import db
from stcloud.models import Job
from tests.jobs.test_listing import expected_order, ids_of, seed, walk
from tests.test_postgres import pg_url  # noqa: F401 - the throwaway cluster fixture

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_app(pg_url, tmp_path, monkeypatch):  # noqa: F811
    from alembic import command

    from stcloud import create_app
    from stcloud.cli import alembic_config

    command.downgrade(alembic_config(pg_url), "base")
    command.upgrade(alembic_config(pg_url), "head")
    monkeypatch.delenv("STCLOUD_ADMIN_TOKEN", raising=False)
    app = create_app({"STCLOUD_HOME": str(tmp_path), "STCLOUD_DATABASE_URL": pg_url, "TESTING": True})
    yield app
    app.extensions["stcloud.db"].dispose()


def test_pg_indexes_and_trigram(pg_app, pg_url):  # noqa: F811
    eng = create_engine(pg_url)
    with eng.connect() as c:
        names = set(c.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'")).scalars())
        assert {"ix_jobs_created_id", "ix_jobs_status_created_id", "ix_jobs_provider_created_id",
                "ix_jobs_name_trgm"} <= names
    eng.dispose()


def test_pg_cursor_filters_search_and_logs(pg_app):
    from stcloud.jobs import logread, service

    seed(pg_app, 70, names=lambda i: ["flux lora", "sdxl style", "100% cat_face"][i % 3] + f" {i}")
    client = pg_app.test_client()
    assert ids_of(walk(client, "", 9)) == expected_order(pg_app)
    assert ids_of(walk(client, "status=failed", 4)) == expected_order(pg_app, lambda j: j.status == "failed")
    for q in ["LORA", "% c", "_f", "style 1", "o'k\\"]:
        pages = walk(client, f"q={q.replace('%', '%25')}", 5)
        want = expected_order(pg_app, lambda j, q=q: q.lower() in j.name.lower())
        assert ids_of(pages) == want and pages[0]["total"] == len(want), q
    with pg_app.app_context(), db.transaction() as s:
        job = s.get(Job, expected_order(pg_app)[0])
        job.name = "renamed okapi"
        jid = job.id
    assert ids_of(walk(client, "q=okapi", 5)) == [jid]
    with pg_app.app_context():
        for k in range(50):
            service.apply_update(jid, service.JobUpdate(logs_append=f"line {k}\n"), source="test")
        full = "".join(f"line {k}\n" for k in range(50)).encode()
        for offset in (0, 7, 100, len(full) - 3, len(full)):
            got = logread.read_log(jid, offset, limit=20)
            assert got["text"].encode() == full[offset:offset + 20]


def test_pg_cursor_stable_under_inserts_and_estimates_labelled(pg_app, monkeypatch):
    from stcloud.jobs import listing

    seed(pg_app, 30)
    client = pg_app.test_client()
    before = expected_order(pg_app)
    first = client.get("/api/cloud/jobs?limit=7").get_json()
    with pg_app.app_context(), db.transaction() as s:  # newer jobs arrive between two pages
        for k in range(3):
            s.add(Job(name=f"inserted {k}", provider="local", status="queued", config={}, dataloader_config=[]))
    pages = walk(client, "", 7, start=first)
    assert ids_of(pages) == before
    bad = client.get("/api/cloud/jobs?cursor=bm9wZQ")
    assert bad.status_code == 400 and bad.mimetype == "application/problem+json"
    monkeypatch.setattr(listing, "COUNT_EXACT_MAX", 5)
    listing._count_cache.clear()
    body = client.get("/api/cloud/jobs").get_json()
    assert body["count_is_estimate"] is False and body["total"] == 33  # job_counts: exact
    body = client.get("/api/cloud/jobs?q=job").get_json()
    assert body["count_is_estimate"] is True and body["total"] == 30
    assert 'data-estimate="true"' in client.get("/jobs?q=job").get_data(as_text=True)


def test_pg_polls_are_conditional(pg_app, monkeypatch):
    from stcloud.web import conditional
    from tests.jobs.factories import make_job

    now = conditional.time.time()  # the running job's tag holds a 30 s clock bucket: held still
    monkeypatch.setattr(conditional.time, "time", lambda: now)

    jid = make_job(pg_app, "running")
    client, hx = pg_app.test_client(), {"HX-Request": "true"}
    tag, weak = client.get(f"/jobs/{jid}/row", headers=hx).get_etag()
    assert weak and client.get(f"/jobs/{jid}/row", headers={**hx, "If-None-Match": f'W/"{tag}"'}).status_code == 304


def test_pg_list_rows_read_like_orm_jobs_without_a_transaction(pg_app):
    """On PostgreSQL too: list rows and events equal the ORM's values, and a read session runs
    in autocommit (no BEGIN/COMMIT round trips, no transaction left open)."""
    from sqlalchemy import select

    from stcloud.jobs import listing, metrics, service
    from stcloud.jobs.listing import Filters
    from stcloud.models import JobEvent, utcnow
    from tests.jobs.test_listing import _rich_jobs

    _rich_jobs(pg_app)
    with pg_app.app_context(), db.read() as s:
        rows = listing.list_jobs(s, Filters(), limit=50).jobs
        events, _ = listing.list_events(s, rows[0].id)
        driver = s.connection().connection.driver_connection
        assert driver.autocommit and driver.info.transaction_status == 0  # IDLE: nothing open
    with pg_app.app_context(), db.session() as s:
        now = utcnow()
        for row in rows:
            job = s.get(Job, row.id)
            for col in listing._LIST_COLUMNS:
                assert getattr(row, col.key) == getattr(job, col.key), col.key
            ours, theirs = (service.to_dict(j, include_config=False) for j in (row, job))
            assert ours.pop("metrics") and theirs.pop("metrics")
            assert ours == theirs and metrics.compute(row, now=now) == metrics.compute(job, now=now)
        orm_events = s.scalars(select(JobEvent).where(JobEvent.job_id == rows[0].id).order_by(JobEvent.id)).all()
        assert [service.event_to_dict(e) for e in events] == [service.event_to_dict(e) for e in orm_events]


def _kill_pooled_backend(app, pg_url) -> int:  # noqa: F811
    """Terminate the server process behind the read pool's (only) connection; its pid."""
    from stcloud.jobs import listing

    with app.app_context(), db.read() as s:
        listing.list_jobs(s, listing.Filters())
        pid = s.connection().connection.driver_connection.info.backend_pid
    eng = create_engine(pg_url)
    with eng.connect() as c:
        assert c.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    eng.dispose()
    return pid


def test_pg_idle_connection_is_pinged_and_replaced(pg_app, pg_url, monkeypatch):  # noqa: F811
    """A pooled connection idle longer than IDLE_PING_SECONDS is pinged at checkout: a dead
    one is replaced before use, so the request does not fail."""
    from stcloud.jobs import listing

    seed(pg_app, 3)
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)
    dead = _kill_pooled_backend(pg_app, pg_url)
    with pg_app.app_context(), db.read() as s:
        assert len(listing.list_jobs(s, listing.Filters()).jobs) == 3
        assert s.connection().connection.driver_connection.info.backend_pid != dead


def test_pg_recent_connection_not_pinged_recovers_after_one_error(pg_app, pg_url, monkeypatch):  # noqa: F811
    """A connection used a moment ago is not pinged (no round trip); if it died meanwhile the
    statement fails once with the connection invalidated, and the next request reconnects."""
    from sqlalchemy import exc

    from stcloud.jobs import listing

    seed(pg_app, 3)
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 3600.0)
    pings = []
    engine = pg_app.extensions["stcloud.db"].read_engine
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda conn: pings.append(1) or real_ping(conn))
    dead = _kill_pooled_backend(pg_app, pg_url)
    with pg_app.app_context(), db.read() as s, pytest.raises(exc.DBAPIError) as failed:
        listing.list_jobs(s, listing.Filters())
    assert failed.value.connection_invalidated
    with pg_app.app_context(), db.read() as s:
        assert len(listing.list_jobs(s, listing.Filters()).jobs) == 3
        assert s.connection().connection.driver_connection.info.backend_pid != dead
    assert pings == []


def test_pg_counts_exact_through_deltas_and_folds(pg_app, pg_url, monkeypatch):  # noqa: F811
    from sqlalchemy import delete, update

    from stcloud.jobs import counts, listing
    from stcloud.jobs.listing import Filters
    from tests.jobs.test_counts import _own, assert_counts_exact

    ids = seed(pg_app, 40)
    _own(pg_app, ids)
    assert_counts_exact(pg_app)  # from job_counts + the deltas not folded yet
    with pg_app.app_context():
        counts.fold()
    with pg_app.app_context(), db.transaction() as s:
        s.execute(update(Job).where(Job.id == ids[3]).values(status="failed", provider="local"))
        s.execute(update(Job).where(Job.id == ids[4]).values(owner_id="user_b", name="renamed"))
        s.execute(delete(Job).where(Job.id.in_(ids[30:33])))
    assert_counts_exact(pg_app)
    eng = create_engine(pg_url)
    with eng.connect() as c:
        assert c.execute(text("SELECT count(*) FROM job_count_deltas")).scalar() > 0
    monkeypatch.setattr(counts, "VACUUM_AFTER", 5)  # a large fold vacuums the deltas' table at once
    with pg_app.app_context():
        assert counts.fold() == 2 + 2 + 3  # two moved jobs (-1, +1 each) and three deletes
    with eng.connect() as c:
        assert c.execute(text("SELECT count(*) FROM job_count_deltas")).scalar() == 0
        assert c.execute(text("SELECT vacuum_count FROM pg_stat_user_tables "
                              "WHERE relname = 'job_count_deltas'")).scalar() >= 1
    eng.dispose()
    assert_counts_exact(pg_app)
    want = expected_order(pg_app)
    with pg_app.app_context(), db.read() as s:
        for offset in range(1, len(want) + 2):
            page = listing.list_jobs(s, Filters(), limit=6, offset=offset)
            assert [j.id for j in page.jobs] == want[offset:offset + 6] and page.total == len(want), offset


def test_pg_writers_in_one_count_group_do_not_wait_for_each_other(pg_app, pg_url):  # noqa: F811
    """Two open transactions each move a job between the same two groups: with a counter row
    per group the second would wait for the first to commit; with deltas it does not."""
    from tests.jobs.factories import make_job

    a, b = make_job(pg_app, "queued", provider="worker"), make_job(pg_app, "queued", provider="worker")
    eng = create_engine(pg_url)
    first, second = eng.connect(), eng.connect()
    try:
        t1 = first.begin()
        first.execute(text("UPDATE jobs SET status = 'failed' WHERE id = :id"), {"id": a})
        t2 = second.begin()
        second.execute(text("SET LOCAL lock_timeout = '2s'"))
        second.execute(text("UPDATE jobs SET status = 'failed' WHERE id = :id"), {"id": b})
        t2.commit()  # did not wait for the first transaction
        t1.commit()
    finally:
        first.close()
        second.close()
        eng.dispose()
    from tests.jobs.test_counts import assert_counts_exact
    assert_counts_exact(pg_app)
