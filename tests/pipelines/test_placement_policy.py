"""Placement and dependencies beyond the basic cases: ``on: any`` after a failed parent,
``auto`` + ``hold`` over every limit (held, then started at the period rollover), a busy
worker that frees up within ``wait_minutes`` (and one that does not), and two cloud
providers (the fake Replicate and the example plugin provider, installed through its entry
point) where the cheaper p90 estimate wins within the spend limits."""
from __future__ import annotations

from datetime import timedelta

import pytest

from stcloud import db, states
from stcloud.costs import service as costs
from stcloud.jobs import service as jobs_service
from stcloud.models import Job, JobEvent, Worker, utcnow
from stcloud.pipelines import service as pipelines
from stcloud.workers import service as workers
from tests import clock
from tests.jobs.factories import make_job
from tests.pipelines.test_pipelines import STEP, _dataloader
from tests.providers.fixtures import (  # noqa: F401 - fixtures
    CONFIG,
    dataset,
    fake,
    rapp,
    rclient,
    set_consent,
    submit_body,
)
from tests.providers.test_example_plugin import example_installed  # noqa: F401 - fixture

pytestmark = pytest.mark.timeout(240)


# ---- on: any ----------------------------------------------------------------------------------

def test_on_any_starts_the_child_after_a_failed_parent(app, client, home):
    parent = make_job(app, "running", name="parent", provider="local")
    body = {"provider": "local", "config": dict(STEP), "dataloader_config": _dataloader(home),
            "depends_on": [parent], "on": "any"}
    r = client.post("/api/cloud/jobs/submit", json=body)
    assert r.status_code == 201, r.get_data(as_text=True)
    child = r.get_json()["job"]["id"]
    with app.app_context():
        assert pipelines.tick() == 0  # the parent still runs
        jobs_service.apply_update(parent, jobs_service.JobUpdate(status="failed", error="boom"), source="test")
        assert pipelines.tick() == 1
        with db.session() as s:
            row = s.get(Job, child)
            assert row.status == states.QUEUED and row.error is None  # on the local worker's queue
            moves = [(e.from_status, e.to_status) for e in
                     s.query(JobEvent).filter(JobEvent.job_id == child).order_by(JobEvent.id)]
    assert ("waiting", "pending") in moves and moves[-1][1] == "queued"


# ---- auto + hold ------------------------------------------------------------------------------

def test_auto_with_hold_over_every_limit_waits_then_starts_at_the_rollover(rapp, rclient, fake, dataset):
    set_consent(rclient, "allow")
    with rapp.app_context(), db.session() as s:
        est = costs.estimate(s, "replicate", None, CONFIG).estimated_cost_usd
    r = rclient.put("/api/cloud/cost-limits/replicate", json={"enabled": True, "amount_usd": round(est * 1.5, 6),
                                                              "period": "daily", "action": "block",
                                                              "timezone": "UTC"})
    assert r.status_code == 200, r.get_data(as_text=True)
    make_job(rapp, "completed", provider="replicate", name="spent-today", cost_usd=est)
    body = submit_body(dataset, provider="auto", placement={"on_budget": "hold"})
    r = rclient.post("/api/cloud/jobs/submit", json=body)
    assert r.status_code == 201, r.get_data(as_text=True)
    job = r.get_json()["job"]
    assert job["status"] == "waiting" and not fake.predictions
    with rapp.app_context():
        assert pipelines.tick() == 0
        with db.session() as s:
            row = s.get(Job, job["id"])
            assert row.placement["held"] and row.placement["provider"] is None
            assert "held until the budget period rolls over" in row.placement["reason"]
            assert "no online worker" in str(row.placement["candidates"])  # the worker was considered first
            period_end = row.placement["hold_until"]
            details = [e.detail for e in s.query(JobEvent).filter(JobEvent.job_id == job["id"])]
    assert any("held until the budget period rolls over" in (d or "") for d in details)
    assert rclient.get("/api/cloud/cost-limit/status?provider=replicate").get_json()["reserved_usd"] == 0
    with clock.running_past(period_end):  # the next period
        with rapp.app_context():
            assert pipelines.tick() == 1
            with db.session() as s:
                row = s.get(Job, job["id"])
                assert row.status in ("queued", "running") and row.provider == "replicate"
                assert not row.placement["held"] and "cheapest p90" in row.placement["reason"]
                assert row.estimated_cost_usd == est
        assert len(fake.predictions) == 1


# ---- a busy worker ----------------------------------------------------------------------------

def _busy_worker(app, *, job_seconds: float, started_ago: float, name="gpu-box") -> str:
    running = make_job(app, "running", provider="worker", name="on the worker")
    with app.app_context():
        info, _token = workers.create_worker(name)
        with db.transaction() as s:
            row = s.get(Job, running)
            row.estimate, row.started_at = {"seconds": job_seconds}, utcnow() - timedelta(seconds=started_ago)
            w = s.get(Worker, info["id"])
            w.status, w.last_heartbeat_at, w.current_job_id = workers.BUSY, utcnow(), running
    return running


def test_a_busy_worker_that_frees_up_within_wait_minutes_is_chosen(rapp, rclient, fake, dataset):
    set_consent(rclient, "allow")
    _busy_worker(rapp, job_seconds=300, started_ago=60)  # about 4 minutes left
    r = rclient.post("/api/cloud/jobs/submit", json=submit_body(dataset, provider="auto",
                                                                placement={"wait_minutes": 10}))
    assert r.status_code == 201, r.get_data(as_text=True)
    job = r.get_json()["job"]
    assert job["provider"] == "worker" and job["status"] == "queued" and not fake.predictions
    reason = job["placement"]["reason"]
    assert "gpu-box is busy" in reason and "about 4 min" in reason and "within 10 min" in reason


def test_a_busy_worker_that_stays_busy_past_wait_minutes_loses_to_the_cloud(rapp, rclient, fake, dataset):
    set_consent(rclient, "allow")
    _busy_worker(rapp, job_seconds=3600, started_ago=60)  # 59 minutes left
    r = rclient.post("/api/cloud/jobs/submit", json=submit_body(dataset, provider="auto",
                                                                placement={"wait_minutes": 10}))
    assert r.status_code == 201, r.get_data(as_text=True)
    job = r.get_json()["job"]
    assert job["provider"] == "replicate" and len(fake.predictions) == 1
    reason = job["placement"]["reason"]
    assert "no free worker within 10 min" in reason and "about 59 min" in reason and "cheapest p90" in reason


# ---- two cloud providers ----------------------------------------------------------------------

@pytest.fixture
def two_clouds(example_installed, rapp, rclient):  # noqa: F811
    """The fake Replicate and the example provider in one app (no worker online)."""
    set_consent(rclient, "allow")
    assert rclient.put("/api/cloud/providers/example", json={"seconds_per_step": 0.01}).status_code == 200
    return rclient


def _price(client, provider: str) -> float:
    r = client.post("/api/cloud/cost-estimate", json={"provider": provider, "config": dict(CONFIG)})
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()["estimated_cost_usd"]


def _set_example_rate(client, usd_per_hour: float) -> None:
    r = client.put("/api/cloud/providers/example", json={"usd_per_hour": usd_per_hour})
    assert r.status_code == 200, r.get_data(as_text=True)


def test_the_cheaper_cloud_wins(two_clouds, fake, dataset):
    client = two_clouds
    _set_example_rate(client, 0.01)
    assert _price(client, "example") < _price(client, "replicate")
    r = client.post("/api/cloud/jobs/submit", json=submit_body(dataset, provider="auto"))
    assert r.status_code == 201, r.get_data(as_text=True)
    job = r.get_json()["job"]
    assert job["provider"] == "example" and job["provider_job_id"].startswith("ex_") and not fake.predictions
    assert "example has the cheapest p90 estimate" in job["placement"]["reason"]
    priced = {c["provider"]: c["p90_usd"] for c in job["placement"]["candidates"] if "p90_usd" in c}
    assert set(priced) == {"example", "replicate"} and priced["example"] < priced["replicate"]

    _set_example_rate(client, 10000.0)  # now Replicate is the cheaper one
    assert _price(client, "example") > _price(client, "replicate")
    r = client.post("/api/cloud/jobs/submit", json=submit_body(dataset, provider="auto"))
    assert r.status_code == 201, r.get_data(as_text=True)
    job = r.get_json()["job"]
    assert job["provider"] == "replicate" and len(fake.predictions) == 1
    assert "replicate has the cheapest p90 estimate" in job["placement"]["reason"]


def test_the_cheaper_cloud_over_its_limit_gives_way_to_the_other(two_clouds, fake, dataset):
    client = two_clouds
    _set_example_rate(client, 0.01)
    cheap = _price(client, "example")
    assert cheap < _price(client, "replicate")
    r = client.put("/api/cloud/cost-limits/example", json={"enabled": True, "amount_usd": round(cheap / 2, 8),
                                                           "period": "daily", "action": "block"})
    assert r.status_code == 200, r.get_data(as_text=True)
    r = client.post("/api/cloud/jobs/submit", json=submit_body(dataset, provider="auto"))
    assert r.status_code == 201, r.get_data(as_text=True)
    job = r.get_json()["job"]
    assert job["provider"] == "replicate" and len(fake.predictions) == 1
    assert "replicate has the cheapest p90 estimate" in job["placement"]["reason"]
    [example] = [c for c in job["placement"]["candidates"] if c["provider"] == "example"]
    assert example["blocked"] and "limit" in example["blocked"]
