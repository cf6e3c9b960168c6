"""Job list at scale (correctness only; timings live in bench/): keyset pages, filters,
FTS search kept in step by triggers, counts labelled as estimates, log reads at any offset,
event pages."""
from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest
from alembic import command
from sqlalchemy import create_engine, event, select, text

from stcloud import db
from stcloud.cli import alembic_config
from stcloud.errors import BadRequest, NotFound
from stcloud.jobs import listing, logread, metrics, service
from stcloud.jobs.listing import Filters
from stcloud.models import Job, JobEvent, utcnow
from tests.jobs.factories import make_job

STATUSES = ["completed", "failed", "running", "queued"]
PROVIDERS = ["replicate", "worker", "local"]


def seed(app, n: int, *, names=None, start=None) -> list[str]:
    """``n`` jobs; every third shares its created_at with the previous one (ties on the key)."""
    base = start or utcnow() - timedelta(days=1)
    ids = []
    with app.app_context(), db.transaction() as s:
        for i in range(n):
            at = base + timedelta(seconds=i - (1 if i % 3 == 2 else 0))
            job = Job(name=names(i) if names else f"job {i}", provider=PROVIDERS[i % 3],
                      status=STATUSES[i % 4], created_at=at, config={}, dataloader_config=[])
            s.add(job)
            s.flush()
            ids.append(job.id)
    return ids


def walk(client, query: str, limit: int, direction: str = "next_cursor", start: dict | None = None):
    """Follow cursors from the first page (or ``start``); returns the pages."""
    page = start or client.get(f"/api/cloud/jobs?{query}&limit={limit}").get_json()
    pages = [page]
    while page[direction]:
        page = client.get(f"/api/cloud/jobs?{query}&limit={limit}&cursor={page[direction]}").get_json()
        pages.append(page)
    return pages


def ids_of(pages) -> list[str]:
    return [j["id"] for p in pages for j in p["jobs"]]


def expected_order(app, predicate=lambda j: True) -> list[str]:
    with app.app_context(), db.session() as s:
        jobs = [j for j in s.query(Job).all() if predicate(j)]
    return [j.id for j in sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)]


def test_cursor_visits_every_row_once_in_order(app, client):
    seed(app, 103)
    pages = walk(client, "", 10)
    assert ids_of(pages) == expected_order(app)
    assert len(pages) == 11 and pages[0]["prev_cursor"] is None and pages[-1]["next_cursor"] is None
    # back from the last page with prev_cursor: the same pages in reverse
    back = walk(client, "", 10, "prev_cursor", start=pages[-1])
    assert [ids_of([p]) for p in back] == [ids_of([p]) for p in reversed(pages)]


def test_cursor_under_concurrent_inserts(app, client):
    seed(app, 120)
    before = expected_order(app)
    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set() and n < 200:
            with app.app_context(), db.transaction() as s:
                s.add(Job(name=f"new {n}", provider="local", status="queued", config={}, dataloader_config=[]))
            n += 1

    t = threading.Thread(target=writer)
    first = client.get("/api/cloud/jobs?limit=7").get_json()
    t.start()
    try:
        pages = walk(client, "", 7, start=first)
    finally:
        stop.set()
        t.join(30)
    seen = ids_of(pages)
    assert len(seen) == len(set(seen))  # never twice
    assert [i for i in seen if i in set(before)] == before  # every older row, in order
    assert all(i in set(before) for i in seen[len(first["jobs"]):])  # new rows are newer: not on later pages


def test_filters_with_cursor(app, client):
    seed(app, 90)
    for query, pred in [
        ("status=failed", lambda j: j.status == "failed"),
        ("provider=worker", lambda j: j.provider == "worker"),
        ("status=running,queued&provider=local", lambda j: j.status in ("running", "queued") and j.provider == "local"),
        ("q=job%201", lambda j: "job 1" in j.name),
    ]:
        pages = walk(client, query, 4)
        assert ids_of(pages) == expected_order(app, pred), query
        assert pages[0]["total"] == len(expected_order(app, pred)) and not pages[0]["count_is_estimate"]


def test_offset_still_accepted_and_gives_a_cursor(app, client):
    seed(app, 30)
    order = expected_order(app)
    page = client.get("/api/cloud/jobs?limit=5&offset=10").get_json()
    assert [j["id"] for j in page["jobs"]] == order[10:15] and page["offset"] == 10
    nxt = client.get(f"/api/cloud/jobs?limit=5&cursor={page['next_cursor']}").get_json()
    assert [j["id"] for j in nxt["jobs"]] == order[15:20]
    prev = client.get(f"/api/cloud/jobs?limit=5&cursor={page['prev_cursor']}").get_json()
    assert [j["id"] for j in prev["jobs"]] == order[5:10]


@pytest.mark.parametrize("query, needle", [
    ("cursor=nope", "cursor"), ("cursor=eyJrIjoxfQ", "cursor"), ("cursor=AAAA&offset=3", "cursor"),
])
def test_bad_cursor_is_a_400(client, query, needle):
    r = client.get(f"/api/cloud/jobs?{query}")
    assert r.status_code == 400 and r.mimetype == "application/problem+json"
    assert needle in r.get_json()["detail"]


def _search(client, q):
    return sorted(j["name"] for j in walk(client, f"q={q}", 50)[0]["jobs"])


def test_fts_search_follows_renames_and_deletes(app, client):
    jid = make_job(app, "completed", name="portrait of a zebra")
    make_job(app, "running", name="Zebra crossing")
    make_job(app, "queued", name="giraffe")
    assert _search(client, "ZEBRA") == ["Zebra crossing", "portrait of a zebra"]
    with app.app_context(), db.transaction() as s:
        s.get(Job, jid).name = "okapi study"
    assert _search(client, "zebra") == ["Zebra crossing"]
    assert _search(client, "okapi") == ["okapi study"]
    with app.app_context():
        service.delete(jid)
    assert _search(client, "okapi") == []
    with app.app_context(), db.session() as s:
        assert s.execute(text("SELECT count(*) FROM job_search")).scalar() == 2
        assert s.execute(text("SELECT count(*) FROM jobs_fts")).scalar() == 2


def test_search_plans_agree(app, client, monkeypatch):
    """FTS (few matches), index walk with LIKE (many matches), LIKE without FTS, short terms
    and LIKE metacharacters all give the same answer."""
    seed(app, 60, names=lambda i: ["flux lora", "sdxl style", "100% cat_face"][i % 3] + f" {i}")
    cases = ["lora", "LoRa", "style 1", "% c", "_f", "a", "x", "nothing here"]
    expected = {q: expected_order(app, lambda j, q=q: q.lower() in j.name.lower()) for q in cases}

    def run():
        return {q: ids_of(walk(client, f"q={q.replace('%', '%25')}", 7)) for q in cases}

    assert run() == expected
    monkeypatch.setattr(listing, "FTS_SPARSE_MAX", 3)  # most terms now walk the index
    assert run() == expected
    monkeypatch.setattr(listing, "_has_fts", lambda s: False)  # an SQLite build without FTS5
    assert run() == expected


def test_filter_counts_are_exact_and_large_search_counts_are_labelled_estimates(app, client, monkeypatch):
    seed(app, 40, names=lambda i: f"lora {i}" if i % 2 else f"other {i}")
    monkeypatch.setattr(listing, "COUNT_EXACT_MAX", 10)
    body = client.get("/api/cloud/jobs?limit=5").get_json()
    assert body["total"] == 40 and body["count_is_estimate"] is False  # job_counts: exact at any size
    body = client.get("/api/cloud/jobs?status=failed&provider=local").get_json()  # 3 or 4 rows
    assert body["count_is_estimate"] is False and body["total"] == len(body["jobs"])
    make_job(app, "queued", name="one more")
    assert client.get("/api/cloud/jobs?limit=5").get_json()["total"] == 41  # at once, not after a TTL
    monkeypatch.setattr(listing, "FTS_SPARSE_MAX", 3)
    body = client.get("/api/cloud/jobs?q=lora").get_json()
    assert body["count_is_estimate"] is True and body["total"] == 20
    page = client.get("/jobs?q=lora").get_data(as_text=True)
    assert 'data-estimate="true"' in page and "about 20 jobs" in page
    # a search's estimate is cached: a new match shows up only after the TTL
    make_job(app, "queued", name="lora more")
    assert client.get("/api/cloud/jobs?q=lora").get_json()["total"] == 20
    now = listing._clock()
    monkeypatch.setattr(listing, "_clock", lambda: now + listing.COUNT_TTL_SECONDS + 1)
    assert client.get("/api/cloud/jobs?q=lora").get_json()["total"] == 21


def test_count_label():
    assert listing.count_label(1, False) == "1 job"
    assert listing.count_label(1234, False) == "1,234 jobs"
    assert listing.count_label(70_412, True) == "about 70,000 jobs"
    assert listing.count_label(12, True) == "about 12 jobs"


def test_ui_pages_by_cursor(app, client):
    seed(app, 60)
    order = expected_order(app)
    html = client.get("/jobs").get_data(as_text=True)
    assert "60 jobs" in html and 'rel="prev"' not in html and "« Newest" not in html
    older = html.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
    html2 = client.get(older).get_data(as_text=True)  # a plain GET of the pushed URL (back button)
    assert order[25] in html2 and order[24] not in html2 and 'rel="prev"' in html2 and "« Newest" in html2
    assert "jobs-changed" not in html2 or "/jobs/changes" not in html2  # no "new jobs" poller off page 1
    newer = html2.split('rel="prev" href="')[1].split('"')[0].replace("&amp;", "&")
    html3 = client.get(newer).get_data(as_text=True)
    assert order[0] in html3 and order[25] not in html3
    assert client.get("/jobs?page=2").get_data(as_text=True).count(order[25]) >= 1  # old links


def test_log_reads_at_any_offset(app, client):
    jid = make_job(app, "running")
    rng = random.Random(7)
    pieces = []
    with app.app_context():
        for _k in range(300):
            piece = "".join(rng.choice(["a", "é", "步", "\n", "x" * 5]) for _ in range(rng.randint(1, 40)))
            pieces.append(piece)
            service.apply_update(jid, service.JobUpdate(logs_append=piece), source="test")
    full = "".join(pieces).encode()
    with app.app_context():
        for offset in [0, 1, len(full) - 1, len(full), len(full) + 50] + [rng.randrange(len(full)) for _ in range(200)]:
            limit = rng.choice([1, 3, 64, 10_000])
            got = logread.read_log(jid, offset, limit=limit)
            start = min(offset, len(full))
            assert start <= got["next_offset"] <= start + limit and got["size"] == len(full)
            assert got["text"] == full[start:got["next_offset"]].decode("utf-8", "replace")
            if limit >= 4 and start < len(full):  # room for any whole character: progress
                assert got["next_offset"] > start
    body = client.get(f"/api/cloud/jobs/{jid}/logs?offset=0").get_json()
    assert body["text"].encode() == full and body["next_offset"] == len(full)
    with app.app_context():
        for offset in (0, 5, len(full) // 2, len(full)):
            assert logread.read_log(jid, offset)["text"].encode() == full[offset:]
        with pytest.raises(NotFound):
            logread.read_log("job_missing", 0)
        with pytest.raises(BadRequest):
            logread.read_log(jid, -1)
    assert client.get("/api/cloud/jobs/job_missing/logs").status_code == 404


def test_job_page_opens_on_the_tail_of_a_long_log(app, client, monkeypatch):
    from stcloud.jobs import routes

    jid = make_job(app, "running")
    with app.app_context():
        for k in range(200):
            service.apply_update(jid, service.JobUpdate(logs_append=f"line {k:04d}\n"), source="test")
    monkeypatch.setattr(routes, "LOG_PAGE_TAIL", 100)
    html = client.get(f"/jobs/{jid}").get_data(as_text=True)
    assert "line 0199" in html and "line 0100" not in html and 'id="log-omitted"' in html
    log_text = html.split('id="log-text"')[1]
    assert "\nline 0191" in log_text or ">line 0191" in log_text  # starts on a whole line


def test_events_are_paged(app, client):
    jid = make_job(app, "running")
    with app.app_context(), db.transaction() as s:
        for k in range(25):
            s.add(JobEvent(job_id=jid, at=utcnow(), source="test", from_status="running",
                           to_status="queued", accepted=False, detail=f"late {k}"))
    all_events = client.get(f"/api/cloud/jobs/{jid}/events").get_json()
    assert len(all_events["events"]) == 27 and all_events["next_after"] is None
    got, after = [], 0
    while True:
        page = client.get(f"/api/cloud/jobs/{jid}/events?limit=10&after={after}").get_json()
        got += page["events"]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert got == all_events["events"]
    with app.app_context(), db.session() as s:
        recent = listing.recent_events(s, jid, limit=5)
        assert [e.detail for e in recent] == [f"late {k}" for k in range(20, 25)]


def test_migration_indexes_existing_jobs(tmp_path):
    """Upgrading a database that already holds jobs fills the search index."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    cfg = alembic_config(url)
    command.upgrade(cfg, "0006")
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(text("""INSERT INTO jobs (id, name, provider, status, config, dataloader_config, gpu_count,
            created_at, updated_at, progress, outputs, attempt, max_attempts, log_size, log_seq, poll_failures)
            VALUES ('job_old', 'an old zebra job', 'local', 'completed', '{}', '[]', 1,
            '2024-01-01 00:00:00.000000', '2024-01-01 00:00:00.000000', '{}', '[]', 1, 3, 0, 0, 0)"""))
    command.upgrade(cfg, "head")
    with eng.connect() as c:
        found = c.execute(text("SELECT job_id FROM job_search WHERE id IN "
                               "(SELECT rowid FROM jobs_fts WHERE jobs_fts MATCH '\"zebra\"')")).scalars().all()
        assert found == ["job_old"]
        names = {r[1] for r in c.execute(text("PRAGMA index_list('jobs')"))}
        assert {"ix_jobs_created_id", "ix_jobs_status_created_id", "ix_jobs_provider_created_id"} <= names
    eng.dispose()


def test_queries_use_the_composite_indexes(app):
    """The plans SQLite picks for the list queries walk an index in list order (no sort)."""
    seed(app, 10)
    with app.app_context(), db.session() as s:
        for f in [Filters(), Filters(status=("failed",)), Filters(provider="worker")]:
            stmt = listing._where(listing.select(Job), f, None, None).order_by(Job.created_at.desc(), Job.id.desc()).limit(5)
            sql = str(stmt.compile(dialect=s.get_bind().dialect, compile_kwargs={"literal_binds": True}))
            plan = " ".join(r[3] for r in s.execute(text("EXPLAIN QUERY PLAN " + sql)))
            assert "USE TEMP B-TREE" not in plan and "_created_id" in plan, (f, plan)


def _rich_jobs(app) -> list[str]:
    """Jobs whose columns hold every kind of value a list row shows (JSON, datetimes, floats,
    NULLs, an owner, an error)."""
    ids = [make_job(app, status, provider=p, name=f"rich {status} {p}")
           for status in ("running", "completed", "failed", "queued") for p in ("replicate", "worker")]
    with app.app_context(), db.transaction() as s:
        for k, jid in enumerate(ids):
            job = s.get(Job, jid)
            job.progress = {"step": 3 + k, "total_steps": 10, "loss": 0.5 / (k + 1), "stage": "train",
                            "best_loss": 0.4}
            job.outputs = [{"key": f"out/{k}.safetensors", "size": k}]
            job.cost_usd, job.estimated_cost_usd, job.hardware = (0.25 * k or None), 1.5, "gpu-a100"
            job.estimate = {"basis": "rate", "p50": 1.0}
            job.provider_data = {"approval": {"state": "approved", "expected_dataset_sha256": "x"}} if k % 2 else None
            job.error = "boom\nmore" if job.status == "failed" else None
            job.checkpoint = {"key": "ck", "step": 2} if k % 3 == 0 else None
    return ids


def test_list_rows_read_like_orm_jobs(app):
    """A list row (read with the compiled statement, decoded lazily) has the ORM Job's values
    for every column it reads, and to_dict of it is the same answer; the columns a list never
    shows are not read."""
    _rich_jobs(app)
    with app.app_context(), db.read() as s:
        rows = listing.list_jobs(s, Filters(), limit=50).jobs
        events, _ = listing.list_events(s, rows[0].id)
        newest = listing.recent_events(s, rows[0].id, limit=2)
    assert len(rows) == 8
    with app.app_context(), db.session() as s:
        for row in rows:
            job = s.get(Job, row.id)
            for col in listing._LIST_COLUMNS:
                assert getattr(row, col.key) == getattr(job, col.key), col.key
            ours, theirs = (service.to_dict(j, include_config=False) for j in (row, job))
            assert ours.pop("metrics") and theirs.pop("metrics")  # durations of running jobs: now-dependent
            assert ours == theirs
            now = utcnow()
            assert metrics.compute(row, now=now) == metrics.compute(job, now=now)
            assert row.created_at.tzinfo is not None
            with pytest.raises(AttributeError):
                row.config  # noqa: B018 - not read by the list
        orm_events = s.scalars(select(JobEvent).where(JobEvent.job_id == rows[0].id).order_by(JobEvent.id)).all()
        assert [service.event_to_dict(e) for e in events] == [service.event_to_dict(e) for e in orm_events]
        assert [e.id for e in newest] == [e.id for e in orm_events[-2:]]
        assert all(isinstance(e.accepted, bool) for e in events)


def test_read_session_opens_no_transaction(app):
    """db.read() sends no BEGIN (SQLite's driver-level BEGIN is off; our begin hook skips it);
    db.session() still does."""
    seed(app, 5)
    sent = []
    with app.app_context():
        engine = db.get_db().engine

        def record(_conn, _cursor, statement, *_args):
            sent.append(statement)

        event.listen(engine, "before_cursor_execute", record)
        try:
            with db.read() as s:
                assert len(listing.list_jobs(s, Filters(q="job")).jobs) == 5
                assert not s.connection().connection.driver_connection.in_transaction
            assert not any(st.strip().upper().startswith("BEGIN") for st in sent), sent
            with db.session() as s:
                listing.list_jobs(s, Filters())
            assert any(st.strip().upper() == "BEGIN" for st in sent)
        finally:
            event.remove(engine, "before_cursor_execute", record)


def test_list_shapes_and_first_page_count(app, monkeypatch):
    """Every filter shape compiles once and gives the ORM query's rows; a first page that holds
    every match is its own exact count, and a cached large count still wins while fresh."""
    seed(app, 30)
    with app.app_context(), db.read() as s:
        for f in [Filters(status=("failed", "queued")), Filters(status=("running",), provider="worker"),
                  Filters(provider="local", q="job 1")]:
            page = listing.list_jobs(s, f, limit=4)
            want = expected_order(app, lambda j, f=f: (not f.status or j.status in f.status)
                                  and (not f.provider or j.provider == f.provider)
                                  and (not f.q or f.q in j.name))
            assert [j.id for j in page.jobs] == want[:4] and page.total == len(want), f
            assert [j.id for j in listing.list_jobs(s, f, limit=4, offset=2).jobs] == want[2:6], f
        small = listing.list_jobs(s, Filters(status=("failed",)), limit=50)
        assert (small.total, small.count_is_estimate) == (len(small.jobs), False)
        shapes = len(listing._prepared)
        again = listing.list_jobs(s, Filters(status=("failed",) * 7), limit=50)  # repeats: the same shape
        assert [j.id for j in again.jobs] == [j.id for j in small.jobs] and len(listing._prepared) == shapes
    monkeypatch.setattr(listing, "COUNT_EXACT_MAX", 5)
    listing._count_cache.clear()
    with app.app_context(), db.read() as s:
        assert listing.list_jobs(s, Filters(q="job"), limit=50).total == 30  # a search counted: 30 > 5, cached
        make_job(app, "queued", name="job later")
        page = listing.list_jobs(s, Filters(q="job"), limit=50)
        assert len(page.jobs) == 31 and (page.total, page.count_is_estimate) == (30, True)
