"""Spend in a period, limit status, validation, and the atomic check-and-reserve."""
from __future__ import annotations

from datetime import timedelta

import pytest

from stcloud import db
from stcloud.costs import limits
from stcloud.costs import service as costs
from stcloud.errors import PaymentRequired
from stcloud.models import Job

from .conftest import add_job, at, install_submit_stub

RATE = 0.001  # $/s


def put_limit(client, provider, **body):
    r = client.put(f"/api/cloud/cost-limits/{provider}", json=body)
    assert r.status_code == 200, r.json
    return r.json


def spend(app, scope, period, tz, now):
    with app.app_context(), db.session() as s:
        start, end = limits.periods.period_bounds(period, tz, now)
        return limits.spend_in_period(s, scope, start, end, now)


def test_spend_formula_finished_plus_max_of_reservation_and_running(app):
    now = at("2025-06-15T12:00:00Z")
    add_job(app, status="completed", cost=2.0, completed_at=at("2025-06-15T01:00:00Z"))
    add_job(app, status="failed", rate=RATE, started_at=at("2025-06-15T02:00:00Z"),
            completed_at=at("2025-06-15T02:10:00Z"))  # no billed figure yet: 600 s × rate
    add_job(app, status="cancelled", completed_at=at("2025-06-15T03:00:00Z"))  # never ran: $0
    add_job(app, status="completed", cost=50.0, completed_at=at("2025-06-14T23:59:59Z"))  # yesterday
    add_job(app, status="running", rate=RATE, estimated=1.0, started_at=now - timedelta(seconds=300))  # 0.3 < 1.0
    add_job(app, status="running", rate=RATE, estimated=1.0, started_at=now - timedelta(seconds=1500))  # 1.5 > 1.0
    add_job(app, status="queued", rate=RATE, estimated=0.25, created_at=at("2025-06-01T00:00:00Z"))
    add_job(app, status="running", provider="worker", rate=RATE, estimated=5.0, started_at=now)
    sp = spend(app, "replicate", "daily", "UTC", now)
    assert sp.finished_usd == pytest.approx(2.6)
    assert sp.running_usd == pytest.approx(1.8)
    assert sp.reserved_usd == pytest.approx(0.7 + 0.25)
    assert sp.committed_usd == pytest.approx(2.6 + 1.0 + 1.5 + 0.25)
    everything = spend(app, "all", "daily", "UTC", now)
    assert everything.committed_usd == pytest.approx(sp.committed_usd + 5.0)


@pytest.mark.parametrize("tz, boundary", [
    ("UTC", "2025-06-15T00:00:00Z"),
    ("America/Los_Angeles", "2025-06-15T07:00:00Z"),
    ("Asia/Tokyo", "2025-06-14T15:00:00Z"),
])
def test_job_started_before_the_boundary_counts_in_the_period_it_finished(app, tz, boundary):
    b = at(boundary)
    straddler = add_job(app, status="completed", cost=3.0, started_at=b - timedelta(hours=2),
                        completed_at=b + timedelta(minutes=30))
    add_job(app, status="completed", cost=7.0, started_at=b - timedelta(hours=3), completed_at=b - timedelta(seconds=1))
    assert straddler
    today = spend(app, "replicate", "daily", tz, b + timedelta(hours=1))
    yesterday = spend(app, "replicate", "daily", tz, b - timedelta(minutes=1))
    assert today.finished_usd == pytest.approx(3.0) and today.finished_jobs == 1
    assert yesterday.finished_usd == pytest.approx(7.0)
    # a still-running job that started before the boundary is reserved in the new period too
    add_job(app, status="running", rate=RATE, estimated=4.0, started_at=b - timedelta(hours=1))
    today = spend(app, "replicate", "daily", tz, b + timedelta(hours=1))
    assert today.committed_usd == pytest.approx(3.0 + max(4.0, 7200 * RATE))


def test_weekly_and_monthly_in_a_timezone(app):
    # Tokyo week starts Mon 00:00 JST = Sun 15:00 UTC
    add_job(app, status="completed", cost=1.0, completed_at=at("2025-06-15T14:00:00Z"))  # Sun 23:00 JST
    add_job(app, status="completed", cost=2.0, completed_at=at("2025-06-15T16:00:00Z"))  # Mon 01:00 JST
    assert spend(app, "all", "weekly", "Asia/Tokyo", at("2025-06-16T00:00:00Z")).finished_usd == pytest.approx(2.0)
    assert spend(app, "all", "weekly", "UTC", at("2025-06-16T00:00:00Z")).finished_usd == pytest.approx(0.0)
    assert spend(app, "all", "weekly", "UTC", at("2025-06-15T23:00:00Z")).finished_usd == pytest.approx(3.0)
    # LA month of June ends at 2025-07-01T07:00Z
    add_job(app, status="completed", cost=4.0, completed_at=at("2025-07-01T05:00:00Z"))
    assert spend(app, "all", "monthly", "America/Los_Angeles", at("2025-06-20T00:00:00Z")).finished_usd == pytest.approx(7.0)
    assert spend(app, "all", "monthly", "UTC", at("2025-06-20T00:00:00Z")).finished_usd == pytest.approx(3.0)


def test_status_api_fields(app, client):
    add_job(app, status="completed", cost=30.0, completed_at=limits.utcnow() - timedelta(minutes=5))
    add_job(app, status="queued", rate=RATE, estimated=12.0)
    st = put_limit(client, "replicate", enabled=True, amount_usd=50, period="monthly", action="block",
                   timezone="Asia/Tokyo", stop_running=True)
    r = client.get("/api/cloud/cost-limit/status?provider=replicate")
    assert r.status_code == 200
    st = r.json
    for key in ("enabled", "amount_usd", "period", "action", "spent_usd", "reserved_usd", "percent_used",
                "is_warning", "is_exceeded", "period_start", "period_end"):
        assert key in st
    assert st["spent_usd"] == pytest.approx(30.0) and st["reserved_usd"] == pytest.approx(12.0)
    assert st["percent_used"] == pytest.approx(84.0)
    assert st["is_warning"] is True and st["is_exceeded"] is False
    assert st["timezone"] == "Asia/Tokyo" and st["stop_running"] is True
    assert st["period_start"].endswith("T15:00:00Z")  # a Tokyo midnight
    assert client.get("/api/cloud/cost-limits/replicate").json["amount_usd"] == 50
    glob = client.get("/api/cloud/cost-limit/status").json
    assert glob["provider"] == "all" and glob["enabled"] is False and glob["spent_usd"] == pytest.approx(30.0)
    scopes = [lim["provider"] for lim in client.get("/api/cloud/cost-limits").json["limits"]]
    assert scopes[0] == "all" and {"replicate", "worker", "local"} <= set(scopes)  # one per registered provider


@pytest.mark.parametrize("body, field", [
    ({"amount_usd": -1}, "amount_usd"),
    ({"amount_usd": "ten"}, "amount_usd"),
    ({"amount_usd": True}, "amount_usd"),
    ({"period": "yearly"}, "period"),
    ({"action": "explode"}, "action"),
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"enabled": "yes"}, "enabled"),
    ({"stop_running": 1}, "stop_running"),
    ({"colour": "red"}, "colour"),
])
def test_limit_validation_names_the_field(client, body, field):
    r = client.put("/api/cloud/cost-limits/replicate", json=body)
    assert r.status_code == 400 and r.mimetype == "application/problem+json"
    assert r.json["field"] == field


def test_unknown_provider_and_bad_body(client):
    assert client.put("/api/cloud/cost-limits/aws", json={}).status_code == 400
    assert client.get("/api/cloud/cost-limit/status?provider=aws").status_code == 400
    assert client.put("/api/cloud/cost-limits/all", data="nope", content_type="application/json").status_code == 400


def test_check_and_reserve_warns_at_80_and_100_and_blocks_above(app, client):
    put_limit(client, "worker", enabled=True, amount_usd=10, period="daily", action="block")
    add_job(app, provider="worker", status="queued", rate=RATE, estimated=7.0)
    with app.app_context(), db.transaction() as s:
        assert costs.check_and_reserve(s, "worker", 0.5).would_warn is False  # 75%
        c = costs.check_and_reserve(s, "worker", 1.0)  # 80%
        assert c.would_warn and "80%" in c.warnings[0]
        c = costs.check_and_reserve(s, "worker", 3.0)  # exactly 100%: accepted, warned
        assert c.would_warn and not c.would_block and "100%" in c.warnings[0]
        with pytest.raises(PaymentRequired) as exc:
            costs.check_and_reserve(s, "worker", 3.01)
        e = exc.value
        assert e.status == 402
        assert e.extra["spent_usd"] == 0 and e.extra["reserved_usd"] == pytest.approx(7.0)
        assert e.extra["limit_usd"] == 10 and e.extra["requested_usd"] == pytest.approx(3.01)
        assert costs.check_and_reserve(s, "worker", 0).would_block is False  # a free job is never blocked
        # the limit of another provider does not apply
        assert costs.check_and_reserve(s, "replicate", 100).would_block is False


def test_warn_action_never_blocks_and_global_limit_applies_to_every_provider(app, client):
    put_limit(client, "replicate", enabled=True, amount_usd=1, action="warn")
    with app.app_context(), db.transaction() as s:
        c = costs.check_and_reserve(s, "replicate", 5.0)
        assert c.would_warn and not c.would_block and "over 100%" in c.warnings[0]
    put_limit(client, "all", enabled=True, amount_usd=2, action="block")
    with app.app_context(), db.transaction() as s:
        with pytest.raises(PaymentRequired) as exc:
            costs.check_and_reserve(s, "worker", 2.5)
        assert exc.value.extra["limit_provider"] == "all"
    put_limit(client, "all", enabled=False)
    with app.app_context(), db.transaction() as s:
        assert costs.check_and_reserve(s, "worker", 2.5).would_block is False


def test_reservation_flushed_in_the_same_transaction_is_not_counted_twice(app, client):
    put_limit(client, "worker", enabled=True, amount_usd=1.0, action="block")
    with app.app_context(), db.transaction() as s:
        job = Job(name="j", provider="worker", status="queued", config={}, dataloader_config=[],
                  estimated_cost_usd=1.0, rate_usd_per_second=RATE)
        s.add(job)  # added, not flushed: no_autoflush keeps it out of the sum
        assert costs.check_and_reserve(s, "worker", 1.0).would_block is False
        s.flush()
        assert costs.check_and_reserve(s, "worker", 1.0, job_id=job.id).would_block is False
        with pytest.raises(PaymentRequired):
            costs.check_and_reserve(s, "worker", 1.0)  # flushed and not excluded: counted


def test_402_is_problem_json_naming_spent_reserved_limit(make_app):
    app = make_app()
    path = install_submit_stub(app, hold_seconds=0)
    client = app.test_client()
    client.put("/api/cloud/rates", json={"provider": "worker", "usd_per_hour": 3.6})  # $0.001/s
    put_limit(client, "worker", enabled=True, amount_usd=0.5, action="block")
    body = {"provider": "worker", "config": {"max_train_steps": 100}}  # 100 × 2.7 s × $0.001 = $0.27
    assert client.post(path, json=body).status_code == 201
    r = client.post(path, json=body)
    assert r.status_code == 402 and r.mimetype == "application/problem+json"
    p = r.json
    assert p["status"] == 402 and p["title"] == "Spending limit reached"
    assert p["spent_usd"] == 0 and p["reserved_usd"] == pytest.approx(0.27) and p["limit_usd"] == 0.5
    assert "spent $0.00 + reserved $0.27" in p["detail"]
    with app.app_context(), db.session() as s:
        assert s.query(Job).count() == 1  # nothing half-written


def test_a_get_answer_can_be_put_back_and_a_new_limit_is_enabled(client):
    st = put_limit(client, "local", amount_usd=3, action="block")  # no "enabled": a new limit is on
    assert st["enabled"] is True
    st["amount_usd"] = 4
    r = client.put("/api/cloud/cost-limits/local", json=st)  # the whole GET shape, provider included
    assert r.status_code == 200, r.json
    assert r.json["amount_usd"] == 4 and r.json["enabled"] is True
