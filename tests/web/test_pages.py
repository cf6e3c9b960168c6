"""HTMX: fragment for htmx requests, full page otherwise; nav pages never 404."""
import pytest

from stcloud.jobs import service
from stcloud.jobs.service import JobUpdate
from tests.jobs.factories import make_job

HX = {"HX-Request": "true"}


@pytest.mark.parametrize("path", ["/", "/jobs", "/submit", "/providers", "/workers", "/spend",
                                  "/storage", "/configs", "/settings"])
def test_nav_pages_render(client, path):
    r = client.get(path)
    assert r.status_code == 200 and b"<html" in r.data and b"stcloud" in r.data


def test_job_list_fragment_vs_full(app, client):
    make_job(app, "running", name="frag job")
    full = client.get("/jobs?status=running")
    assert b"<html" in full.data and b"frag job" in full.data
    assert "HX-Request" in full.headers.get("Vary", "")
    frag = client.get("/jobs?status=running", headers=HX)
    assert b"<html" not in frag.data and b"frag job" in frag.data and b'id="job-table"' in frag.data
    assert "HX-Request" in frag.headers.get("Vary", "")
    restore = client.get("/jobs?status=running", headers={**HX, "HX-History-Restore-Request": "true"})
    assert b"<html" in restore.data


def test_job_page_fragment_vs_full(app, client):
    jid = make_job(app, "running", name="detail job")
    full = client.get(f"/jobs/{jid}")
    assert b"<html" in full.data and b"Logs" in full.data and b'data-poll="2000"' in full.data
    frag = client.get(f"/jobs/{jid}", headers=HX)
    assert b"<html" not in frag.data and b'id="status-panel"' in frag.data


def test_row_refreshes_only_while_active(app, client):
    running = make_job(app, "running")
    done = make_job(app, "completed")
    assert b'data-poll="3000"' in client.get(f"/jobs/{running}/row", headers=HX).data
    assert b"data-poll" not in client.get(f"/jobs/{done}/row", headers=HX).data


def test_log_tail_appends_and_stops_when_done(app, client):
    jid = make_job(app, "running")
    with app.app_context():
        service.apply_update(jid, JobUpdate(logs_append="a <b>\n"), source="worker")
    r = client.get(f"/jobs/{jid}/log?offset=0", headers=HX)
    assert b"a &lt;b&gt;" in r.data and b"offset=6" in r.data and b'data-poll="2000"' in r.data
    with app.app_context():
        service.apply_update(jid, JobUpdate(status="completed"), source="worker")
    r = client.get(f"/jobs/{jid}/log?offset=6", headers=HX)
    assert b"hx-get" not in r.data and b'data-complete="true"' in r.data


def test_unknown_job_page_is_html_404(client):
    r = client.get("/jobs/job_missing")
    assert r.status_code == 404 and b"<html" in r.data and b"not found" in r.data


def test_list_changes_poll(app, client):
    first = make_job(app, "queued")
    assert client.get(f"/jobs/changes?since={first}").status_code == 204
    make_job(app, "queued")
    r = client.get(f"/jobs/changes?since={first}")
    assert r.status_code == 200 and r.headers["HX-Trigger"] == "jobs-changed"
    page = client.get("/jobs").data
    assert b"jobs-changed from:body" in page and b"/jobs/changes?since=" in page
