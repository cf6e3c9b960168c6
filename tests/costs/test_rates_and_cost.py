"""Rates per hardware profile, recorded at submit; actual cost = billed seconds × that rate."""
from __future__ import annotations

from datetime import timedelta

import pytest

from stcloud import db
from stcloud.costs import service as costs
from stcloud.errors import BadRequest
from stcloud.jobs import service as jobs
from stcloud.models import Job, utcnow
from stcloud.providers import replicate_map
from tests.fakes.replicate_fake import FakeReplicate

from .conftest import add_job, at, get_job

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fake():
    with FakeReplicate() as f:
        yield f


def _submit_row(app, provider, hardware, steps=1000) -> str:
    """What the submit path does with the cost contract: estimate -> record rate -> insert."""
    with app.app_context():
        with db.transaction() as s:
            est = costs.estimate(s, provider, hardware, {"max_train_steps": steps})
            costs.check_and_reserve(s, provider, est.estimated_cost_usd)
            job = Job(name=f"{hardware}", provider=provider, hardware=hardware, status="queued",
                      config={"max_train_steps": steps}, dataloader_config=[], **est.job_fields())
            s.add(job)
            s.flush()
            return job.id


def _finish_from_fake(app, fake, job_id, predict_time):
    """Run a prediction on the fake and apply its final JSON the way webhook/poller do."""
    pred = fake.client().predictions.create(version=fake.latest_version_id(), input={"job": job_id})
    started = fake.start(pred.id)
    with app.app_context():
        jobs.apply_update(job_id, jobs.update_from_info(replicate_map.info_from_prediction(started), provider="replicate"),
                          source="webhook")
    final = fake.succeed(pred.id, output=["https://example.invalid/lora.safetensors"], predict_time=predict_time)
    info = replicate_map.info_from_prediction(final)
    with app.app_context():
        jobs.apply_update(job_id, jobs.update_from_info(info, provider="replicate"), source="webhook")
    return final


@pytest.mark.parametrize("hardware, per_hour", [
    ("gpu-l40s", 3.50), ("gpu-a100-large", 5.00), ("gpu-l40s-2x", 7.00), ("gpu-a100-large-2x", 10.00)])
def test_cost_is_predict_time_times_that_profiles_rate(app, fake, hardware, per_hour):
    job_id = _submit_row(app, "replicate", hardware)
    final = _finish_from_fake(app, fake, job_id, predict_time=1800.0)
    assert final["metrics"]["predict_time"] == 1800.0
    job = get_job(app, job_id)
    assert job.rate_usd_per_second == pytest.approx(per_hour / 3600)
    assert job.billed_seconds == 1800.0
    assert job.cost_usd == pytest.approx(1800.0 * per_hour / 3600, abs=1e-6)  # half an hour
    assert job.status == "completed"


def test_each_profile_has_its_own_rate_not_one_fixed_rate(app):
    with app.app_context(), db.session() as s:
        got = {hw: costs.rate_for(s, "replicate", hw) for hw in ("gpu-l40s", "gpu-a100-large", "gpu-l40s-2x")}
        assert len(set(got.values())) == 3
        assert got["gpu-l40s"] == pytest.approx(3.50 / 3600)
        assert got["gpu-a100-large"] == pytest.approx(5.00 / 3600)
        # no hardware named: the Replicate default profile (L40S)
        assert costs.rate_for(s, "replicate", None) == pytest.approx(3.50 / 3600)
        assert costs.rate_for(s, "worker", None) == 0.0 and costs.rate_for(s, "local", None) == 0.0


def test_price_edit_after_the_fact_does_not_change_old_jobs(app, client, fake):
    old = _submit_row(app, "replicate", "gpu-l40s")
    _finish_from_fake(app, fake, old, predict_time=3600.0)
    running = _submit_row(app, "replicate", "gpu-l40s")
    assert get_job(app, old).cost_usd == pytest.approx(3.50)

    r = client.put("/api/cloud/rates", json={"provider": "replicate", "hardware": "gpu-l40s", "usd_per_hour": 7.0})
    assert r.status_code == 200, r.json
    assert r.json["written"][0]["usd_per_hour"] == pytest.approx(7.0)
    # a late duplicate webhook for the old job is priced at the rate recorded on it
    with app.app_context():
        jobs.apply_update(old, jobs.JobUpdate(billed_seconds=3600.0), source="webhook")
    assert get_job(app, old).cost_usd == pytest.approx(3.50)
    # a job submitted before the edit finishes afterwards: still its recorded rate
    _finish_from_fake(app, fake, running, predict_time=3600.0)
    assert get_job(app, running).cost_usd == pytest.approx(3.50)
    # a new job gets the new price
    new = _submit_row(app, "replicate", "gpu-l40s")
    assert get_job(app, new).rate_usd_per_second == pytest.approx(7.0 / 3600)
    rates_now = {(r["provider"], r["hardware"]): r for r in client.get("/api/cloud/rates").json["rates"]}
    assert rates_now[("replicate", "gpu-l40s")]["usd_per_hour"] == pytest.approx(7.0)
    assert rates_now[("replicate", "gpu-l40s")]["source"] == "table"
    assert rates_now[("replicate", "gpu-a100-large")]["usd_per_hour"] == pytest.approx(5.0)


def test_dated_rates_take_effect_on_their_date(app, client):
    future = (utcnow() + timedelta(days=10)).isoformat()
    r = client.put("/api/cloud/rates", json={"rates": [
        {"provider": "replicate", "hardware": "gpu-a100-large", "usd_per_hour": 6.0, "effective_from": future}]})
    assert r.status_code == 200
    with app.app_context(), db.session() as s:
        assert costs.rate_for(s, "replicate", "gpu-a100-large") == pytest.approx(5.0 / 3600)
        assert costs.rate_for(s, "replicate", "gpu-a100-large", utcnow() + timedelta(days=11)) == pytest.approx(6.0 / 3600)
    row = next(x for x in r.json["rates"] if x["hardware"] == "gpu-a100-large")
    assert row["usd_per_hour"] == pytest.approx(5.0) and row["upcoming"][0]["usd_per_hour"] == pytest.approx(6.0)


def test_worker_rate_is_configurable_and_profiles_fall_back(app, client):
    r = client.put("/api/cloud/rates", json=[{"provider": "worker", "usd_per_hour": 0.36},
                                             {"provider": "worker", "hardware": "2x-rtx4090", "usd_per_hour": 1.2,
                                              "gpu_count": 2, "vram_gb": 48}])
    assert r.status_code == 200, r.json
    with app.app_context(), db.session() as s:
        assert costs.rate_for(s, "worker", None) == pytest.approx(0.0001)
        assert costs.rate_for(s, "worker", "2x-rtx4090") == pytest.approx(1.2 / 3600)
        assert costs.rate_for(s, "worker", "some-label") == pytest.approx(0.0001)  # falls back to default
        with pytest.raises(BadRequest) as exc:
            costs.rate_for(s, "replicate", "gpu-unknown")
        assert exc.value.extra["field"] == "hardware"


@pytest.mark.parametrize("body, field", [
    ({"provider": "nope", "hardware": "x", "usd_per_hour": 1}, "provider"),
    ({"provider": "replicate", "usd_per_hour": 1}, "hardware"),
    ({"provider": "replicate", "hardware": "gpu-l40s", "usd_per_hour": -1}, "usd_per_hour"),
    ({"provider": "replicate", "hardware": "gpu-l40s", "usd_per_hour": "abc"}, "usd_per_hour"),
    ({"provider": "replicate", "hardware": "gpu-l40s"}, "usd_per_hour"),
    ({"provider": "replicate", "hardware": "gpu-l40s", "usd_per_hour": 1, "effective_from": "yesterday"}, "effective_from"),
    ({"provider": "replicate", "hardware": "gpu-l40s", "usd_per_hour": 1, "gpu_count": 0}, "gpu_count"),
    ({"rates": [], "seconds_per_step": -2}, "seconds_per_step"),
])
def test_rates_api_validation(client, body, field):
    r = client.put("/api/cloud/rates", json=body)
    assert r.status_code == 400
    assert r.mimetype == "application/problem+json"
    assert r.json["field"] == field


def test_rates_api_rejects_garbage(client):
    assert client.put("/api/cloud/rates", data="{", content_type="application/json").status_code == 400
    assert client.put("/api/cloud/rates", json=[1]).status_code == 400


def test_finalize_worker_cost_sums_attempts(app):
    t0 = at("2025-06-01T10:00:00Z")
    job_id = add_job(app, provider="worker", status="completed", rate=0.001,
                     started_at=t0 + timedelta(seconds=700), completed_at=t0 + timedelta(seconds=1000),
                     events=[(t0, "pending", "queued"), (t0 + timedelta(seconds=100), "queued", "running"),
                             (t0 + timedelta(seconds=400), "running", "queued"),  # worker lost: 300 s
                             (t0 + timedelta(seconds=700), "queued", "running"),
                             (t0 + timedelta(seconds=1000), "running", "completed")])
    with app.app_context(), db.transaction() as s:
        job = s.get(Job, job_id)
        assert costs.finalize_worker_cost(s, job) == pytest.approx(0.6)
        assert job.billed_seconds == pytest.approx(600)
        assert costs.finalize_worker_cost(s, job) == pytest.approx(0.6)  # idempotent
    # Replicate jobs are billed by the provider: untouched
    rep = add_job(app, provider="replicate", status="completed", rate=0.001, cost=1.23, billed=1230,
                  started_at=t0, completed_at=t0 + timedelta(seconds=5000))
    with app.app_context(), db.transaction() as s:
        assert costs.finalize_worker_cost(s, s.get(Job, rep)) == pytest.approx(1.23)
        assert s.get(Job, rep).billed_seconds == 1230


def test_running_cost_is_elapsed_times_recorded_rate(app):
    job_id = add_job(app, provider="replicate", status="running", rate=0.01,
                     started_at=utcnow() - timedelta(seconds=100))
    with app.app_context(), db.session() as s:
        job = s.get(Job, job_id)
        assert costs.running_cost(job, job.started_at + timedelta(seconds=50)) == pytest.approx(0.5)
        assert costs.running_cost(job) == pytest.approx(1.0, rel=0.05)
    queued = add_job(app, provider="replicate", status="queued", rate=0.01)
    with app.app_context(), db.session() as s:
        assert costs.running_cost(s.get(Job, queued)) == 0.0
