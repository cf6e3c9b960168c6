"""The scheduler acting on running jobs: block + stop_running, per-job max_cost_usd — through
the real Replicate adapter against the fake Replicate API — and the period-boundary runs."""
from __future__ import annotations

from datetime import timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from stcloud.costs import periods
from stcloud.jobs import enforce
from stcloud.models import utcnow
from stcloud.providers import registry
from tests.fakes.replicate_fake import FakeReplicate

from .conftest import add_job, get_job, job_events

pytestmark = pytest.mark.timeout(60)

L40S = 3.50 / 3600
TOKEN = "r8_test_token"


@pytest.fixture
def fake():
    with FakeReplicate(tokens=(TOKEN,)) as f:
        yield f


@pytest.fixture
def rapp(make_app, fake, monkeypatch):
    """An app whose Replicate provider talks to the fake (env token + base URL)."""
    app = make_app()
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    monkeypatch.setenv("REPLICATE_BASE_URL", fake.base_url)
    with app.app_context():
        assert registry.maybe_get("replicate") is not None, "the Replicate adapter factory is not registered"
    return app


def running_prediction(fake) -> str:
    pred = fake.client(TOKEN).predictions.create(version=fake.latest_version_id(), input={"config_json": "{}"})
    fake.start(pred.id)
    return pred.id


def running_job(app, fake, *, seconds, created_ago, name, **fields) -> tuple[str, str]:
    pid = running_prediction(fake)
    now = utcnow()
    job_id = add_job(app, provider="replicate", status="running", hardware="gpu-l40s", rate=L40S, name=name,
                     estimated=fields.pop("estimated", 0.5), started_at=now - timedelta(seconds=seconds),
                     created_at=now - timedelta(seconds=created_ago), provider_job_id=pid, **fields)
    return job_id, pid


def cancel_calls(fake) -> list[str]:
    return [r.path.split("/")[3] for r in fake.requests_to("POST", r"^/v1/predictions/[^/]+/cancel$")]


def run(app):
    with app.app_context():
        return enforce.enforce_limits()


def test_stop_running_cancels_that_providers_running_jobs_newest_first(rapp, fake):
    client = rapp.test_client()
    client.put("/api/cloud/rates", json={"provider": "worker", "usd_per_hour": 1.0})
    client.put("/api/cloud/cost-limits/replicate", json={"enabled": True, "amount_usd": 2.0, "period": "daily",
                                                          "action": "block", "stop_running": True})
    add_job(rapp, status="completed", cost=1.5, completed_at=utcnow() - timedelta(minutes=1))
    older, older_pid = running_job(rapp, fake, seconds=600, created_ago=900, name="older")   # $0.58 so far
    newer, newer_pid = running_job(rapp, fake, seconds=60, created_ago=120, name="newer")    # $0.06 so far
    worker = add_job(rapp, provider="worker", status="running", rate=1 / 3600, started_at=utcnow(), name="w")
    done = run(rapp)

    assert done["stopped"] == [newer, older]
    assert cancel_calls(fake) == [newer_pid, older_pid]  # newest first, through the provider
    assert fake.get_prediction(newer_pid)["status"] == "canceled"
    assert fake.get_prediction(older_pid)["status"] == "canceled"
    for job_id in (older, newer):
        assert get_job(rapp, job_id).status == "cancelled"
        ev = job_events(rapp, job_id)[-1]
        assert ev.to_status == "cancelled" and ev.source == "scheduler"
        assert "spending limit" in ev.detail and "replicate daily limit of $2.00" in ev.detail
        assert "actual spend $2.1" in ev.detail
    assert get_job(rapp, worker).status == "running"  # another provider's job: untouched
    assert run(rapp)["stopped"] == []  # nothing left to stop


def test_reservations_alone_do_not_stop_running_jobs(rapp, fake):
    """stop_running acts on *actual* spend: a big reservation that is not spent yet is no reason."""
    client = rapp.test_client()
    client.put("/api/cloud/cost-limits/replicate", json={"enabled": True, "amount_usd": 2.0, "action": "block",
                                                          "stop_running": True})
    job, pid = running_job(rapp, fake, seconds=60, created_ago=60, name="big", estimated=50.0)
    assert run(rapp)["stopped"] == []
    assert get_job(rapp, job).status == "running" and fake.get_prediction(pid)["status"] == "processing"


@pytest.mark.parametrize("limit", [
    {"action": "warn", "stop_running": True},
    {"action": "block", "stop_running": False},
    {"action": "block", "stop_running": True, "enabled": False},
])
def test_no_stop_without_block_and_stop_running(rapp, fake, limit):
    rapp.test_client().put("/api/cloud/cost-limits/replicate",
                           json={"enabled": True, "amount_usd": 0.1, **limit})
    job, _ = running_job(rapp, fake, seconds=600, created_ago=600, name="j")
    assert run(rapp)["stopped"] == []
    assert get_job(rapp, job).status == "running" and cancel_calls(fake) == []


def test_global_stop_running_covers_every_provider_but_free_jobs(rapp, fake):
    client = rapp.test_client()
    client.put("/api/cloud/rates", json={"provider": "worker", "usd_per_hour": 36.0})
    client.put("/api/cloud/cost-limits/all", json={"enabled": True, "amount_usd": 0.5, "action": "block",
                                                    "stop_running": True, "timezone": "Asia/Tokyo"})
    rep, pid = running_job(rapp, fake, seconds=60, created_ago=60, name="rep")
    paid = add_job(rapp, provider="worker", status="running", rate=0.01, started_at=utcnow() - timedelta(seconds=60))
    free = add_job(rapp, provider="local", status="running", rate=0.0, started_at=utcnow() - timedelta(hours=5))
    queued = add_job(rapp, provider="worker", status="queued", rate=0.01, estimated=0.3)
    done = run(rapp)
    assert set(done["stopped"]) == {rep, paid, queued}
    assert get_job(rapp, free).status == "running"
    assert fake.get_prediction(pid)["status"] == "canceled"
    assert "global monthly limit" in job_events(rapp, paid)[-1].detail


def test_max_cost_usd_cancels_only_that_job(rapp, fake):
    runaway, runaway_pid = running_job(rapp, fake, seconds=600, created_ago=700, name="runaway", max_cost=0.25)
    fine, fine_pid = running_job(rapp, fake, seconds=600, created_ago=700, name="fine", max_cost=5.0)
    uncapped, _ = running_job(rapp, fake, seconds=6000, created_ago=7000, name="uncapped")
    done = run(rapp)
    assert done["capped"] == [runaway]
    assert cancel_calls(fake) == [runaway_pid]
    assert fake.get_prediction(runaway_pid)["status"] == "canceled"
    assert fake.get_prediction(fine_pid)["status"] == "processing"
    assert get_job(rapp, runaway).status == "cancelled"
    assert get_job(rapp, fine).status == "running" and get_job(rapp, uncapped).status == "running"
    ev = job_events(rapp, runaway)[-1]
    assert ev.source == "scheduler" and ev.to_status == "cancelled"
    assert "max_cost_usd $0.25" in ev.detail and "running cost $0.58" in ev.detail


def test_provider_failure_leaves_the_job_for_the_next_run(rapp, fake):
    job, pid = running_job(rapp, fake, seconds=600, created_ago=600, name="j", max_cost=0.1)
    fake.inject("POST", r"/cancel$", "500", times=None)
    assert run(rapp)["capped"] == []
    assert get_job(rapp, job).status == "running"
    fake.clear_faults()
    assert run(rapp)["capped"] == [job]


def test_finished_worker_jobs_get_priced(rapp):
    t = utcnow() - timedelta(hours=1)
    job = add_job(rapp, provider="worker", status="completed", rate=0.002, started_at=t,
                  completed_at=t + timedelta(seconds=500))
    assert run(rapp)["priced"] == 1
    j = get_job(rapp, job)
    assert j.billed_seconds == pytest.approx(500) and j.cost_usd == pytest.approx(1.0)


def test_period_boundary_jobs_fire_after_each_local_midnight(rapp):
    client = rapp.test_client()
    client.put("/api/cloud/cost-limits/replicate", json={"enabled": True, "amount_usd": 5, "period": "monthly",
                                                          "timezone": "Asia/Tokyo"})
    client.put("/api/cloud/cost-limits/worker", json={"enabled": True, "amount_usd": 5, "period": "weekly",
                                                       "timezone": "America/Los_Angeles"})
    assert enforce.schedule_hook in rapp.extensions["stcloud.schedule_hooks"]
    sched = BackgroundScheduler(timezone="UTC")
    sched.start(paused=True)
    try:
        for hook in rapp.extensions["stcloud.schedule_hooks"]:
            hook(sched, rapp)
        jobs = {j.id: j for j in sched.get_jobs() if j.id.startswith(enforce.BOUNDARY_JOB_PREFIX)}
        assert set(jobs) == {enforce.BOUNDARY_JOB_PREFIX + z for z in ("UTC", "Asia/Tokyo", "America/Los_Angeles")}
        now = utcnow()
        for tz in ("UTC", "Asia/Tokyo", "America/Los_Angeles"):
            midnight = periods.next_boundary("daily", tz, now)
            assert jobs[enforce.BOUNDARY_JOB_PREFIX + tz].next_run_time == midnight + timedelta(seconds=1)
        # a limit switched off: its zone's job goes at the next sync
        client.put("/api/cloud/cost-limits/worker", json={"enabled": False})
        enforce.sync_boundary_jobs(sched, rapp)
        ids = {j.id for j in sched.get_jobs() if j.id.startswith(enforce.BOUNDARY_JOB_PREFIX)}
        assert enforce.BOUNDARY_JOB_PREFIX + "America/Los_Angeles" not in ids
    finally:
        sched.shutdown(wait=False)
