"""The claim lease on PostgreSQL (the scale-out path): two server processes, many claimers,
every job leased once; lease expiry re-queues under row locks. Skipped without PostgreSQL."""
from __future__ import annotations

from datetime import timedelta

import pytest

from stcloud import db
from stcloud.models import Job, utcnow
from tests.test_postgres import pg_url  # noqa: F401 - fixture (a throwaway cluster)
from tests.workers.helpers import get_job, queue_job
from tests.workers.test_agents import accepted_claims

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_app(pg_url, tmp_path, monkeypatch):  # noqa: F811
    from alembic import command

    from stcloud import create_app
    from stcloud.cli import alembic_config

    command.upgrade(alembic_config(pg_url), "head")
    monkeypatch.delenv("STCLOUD_ADMIN_TOKEN", raising=False)
    app = create_app({"STCLOUD_HOME": str(tmp_path / "pg-home"), "STCLOUD_DATABASE_URL": pg_url, "TESTING": True})
    yield app
    app.extensions["stcloud.db"].dispose()


def test_claim_race_on_postgres_two_servers(pg_app, pg_url, serve_process, tmp_path):  # noqa: F811
    import threading

    import requests

    env = {"STCLOUD_DATABASE_URL": pg_url}
    s1 = serve_process(home=tmp_path / "srv", env=env)
    s2 = serve_process(home=tmp_path / "srv", args=("--no-scheduler",), env=env)
    tokens = [requests.post(s1.url + "/api/cloud/workers", json={"name": f"pg-{i}"}, timeout=10).json()["token"]
              for i in range(6)]
    job_ids = [queue_job(pg_app, name=f"pg{i}", archive=False) for i in range(40)]
    got, errors = [], []

    def racer(i, token):
        url = (s1.url, s2.url)[i % 2]
        h = {"Authorization": f"Bearer {token}"}
        sess = requests.Session()
        empty = 0
        while empty < 3:
            r = sess.post(url + "/api/workers/claim", headers=h, timeout=30)
            if r.status_code == 204:
                empty += 1
                continue
            if r.status_code != 200:
                errors.append((r.status_code, r.text))
                return
            jid = r.json()["job"]["id"]
            got.append(jid)
            sess.post(f"{url}/api/workers/jobs/{jid}/complete", json={"status": "completed", "exit_code": 0},
                      headers=h, timeout=15)

    threads = [threading.Thread(target=racer, args=(i, t)) for i, t in enumerate(tokens)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert sorted(got) == sorted(job_ids)
    assert set(accepted_claims(pg_app, job_ids).values()) == {1}


def test_lease_expiry_on_postgres(pg_app):
    from stcloud.workers import service

    c = pg_app.test_client()
    w = c.post("/api/cloud/workers", json={"name": "pg-lost"}).get_json()
    h = {"Authorization": f"Bearer {w['token']}"}
    jid = queue_job(pg_app, archive=False)
    assert c.post("/api/workers/claim", headers=h).get_json()["job"]["id"] == jid
    with pg_app.app_context(), db.transaction() as s:
        s.get(Job, jid).lease_expires_at = utcnow() - timedelta(seconds=1)
    with pg_app.app_context():
        assert jid in service.check_liveness()["requeued"]
    job = get_job(pg_app, jid)
    assert job.status == "queued" and job.attempt == 2 and job.worker_id is None
