"""Estimates: from similar finished jobs' p50/p90 (≥3 of them), else steps × seconds-per-step."""
from __future__ import annotations

from datetime import timedelta

import pytest

from stcloud import db
from stcloud.costs import estimates
from stcloud.costs import service as costs
from stcloud.models import utcnow

from .conftest import add_job

L40S = 3.50 / 3600


def seed_history(app, durations, *, steps=1000, hardware="gpu-l40s", provider="replicate", status="completed"):
    t = utcnow() - timedelta(days=1)
    ids = []
    for i, secs in enumerate(durations):
        ids.append(add_job(app, provider=provider, hardware=hardware, status=status, steps=steps, rate=L40S,
                           billed=secs, cost=secs * L40S, started_at=t, completed_at=t + timedelta(seconds=secs),
                           name=f"hist-{i}"))
    return ids


def est(app, provider="replicate", hardware="gpu-l40s", steps=1000):
    with app.app_context(), db.session() as s:
        return costs.estimate(s, provider, hardware, {"max_train_steps": steps} if steps else {})


def test_percentile_is_linear_interpolation():
    xs = [1800, 2000, 2200, 2400, 3600]
    assert estimates.percentile(xs, 50) == 2200
    assert estimates.percentile(xs, 90) == pytest.approx(2400 + 0.6 * 1200)
    assert estimates.percentile([5], 90) == 5
    assert estimates.percentile([1, 2], 50) == 1.5


def test_steps_basis_without_enough_history(app):
    seed_history(app, [1800, 2000])  # only two similar jobs
    e = est(app, steps=2000)
    assert e.basis == "steps"
    assert e.seconds == pytest.approx(2000 * 2.7)
    assert e.estimated_cost_usd == pytest.approx(2000 * 2.7 * L40S, abs=1e-6)
    assert e.p50_usd is None and e.p90_usd is None
    assert "2000 steps × 2.7 s/step" in e.basis_text
    assert e.detail["seconds_per_step"] == 2.7


def test_history_basis_p50_p90_from_seeded_jobs(app):
    used = seed_history(app, [3600, 1800, 2400, 2000, 2200])
    # noise that must be ignored: other hardware, other provider, failed, far step count
    seed_history(app, [100, 100, 100], hardware="gpu-a100-large")
    seed_history(app, [50, 50, 50], provider="worker", hardware=None)
    seed_history(app, [99999], status="failed")
    seed_history(app, [40000, 40000, 40000], steps=5000)
    e = est(app, steps=1000)
    assert e.basis == "history"
    assert sorted(e.detail["jobs"]) == sorted(used)
    assert e.detail["p50_seconds"] == pytest.approx(2200)
    assert e.detail["p90_seconds"] == pytest.approx(3120)
    assert e.p50_usd == pytest.approx(2200 * L40S, abs=1e-6)
    assert e.p90_usd == pytest.approx(3120 * L40S, abs=1e-6)
    assert e.estimated_cost_usd == e.p50_usd  # the estimate (and the reservation) is the p50
    assert "p50 of 5 similar finished replicate/gpu-l40s jobs" in e.basis_text


def test_history_scales_by_steps_and_prefers_the_closest_jobs(app):
    seed_history(app, [1000, 1000, 1000], steps=1000)  # 1 s/step
    seed_history(app, [3000, 3000, 3000], steps=1500)  # 2 s/step: closer to 1600
    e = est(app, steps=1600)
    assert e.basis == "history"
    # all six are within ×2 and ≤ 10 are used: scaled 1600 s ×3 and 3200 s ×3
    assert e.detail["n"] == 6
    assert e.detail["p50_seconds"] == pytest.approx(2400)
    e2 = est(app, steps=3000)  # only the 1500-step jobs are within ×2
    assert e2.detail["n"] == 3 and e2.detail["p50_seconds"] == pytest.approx(6000)


def test_history_uses_the_current_rate_of_the_profile(app, client):
    seed_history(app, [3600, 3600, 3600])
    client.put("/api/cloud/rates", json={"provider": "replicate", "hardware": "gpu-l40s", "usd_per_hour": 4.0})
    e = est(app)
    assert e.basis == "history" and e.estimated_cost_usd == pytest.approx(4.0)


def test_seconds_per_step_is_a_setting(app, client):
    r = client.put("/api/cloud/rates", json={"seconds_per_step": {"default": 2.0, "replicate/gpu-a100-large": 1.0}})
    assert r.status_code == 200 and r.json["seconds_per_step"]["default"] == 2.0
    assert est(app, steps=1000).seconds == pytest.approx(2000)
    a100 = est(app, hardware="gpu-a100-large", steps=1000)
    assert a100.seconds == pytest.approx(1000) and a100.estimated_cost_usd == pytest.approx(1000 * 5.0 / 3600)


def test_missing_steps_are_assumed_and_said_so(app):
    e = est(app, steps=None)
    assert e.detail["steps_assumed"] is True and e.detail["steps"] == 1000
    assert "assumed" in e.basis_text
    assert estimates.steps_of({"--max_train_steps": "1500"}) == 1500


def test_estimate_api_answers_the_contract(app, client):
    seed_history(app, [1800, 2000, 2200])
    body = {"provider": "replicate", "name": "x", "config": {"max_train_steps": 1000},
            "dataloader_config": [{"id": "d", "type": "local", "instance_data_dir": "/nonexistent"}]}
    r = client.post("/api/cloud/cost-estimate", json=body)
    assert r.status_code == 200, r.json
    for key in ("estimated_cost_usd", "p50_usd", "p90_usd", "basis", "rate_usd_per_second", "would_warn", "would_block"):
        assert key in r.json
    assert r.json["basis"] == "history"
    assert r.json["estimated_cost_usd"] == pytest.approx(2000 * L40S, abs=1e-6)
    assert r.json["p90_usd"] == pytest.approx(2160 * L40S, abs=1e-6)
    assert r.json["would_warn"] is False and r.json["would_block"] is False


def test_estimate_api_flags_limits_and_caps(app, client):
    # steps basis: 1000 × 2.7 s × L40S = $2.625
    client.put("/api/cloud/cost-limits/replicate", json={"enabled": True, "amount_usd": 3.0, "period": "monthly",
                                                          "action": "warn"})
    body = {"provider": "replicate", "config": {"max_train_steps": 1000}}
    r = client.post("/api/cloud/cost-estimate", json=body).json
    assert r["would_warn"] is True and r["would_block"] is False
    assert "88%" in r["warnings"][0]
    client.put("/api/cloud/cost-limits/all", json={"enabled": True, "amount_usd": 2.0, "action": "block"})
    r = client.post("/api/cloud/cost-estimate", json=body).json
    assert r["would_block"] is True and "global" in r["block_reason"]
    r = client.post("/api/cloud/cost-estimate", json={**body, "max_cost_usd": 1.0}).json
    assert any("max_cost_usd" in w for w in r["warnings"])


@pytest.mark.parametrize("body, field", [
    ({"config": {}}, "provider"),
    ({"provider": "aws"}, "provider"),
    ({"provider": "replicate", "config": []}, "config"),
    ({"provider": "replicate", "hardware": "gpu-nope"}, "hardware"),
    ({"provider": "replicate", "max_cost_usd": -1}, "max_cost_usd"),
])
def test_estimate_api_bad_input_is_400_naming_the_field(client, body, field):
    r = client.post("/api/cloud/cost-estimate", json=body)
    assert r.status_code == 400 and r.json["field"] == field


def test_estimate_fragment_for_the_submit_form(app, client):
    from tests.conftest import csrf_of

    token = csrf_of(client)
    r = client.post("/api/cloud/cost-estimate", data={"provider": "replicate", "hardware": "gpu-a100-large",
                                                      "config": '{"max_train_steps": 1000}'},
                    headers={"HX-Request": "true", "X-CSRF-Token": token})
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert "estimate-result" in html and "$3.75" in html and "Basis: steps" in html
    r = client.post("/api/cloud/cost-estimate", data={"provider": "replicate", "config": "{oops"},
                    headers={"HX-Request": "true", "X-CSRF-Token": token})
    assert r.status_code == 200 and "config is not valid JSON" in r.get_data(as_text=True)


def test_estimate_fragment_ignores_replicate_hardware_for_local_jobs(app, client):
    """The submit form always posts its Replicate hardware select; a local job is priced at
    the local profile, not at "gpu-l40s"."""
    from tests.conftest import csrf_of

    token = csrf_of(client)
    r = client.post("/api/cloud/cost-estimate", data={"provider": "local", "hardware": "gpu-l40s",
                                                      "config": '{"max_train_steps": 100}'},
                    headers={"HX-Request": "true", "X-CSRF-Token": token})
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and "estimate-result" in html and "gpu-l40s" not in html


def test_the_reference_trainer_is_estimated_at_its_own_pace(app):
    """The ~8 s sample is not priced at the GPU table's 2.7 s/step (it said "~9m 00s")."""
    with app.app_context(), db.session() as s:
        e = costs.estimate(s, "local", None, {"model_family": "reference", "max_train_steps": 200,
                                              "step_delay_seconds": 0.03})
        plain = costs.estimate(s, "local", None, {"model_family": "flux", "max_train_steps": 200})
    assert e.seconds == pytest.approx(200 * 0.04) and "× 0.04 s/step (the reference trainer)" in e.basis_text
    assert plain.seconds == pytest.approx(200 * 2.7)
    assert estimates.reference_seconds_per_step({"--model_family": "reference"}) == 0.01
    assert estimates.reference_seconds_per_step({"model_family": "reference", "step_delay_seconds": "x"}) == 0.01
    assert estimates.reference_seconds_per_step({"model_family": "sdxl"}) is None
