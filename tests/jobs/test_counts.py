"""Exact job counts from ``job_counts`` (migration 0017's triggers) and offset pages read from
the nearer end of the list (correctness; timings live in bench/)."""
from __future__ import annotations

import itertools

import pytest
from alembic import command
from sqlalchemy import create_engine, delete, text, update

from stcloud import db
from stcloud.cli import alembic_config
from stcloud.jobs import counts, listing, service
from stcloud.jobs.listing import Filters
from stcloud.models import Job
from tests.jobs.factories import make_job
from tests.jobs.test_listing import PROVIDERS, STATUSES, expected_order, seed

OWNERS = [None, "user_a", "user_b"]


def _jobs(app) -> list[tuple[str, str, str | None]]:
    with app.app_context(), db.session() as s:
        return [(j.status, j.provider, j.owner_id) for j in s.query(Job).all()]


def assert_counts_exact(app) -> None:
    """Every mix of the list's filters, counted from job_counts, equals a count of the rows."""
    jobs = _jobs(app)
    status_sets = [()] + [(st,) for st in STATUSES + ["pending"]] + list(itertools.combinations(STATUSES, 2))
    with app.app_context(), db.read() as s:
        for statuses, provider, owner in itertools.product(status_sets, [None, *PROVIDERS], [None, "user_a"]):
            want = sum(1 for st, pr, ow in jobs if (not statuses or st in statuses)
                       and (provider is None or pr == provider) and (owner is None or ow == owner))
            assert counts.count(s, statuses, provider, owner) == want, (statuses, provider, owner)


def _own(app, ids):
    with app.app_context(), db.transaction() as s:
        for k, job_id in enumerate(ids):
            s.get(Job, job_id).owner_id = OWNERS[k % 3]


def test_triggers_keep_every_count_exact(app):
    ids = seed(app, 30)
    _own(app, ids)
    assert_counts_exact(app)
    # transitions through the one transition function
    for status in ("running", "completed", "failed", "cancelled"):
        make_job(app, status, provider="worker", owner_id="user_a")
    with app.app_context(), db.transaction() as s:
        for job_id in ids[:4]:
            job = s.get(Job, job_id)
            if not service.states.is_terminal(job.status):
                service.transition(s, job, "cancelled", source="test")
    assert_counts_exact(app)
    # raw SQL, as the webhook fast path writes: owner, provider and status changed, a no-op update
    with app.app_context(), db.transaction() as s:
        s.execute(update(Job).where(Job.id == ids[5]).values(owner_id="user_b", provider="local"))
        s.execute(update(Job).where(Job.id == ids[6]).values(status="failed"))
        s.execute(update(Job).where(Job.id == ids[7]).values(status=Job.status, name="renamed"))
        s.execute(update(Job).where(Job.id == ids[8]).values(owner_id=None))
    assert_counts_exact(app)
    # deletes, and a rolled-back write leaves nothing behind
    with app.app_context(), db.transaction() as s:
        s.execute(delete(Job).where(Job.id.in_(ids[10:15])))
    with pytest.raises(RuntimeError), app.app_context(), db.transaction() as s:
        s.execute(update(Job).where(Job.id == ids[20]).values(status="queued"))
        raise RuntimeError("rolled back")
    assert_counts_exact(app)


@pytest.mark.parametrize("f, owner", [
    (Filters(), None),
    (Filters(status=("failed",)), None),
    (Filters(provider="worker"), None),
    (Filters(status=("failed", "queued"), provider="local"), None),
    (Filters(), "user_a"),
])
def test_every_offset_page_matches_the_order_from_either_end(app, f, owner):
    ids = seed(app, 47)
    _own(app, ids)
    want = expected_order(app, lambda j: (not f.status or j.status in f.status)
                          and (not f.provider or j.provider == f.provider) and (owner is None or j.owner_id == owner))
    limit = 6
    with app.app_context(), db.read() as s:
        for offset in range(1, len(want) + 3):
            page = listing.list_jobs(s, f, limit=limit, offset=offset, owner_id=owner)
            assert [j.id for j in page.jobs] == want[offset:offset + limit], offset
            assert (page.total, page.count_is_estimate) == (len(want), False)
            assert bool(page.next_cursor) == (offset + limit < len(want)), offset
            assert bool(page.prev_cursor) == (offset < len(want)), offset
            if page.next_cursor:  # a cursor from an offset page goes on where it stopped
                nxt = listing.list_jobs(s, f, limit=limit, cursor=page.next_cursor, owner_id=owner)
                assert [j.id for j in nxt.jobs] == want[offset + limit:offset + 2 * limit]


def test_the_api_offset_near_the_end(app, client):
    seed(app, 25)
    want = expected_order(app)
    body = client.get("/api/cloud/jobs?limit=5&offset=22").get_json()
    assert [j["id"] for j in body["jobs"]] == want[22:] and body["total"] == 25 and body["next_cursor"] is None
    assert client.get("/api/cloud/jobs?limit=5&offset=25").get_json()["jobs"] == []


def test_migration_counts_existing_jobs_and_downgrades(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    cfg = alembic_config(url)
    command.upgrade(cfg, "0016_loss_points")
    eng = create_engine(url)
    with eng.begin() as c:
        for k in range(12):
            c.execute(text(
                "INSERT INTO jobs (id, name, provider, status, config, dataloader_config, gpu_count, created_at, "
                "updated_at, progress, outputs, attempt, max_attempts, log_size, log_seq, poll_failures, owner_id) "
                "VALUES (:id, 'j', :p, :st, '{}', '[]', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, '{}', '[]', 1, 3, "
                "0, 0, 0, :ow)"), {"id": f"job_{k}", "p": PROVIDERS[k % 3], "st": STATUSES[k % 4], "ow": OWNERS[k % 3]})
    command.upgrade(cfg, "head")
    with eng.connect() as c:
        rows = dict(((o, p, st), n) for o, p, st, n in c.execute(text("SELECT * FROM job_counts")))
        grouped = dict(((o, p, st), n) for o, p, st, n in c.execute(text(
            "SELECT coalesce(owner_id, ''), provider, status, count(*) FROM jobs GROUP BY 1, 2, 3")))
    assert rows == grouped and sum(rows.values()) == 12
    command.downgrade(cfg, "0016_loss_points")
    with eng.begin() as c:
        names = set(c.execute(text("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")).scalars())
        assert not {"job_counts", "job_count_deltas", "job_counts_insert", "job_counts_update"} & names
        c.execute(text("DELETE FROM jobs WHERE id = 'job_0'"))  # no trigger left to fail
    eng.dispose()


def test_fold_is_a_no_op_on_sqlite(app):
    seed(app, 3)
    with app.app_context():
        counts.fold()
        with db.read() as s:
            assert counts.count(s) == 3
            assert s.scalar(text("SELECT count(*) FROM job_count_deltas")) == 0
