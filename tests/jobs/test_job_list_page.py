"""The job list and job page show what a user looks for: duration, final loss, the failure
reason, ETA and steps/s of a running job; Chart.js only where a chart is drawn."""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from stcloud import db
from stcloud.jobs import service
from stcloud.models import Job, utcnow
from stcloud.web.filters import when
from tests.jobs.factories import make_job


def _set(app, job_id, **fields):
    with app.app_context():
        with db.transaction() as s:
            job = s.get(Job, job_id)
            for k, v in fields.items():
                setattr(job, k, v)


def _row(html: str, job_id: str) -> str:
    m = re.search(rf'<tr id="job-row-{job_id}".*?</tr>', html, re.S)
    assert m, html
    return m.group(0)


def test_list_shows_duration_loss_reason_eta_and_throughput(app, client):
    running = make_job(app, "running", provider="worker", name="run-a")
    now = utcnow()
    _set(app, running, started_at=now - timedelta(seconds=100),
         progress={"step": 50, "total_steps": 250, "loss": 0.25, "best_loss": 0.25})
    failed = make_job(app, "failed", provider="worker", name="broke")
    _set(app, failed, error="CUDA out of memory at step 3\nTraceback (most recent call last): ...")
    done = make_job(app, "completed", provider="worker", name="done")
    _set(app, done, started_at=now - timedelta(seconds=125), completed_at=now - timedelta(seconds=5),
         progress={"step": 10, "total_steps": 10, "loss": 0.1234, "best_loss": 0.1234})

    html = client.get("/jobs").get_data(as_text=True)
    row = _row(html, running)
    assert re.search(r"0\.5\d steps/s", row), row  # 50 steps in ~100 s
    assert re.search(r"ETA 6m 4\ds|ETA 6m 5\ds|ETA 6m 3\ds", row), row  # 200 steps left at ~0.5/s
    assert "0.2500" in row
    row = _row(html, failed)
    assert "CUDA out of memory at step 3" in row and "Traceback" not in row.split("title=")[0]
    row = _row(html, done)
    assert "2m 00s" in row and "0.1234" in row
    assert 'name="ids"' in row and 'id="compare-form"' in html

    api = client.get(f"/api/cloud/jobs/{done}").get_json()["job"]["metrics"]
    assert api["duration_seconds"] == 120 and api["final_loss"] == 0.1234 and api["best_loss"] == 0.1234


def test_chart_js_only_on_pages_with_charts(app, client):
    job = make_job(app, "running", provider="worker")
    with app.app_context(), db.transaction() as s:  # the history arrives as log lines
        service.append_log(s, s.get(Job, job), "step 1/4 loss=0.4\nstep 2/4 loss=0.3\n")
    assert "chart-4.5.1" not in client.get("/jobs").get_data(as_text=True)
    assert "chart-4.5.1" not in client.get("/submit").get_data(as_text=True)
    page = client.get(f"/jobs/{job}").get_data(as_text=True)
    assert "chart-4.5.1" in page and 'id="loss-smoothing"' in page and 'data-logscale="loss-log"' in page
    assert "chart-4.5.1" in client.get("/spend").get_data(as_text=True)


def test_timestamps_one_format(app):
    assert when(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02 03:04:05 UTC"
    assert when(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02 03:04:05 UTC"  # naive = UTC
    assert when("2026-01-02T03:04:05Z") == "2026-01-02 03:04:05 UTC"
    assert when("2026-01-02T04:04:05+01:00") == "2026-01-02 03:04:05 UTC"
    assert when(None) == "—"
    with app.app_context():
        assert app.jinja_env.from_string("{{ d.missing|when }}").render(d={}) == "—"


def test_spend_page_has_one_limit_form_with_a_scope_selector(app, client):
    client.put("/api/cloud/cost-limits/worker", json={"enabled": True, "amount_usd": 5, "action": "warn"})
    html = client.get("/spend").get_data(as_text=True)
    assert html.count('class="card limit-form"') == 1
    assert 'id="limit-form-worker"' in html and 'id="limit-scope"' in html
    assert all(f'data-scope="{p}"' in html for p in ("all", "worker", "local"))
    frag = client.get("/spend/limits?provider=local", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'id="limit-form-local"' in frag
    assert client.get("/spend/limits?provider=nope").status_code in (400, 404)
