"""Spend summary (per day in a time zone, per provider, estimate vs actual), the Spend page
and its forms, the job-list limit bar, and the ``stcloud cost`` CLI against a live server."""
from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner

from stcloud.cli import main
from stcloud.costs import service as costs
from stcloud.models import utcnow
from tests.conftest import csrf_of

from .conftest import add_job, at

pytestmark = pytest.mark.timeout(60)


def test_summary_per_day_in_a_timezone_and_estimate_accuracy(app):
    now = at("2025-06-15T20:00:00Z")  # 16 Jun 05:00 in Tokyo
    add_job(app, status="completed", cost=2.0, estimated=1.0, estimate={"basis": "steps"},
            completed_at=at("2025-06-15T14:30:00Z"), name="a")  # 15 Jun 23:30 JST
    add_job(app, status="completed", cost=1.0, estimated=1.25, estimate={"basis": "history"},
            completed_at=at("2025-06-15T15:30:00Z"), name="b")  # 16 Jun 00:30 JST
    add_job(app, provider="worker", status="completed", cost=0.5, completed_at=at("2025-06-14T01:00:00Z"))
    add_job(app, status="completed", cost=9.0, completed_at=at("2025-05-01T00:00:00Z"))  # outside 7 days
    add_job(app, status="running", rate=0.001, estimated=3.0, started_at=now - timedelta(seconds=1000))
    with app.app_context():
        s = costs.summary(days=7, tz="Asia/Tokyo", now=now)
    days = {d["date"]: d for d in s["per_day"]}
    assert len(s["per_day"]) == 7 and s["per_day"][-1]["date"] == "2025-06-16"
    assert days["2025-06-15"]["providers"]["replicate"] == pytest.approx(2.0)
    assert days["2025-06-16"]["providers"]["replicate"] == pytest.approx(1.0 + 1.0)  # + running job today
    assert days["2025-06-14"]["providers"]["worker"] == pytest.approx(0.5)
    assert s["per_provider"]["replicate"]["cost_usd"] == pytest.approx(3.0)
    assert s["per_provider"]["replicate"]["reserved_usd"] == pytest.approx(2.0)
    assert s["totals"]["cost_usd"] == pytest.approx(3.5) and s["totals"]["active_jobs"] == 1
    assert {e["name"]: e["error_pct"] for e in s["estimates"]} == {"a": 100.0, "b": -20.0}
    acc = s["estimate_accuracy"]
    assert acc["n"] == 2 and acc["mean_abs_error_pct"] == pytest.approx(60.0)
    assert acc["by_basis"]["steps"]["mean_abs_error_pct"] == pytest.approx(100.0)
    assert s["chart"]["labels"][-1] == "2025-06-16" and "limit" not in s["chart"]


def test_summary_api_and_limit_line(app, client):
    add_job(app, status="completed", cost=4.0, estimated=4.0, completed_at=utcnow() - timedelta(minutes=5))
    client.put("/api/cloud/cost-limits/all", json={"enabled": True, "amount_usd": 50, "period": "monthly",
                                                    "action": "block"})
    r = client.get("/api/cloud/costs/summary?days=3")
    assert r.status_code == 200
    s = r.json
    for key in ("per_day", "per_provider", "totals", "jobs_by_status", "estimates", "limits", "chart"):
        assert key in s
    assert s["jobs_by_status"]["completed"] == 1
    assert s["chart"]["limit"]["amount_usd"] == 50 and s["chart"]["limit"]["cumulative"][-1] == pytest.approx(4.0)
    assert client.get("/api/cloud/costs/summary?days=0").status_code == 400
    assert client.get("/api/cloud/costs/summary?days=abc").status_code == 400
    assert client.get("/api/cloud/costs/summary?timezone=Nowhere/City").status_code == 400


def test_spend_page_and_fragments(app, client):
    add_job(app, status="completed", cost=2.0, estimated=1.5, estimate={"basis": "steps"},
            completed_at=utcnow() - timedelta(minutes=5), name="finished-one")
    client.put("/api/cloud/cost-limits/replicate", json={"enabled": True, "amount_usd": 2.2, "action": "warn"})
    page = client.get("/spend").get_data(as_text=True)
    assert 'id="spend-chart"' in page and 'id="estimate-chart"' in page and "finished-one" in page
    assert 'id="limit-form-replicate"' in page and 'id="rates-table"' in page and 'id="cost-estimate"' in page
    frag = client.get("/spend?days=7", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert frag.lstrip().startswith('<div id="spend-body">') and "<html" not in frag
    # the job list's limit bar loads itself and shows the warning level
    assert 'hx-get="/spend/limit-bar"' in client.get("/").get_data(as_text=True)
    bar = client.get("/spend/limit-bar").get_data(as_text=True)
    assert 'data-level="warning"' in bar and "91%" in bar
    # the limit form: saved via htmx, bad input answered 422 with the message (htmx swaps 422)
    token = csrf_of(client)
    hx = {"HX-Request": "true", "X-CSRF-Token": token}
    r = client.post("/spend/limits/worker", data={"enabled": "on", "amount_usd": "25", "period": "weekly",
                                                  "action": "block", "timezone": "Asia/Tokyo", "stop_running": "on"},
                    headers=hx)
    assert r.status_code == 200 and "Saved." in r.get_data(as_text=True)
    st = client.get("/api/cloud/cost-limits/worker").json
    assert (st["enabled"], st["amount_usd"], st["period"], st["action"], st["timezone"], st["stop_running"]) == \
        (True, 25.0, "weekly", "block", "Asia/Tokyo", True)
    r = client.post("/spend/limits/worker", data={"amount_usd": "-3", "period": "weekly", "action": "block",
                                                  "timezone": "UTC"}, headers=hx)
    assert r.status_code == 422 and "amount_usd must be" in r.get_data(as_text=True)
    assert client.post("/spend/limits/worker", data={"amount_usd": "1"}).status_code == 403  # no CSRF token
    # rates editor
    r = client.post("/spend/rates", data={"provider": "replicate", "hardware": "gpu-h100", "usd_per_hour": "9.5",
                                          "label": "H100"}, headers=hx)
    assert r.status_code == 200 and "gpu-h100" in r.get_data(as_text=True)
    r = client.post("/spend/rates", data={"provider": "replicate", "hardware": "gpu-h100", "usd_per_hour": "x"},
                    headers=hx)
    assert r.status_code == 422 and "usd_per_hour" in r.get_data(as_text=True)
    r = client.post("/spend/seconds-per-step", data={"profile": "default", "seconds_per_step": "3.1"}, headers=hx)
    assert r.status_code == 200 and "default: 3.1 s" in r.get_data(as_text=True)


def test_provider_limit_partial_loads_itself(app):
    with app.test_request_context("/providers"):
        from flask import render_template

        html = render_template("costs/_provider_limit.html", provider="replicate")
    assert 'hx-get="/spend/limits/replicate"' in html and 'hx-trigger="load"' in html


def test_cli_cost_status_and_limits_set(live_server):
    runner = CliRunner()
    r = runner.invoke(main, ["cost", "limits", "set", "replicate", "--amount", "50", "--period", "monthly",
                             "--action", "block", "--timezone", "America/Los_Angeles", "--stop-running",
                             "--server", live_server])
    assert r.exit_code == 0, r.output
    assert "replicate" in r.output and "block" in r.output and "+stop" in r.output
    r = runner.invoke(main, ["cost", "status", "--provider", "replicate", "--server", live_server])
    assert r.exit_code == 0 and "$50.00" in r.output and "America/Los_Angeles" in r.output
    r = runner.invoke(main, ["cost", "status", "--server", live_server, "--json"])
    assert r.exit_code == 0 and '"limits"' in r.output
    r = runner.invoke(main, ["cost", "limits", "set", "all", "--amount", "-5", "--period", "daily", "--action", "warn",
                             "--server", live_server])
    assert r.exit_code != 0 and "amount_usd" in r.output
    r = runner.invoke(main, ["cost", "limits", "set", "all", "--amount", "5", "--period", "daily", "--action", "warn",
                             "--timezone", "Nowhere/City", "--server", live_server])
    assert r.exit_code != 0 and "timezone" in r.output
    r = runner.invoke(main, ["cost", "rates", "--set", "worker", "default", "0.5", "--server", live_server])
    assert r.exit_code == 0 and "$0.5000/h" in r.output
    r = runner.invoke(main, ["cost", "estimate", "--provider", "worker", "--steps", "1000", "--server", live_server])
    assert r.exit_code == 0 and "basis: steps" in r.output
    r = runner.invoke(main, ["cost", "status", "--server", "http://127.0.0.1:9"])
    assert r.exit_code != 0 and "cannot reach stcloud" in r.output


def test_job_cost_partial_shows_running_cost(app):
    job_id = add_job(app, status="running", rate=0.01, estimated=2.0, max_cost=5.0,
                     started_at=utcnow() - timedelta(seconds=100))
    from flask import render_template

    from stcloud import db
    from stcloud.models import Job

    with app.test_request_context("/"), db.session() as s:
        html = render_template("costs/_job_cost.html", job=s.get(Job, job_id))
    assert "Running cost so far" in html and "$36.00/h" in html and "reserved $2.00" in html and "$5.00" in html
