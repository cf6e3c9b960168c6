"""PostgreSQL, the scale-out path: the same migrations and the core job flows.

Starts a private throwaway cluster (Debian's postgresql binaries, run as the `postgres`
user because initdb refuses root) on a free loopback port; skipped when unavailable.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.conftest import free_port

pytestmark = pytest.mark.slow


def _bin(name: str) -> str | None:
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return hits[-1] if hits else None


@pytest.fixture(scope="module")
def pg_url():
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries not installed")
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a postgres user")
        run_as = ["runuser", "-u", "postgres", "--"]
    base = tempfile.mkdtemp(prefix="stcloud-pg-")
    os.chmod(base, 0o777)
    data = os.path.join(base, "data")
    port = free_port()
    subprocess.run(run_as + [initdb, "-D", data, "-A", "trust", "-U", "stcloud", "--no-sync"],
                   check=True, capture_output=True, timeout=120)
    subprocess.run(run_as + [pg_ctl, "-D", data, "-l", os.path.join(base, "log"), "-w", "-t", "60",
                             "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
                             "start"], check=True, capture_output=True, timeout=120)
    url = f"postgresql+psycopg://stcloud@127.0.0.1:{port}/postgres"
    try:
        deadline = time.time() + 30
        while True:
            try:
                eng = create_engine(url)
                with eng.connect() as c:
                    c.execute(text("select 1"))
                eng.dispose()
                break
            except ModuleNotFoundError:
                raise
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        yield url
    finally:  # also when setup fails: never leave a cluster running
        subprocess.run(run_as + [pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def test_migrations_up_down_up(pg_url):
    from alembic import command

    from stcloud.cli import alembic_config
    from stcloud.models import Base

    cfg = alembic_config(pg_url)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    command.upgrade(cfg, "head")
    eng = create_engine(pg_url)
    assert set(Base.metadata.tables) <= set(inspect(eng).get_table_names())
    eng.dispose()


def test_job_flow_on_postgres(pg_url, tmp_path, monkeypatch):
    from alembic import command

    from stcloud import create_app, db
    from stcloud.cli import alembic_config
    from stcloud.jobs import loss_points, service, streaming
    from stcloud.jobs.service import JobUpdate
    from stcloud.models import Job
    from tests.jobs.factories import make_job

    command.upgrade(alembic_config(pg_url), "head")
    monkeypatch.delenv("STCLOUD_ADMIN_TOKEN", raising=False)
    app = create_app({"STCLOUD_HOME": str(tmp_path), "STCLOUD_DATABASE_URL": pg_url, "TESTING": True})
    jid = make_job(app, "running", name="pg job")
    with app.app_context():
        service.apply_update(jid, JobUpdate(logs_full="a\nstep 2/4 loss=0.2\n"), source="poller")
        service.apply_update(jid, JobUpdate(logs_full="a\nstep 2/4 loss=0.2\nb\n"), source="poller")
        service.apply_update(jid, JobUpdate(status="completed", billed_seconds=10), source="poller")
        service.apply_update(jid, JobUpdate(status="running"), source="webhook")  # late: ignored
    c = app.test_client()
    assert c.get(f"/api/cloud/jobs/{jid}/logs?offset=2").get_json()["text"] == "step 2/4 loss=0.2\nb\n"
    job = c.get(f"/api/cloud/jobs/{jid}").get_json()["job"]
    assert job["status"] == "completed" and job["progress"]["step"] == 2
    assert c.get("/api/cloud/jobs?q=PG").get_json()["total"] >= 1
    assert c.get("/healthz").get_json()["database"]["ok"]
    with app.app_context(), db.session() as s:
        evs = service.get_job(s, jid).events
        assert evs[-1].accepted is False and evs[-1].to_status == "running"
        assert loss_points.series(s.connection(), jid) == [[2, 0.2]]
    # a streaming update (the webhook receiver's path): row lock, history count, JSON columns
    streamed = make_job(app, "running", name="pg stream")
    with app.app_context():
        with db.transaction() as s:
            s.get(Job, streamed).provider_job_id = "pred-pg"
        for k in (1, 2, 3):
            with db.transaction() as s:
                state = streaming.state_by_provider_id(s, "replicate", "pred-pg")
                assert state is not None and state.loss_points == k - 1
                update = JobUpdate(logs_full="".join(f"step {i}/3 loss=0.{4 - i}\n" for i in range(1, k + 1)),
                                   provider_data={"k": k})
                assert streaming.apply_streaming(s, state, update).accepted
        with db.session() as s:
            job = s.get(Job, streamed)
            assert job.progress == {"step": 3, "total_steps": 3, "loss": 0.1, "best_loss": 0.1}
            assert job.provider_data == {"k": 3} and job.log_size == 3 * len("step 1/3 loss=0.3\n")
            assert loss_points.series(s.connection(), streamed) == [[1, 0.3], [2, 0.2], [3, 0.1]]
    app.extensions["stcloud.db"].dispose()
