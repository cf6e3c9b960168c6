"""Placement: provider "auto" picks an idle worker, else the cheapest cloud provider (the fake
Replicate); a held job starts when the budget period rolls over (time injected)."""
from __future__ import annotations

from stcloud import db
from stcloud.costs import service as costs
from stcloud.models import Job, JobEvent, Worker, utcnow
from stcloud.pipelines import service as pipelines
from stcloud.providers import registry
from stcloud.providers.base import HardwareProfile, PlacementOffer
from stcloud.workers import service as workers
from tests import clock
from tests.jobs.factories import make_job
from tests.jobs.memory_provider import MemoryProvider
from tests.providers.fixtures import (  # noqa: F401 - fixtures
    CONFIG,
    dataset,
    fake,
    rapp,
    rclient,
    set_consent,
    submit_body,
)


def _idle_worker(app, name="gpu-box"):
    with app.app_context():
        info, _token = workers.create_worker(name)
        with db.transaction() as s:
            w = s.get(Worker, info["id"])
            w.status, w.last_heartbeat_at = workers.IDLE, utcnow()


def test_auto_chooses_an_idle_worker(rapp, rclient, fake, dataset):
    _idle_worker(rapp)
    r = rclient.post("/api/cloud/jobs/submit", json=submit_body(dataset, provider="auto"))
    assert r.status_code == 201, r.get_data(as_text=True)
    job = r.get_json()["job"]
    assert job["provider"] == "worker" and job["status"] == "queued"
    assert not fake.predictions  # nothing went to Replicate
    with rapp.app_context(), db.session() as s:
        row = s.get(Job, job["id"])
        assert row.placement["provider"] == "worker" and "gpu-box is idle" in row.placement["reason"]
        details = [e.detail for e in s.query(JobEvent).filter(JobEvent.job_id == job["id"])]
    assert any(d and d.startswith("placement: worker") for d in details)
    page = rclient.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert "gpu-box is idle" in page


def test_auto_chooses_replicate_when_no_worker_is_free(rapp, rclient, fake, dataset):
    set_consent(rclient, "allow")
    r = rclient.post("/api/cloud/jobs/submit", json=submit_body(dataset, provider="auto"))
    assert r.status_code == 201, r.get_data(as_text=True)
    job = r.get_json()["job"]
    assert job["provider"] == "replicate" and job["status"] in ("queued", "running")
    assert len(fake.predictions) == 1
    with rapp.app_context(), db.session() as s:
        reason = s.get(Job, job["id"]).placement["reason"]
    assert "no free worker" in reason and "cheapest p90" in reason


def test_auto_over_every_limit_without_hold_is_402(rapp, rclient, fake, dataset):
    set_consent(rclient, "allow")
    r = rclient.put("/api/cloud/cost-limits/replicate", json={"enabled": True, "amount_usd": 0.0001,
                                                              "period": "daily", "action": "block"})
    assert r.status_code == 200, r.get_data(as_text=True)
    r = rclient.post("/api/cloud/jobs/submit", json=submit_body(dataset, provider="auto"))
    assert r.status_code == 402 and "spend limit" in r.get_json()["detail"]
    with rapp.app_context(), db.session() as s:
        assert s.query(Job).count() == 0  # nothing half-written


def test_held_job_starts_at_the_period_rollover(rapp, rclient, fake, dataset):
    set_consent(rclient, "allow")
    body = submit_body(dataset)
    with rapp.app_context(), db.session() as s:
        est = costs.estimate(s, "replicate", None, CONFIG).estimated_cost_usd
    assert est > 0
    r = rclient.put("/api/cloud/cost-limits/replicate", json={"enabled": True, "amount_usd": round(est * 1.5, 6),
                                                              "period": "daily", "action": "block",
                                                              "timezone": "UTC"})
    assert r.status_code == 200, r.get_data(as_text=True)
    make_job(rapp, "completed", provider="replicate", name="spent-today", cost_usd=est)
    assert rclient.post("/api/cloud/jobs/submit", json=body).status_code == 402  # as before, without hold
    r = rclient.post("/api/cloud/jobs/submit", json={**body, "hold": True})
    assert r.status_code == 201, r.get_data(as_text=True)
    job = r.get_json()["job"]
    assert job["status"] == "waiting" and not fake.predictions
    with rapp.app_context():
        assert pipelines.tick() == 0  # still the same period
        with db.session() as s:
            row = s.get(Job, job["id"])
            assert "held until the budget period rolls over" in row.placement["reason"]
            period_end = row.placement["hold_until"]
    assert "held until" in rclient.get(f"/jobs/{job['id']}").get_data(as_text=True)
    status = rclient.get("/api/cloud/cost-limit/status?provider=replicate").get_json()
    assert status["reserved_usd"] == 0  # a waiting job holds no reservation
    with clock.running_past(period_end):  # the next period
        with rapp.app_context():
            assert pipelines.tick() == 1
            with db.session() as s:
                row = s.get(Job, job["id"])
                assert row.status in ("queued", "running") and row.provider == "replicate"
                assert row.estimated_cost_usd == est  # it reserves now, in the new period
        assert len(fake.predictions) == 1


class _ClusterWithIdleNodes(MemoryProvider):
    """A provider with its own capacity (what Slurm offers through the seam)."""

    provider_name = "cluster"

    @property
    def uploads_data(self) -> bool:
        return False

    def hardware_profiles(self):
        return [HardwareProfile("default", "cluster node", 0.0)]

    def placement_offer(self, requirements):
        return PlacementOffer(available=True, wait_seconds=0.0, note="partition gpu has 2 idle node(s)")


def test_auto_takes_an_offer_through_the_seam_before_the_cloud(rapp, rclient, fake, dataset):
    with registry.override("cluster", _ClusterWithIdleNodes):
        r = rclient.post("/api/cloud/jobs/submit", json=submit_body(dataset, provider="auto"))
        assert r.status_code == 201, r.get_data(as_text=True)
        job = r.get_json()["job"]
    assert job["provider"] == "cluster" and "2 idle node(s)" in job["placement"]["reason"]
    assert not fake.predictions
