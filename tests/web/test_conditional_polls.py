"""Polled fragments answer 304 while nothing changed, 200 with a new tag when it did; the log
poller answers 204 while no byte was added (static/poll.js then slows down)."""
from __future__ import annotations

import re

import pytest

from stcloud.jobs import service
from stcloud.jobs.service import JobUpdate
from stcloud.web import conditional
from tests.jobs.factories import make_job

HX = {"HX-Request": "true"}


@pytest.fixture
def still_clock(monkeypatch):
    """A running job's tag includes the TICK_SECONDS clock bucket: two requests straddling a
    bucket's end rightly differ. Tests of "unchanged -> 304" hold the clock still."""
    now = conditional.time.time()
    monkeypatch.setattr(conditional.time, "time", lambda: now)


def _etag(resp) -> str:
    tag, weak = resp.get_etag()
    assert tag and weak
    return f'W/"{tag}"'


def test_status_panel_is_304_until_the_job_changes(app, client, still_clock):
    jid = make_job(app, "running")
    first = client.get(f"/jobs/{jid}", headers=HX)
    assert first.status_code == 200 and b'id="status-panel"' in first.data
    etag = _etag(first)
    again = client.get(f"/jobs/{jid}", headers={**HX, "If-None-Match": etag})
    assert again.status_code == 304 and again.data == b"" and _etag(again) == etag
    with app.app_context():
        service.apply_update(jid, JobUpdate(progress={"step": 5, "total_steps": 10}), source="worker")
    changed = client.get(f"/jobs/{jid}", headers={**HX, "If-None-Match": etag})
    assert changed.status_code == 200 and b"step 5/10" in changed.data and _etag(changed) != etag


def test_the_page_seeds_the_pollers_tag(app, client, still_clock):
    """The full page's data-etag is the tag the first poll is answered with, so even the first
    refresh is conditional."""
    jid = make_job(app, "running")
    page = client.get(f"/jobs/{jid}").get_data(as_text=True)
    seeded = re.search(r'id="status-panel"[^>]*data-etag="([0-9a-f]+)"', page, re.S).group(1)
    poll = client.get(f"/jobs/{jid}", headers={**HX, "If-None-Match": f'W/"{seeded}"'})
    assert poll.status_code == 304
    listing = client.get("/jobs").get_data(as_text=True)
    row_tag = re.search(rf'id="job-row-{jid}"[^>]*data-etag="([0-9a-f]+)"', listing, re.S).group(1)
    assert client.get(f"/jobs/{jid}/row", headers={**HX, "If-None-Match": f'W/"{row_tag}"'}).status_code == 304


def test_row_is_304_until_the_job_changes_and_stops_polling_when_done(app, client, still_clock):
    jid = make_job(app, "running")
    first = client.get(f"/jobs/{jid}/row", headers=HX)
    etag = _etag(first)
    assert client.get(f"/jobs/{jid}/row", headers={**HX, "If-None-Match": etag}).status_code == 304
    with app.app_context():
        service.apply_update(jid, JobUpdate(status="completed"), source="worker")
    done = client.get(f"/jobs/{jid}/row", headers={**HX, "If-None-Match": etag})
    assert done.status_code == 200 and b"data-poll" not in done.data


def test_a_running_jobs_tag_moves_with_the_clock(app, client, monkeypatch):
    """Durations and ETAs on a running job's fragments are re-rendered at least every
    TICK_SECONDS even when nothing else changed; a finished job's tag stays put."""
    running, done = make_job(app, "running"), make_job(app, "completed")
    now = [1_000_000.0]
    monkeypatch.setattr(conditional.time, "time", lambda: now[0])
    tags = {j: _etag(client.get(f"/jobs/{j}/row", headers=HX)) for j in (running, done)}
    now[0] += conditional.TICK_SECONDS
    assert client.get(f"/jobs/{running}/row", headers={**HX, "If-None-Match": tags[running]}).status_code == 200
    assert client.get(f"/jobs/{done}/row", headers={**HX, "If-None-Match": tags[done]}).status_code == 304


def test_another_viewer_does_not_get_a_304_for_my_tag(app, client):
    """The tag covers the session's CSRF token (the panel's forms embed it)."""
    jid = make_job(app, "running")
    etag = _etag(client.get(f"/jobs/{jid}", headers=HX))
    other = app.test_client()
    other.get("/jobs")  # a session of its own
    assert other.get(f"/jobs/{jid}", headers={**HX, "If-None-Match": etag}).status_code == 200


def test_unknown_job_poll_is_404(client):
    assert client.get("/jobs/job_missing/row", headers={**HX, "If-None-Match": 'W/"x"'}).status_code == 404


def test_log_poll_is_204_while_nothing_was_added(app, client):
    jid = make_job(app, "running")
    with app.app_context():
        service.apply_update(jid, JobUpdate(logs_append="line 1\n"), source="worker")
    r = client.get(f"/jobs/{jid}/log?offset=7", headers=HX)
    assert r.status_code == 204 and r.data == b""
    with app.app_context():
        service.apply_update(jid, JobUpdate(logs_append="line 2\n"), source="worker")
    r = client.get(f"/jobs/{jid}/log?offset=7", headers=HX)
    assert r.status_code == 200 and b"line 2" in r.data and b"offset=14" in r.data
    with app.app_context():
        service.apply_update(jid, JobUpdate(status="completed"), source="worker")
    r = client.get(f"/jobs/{jid}/log?offset=14", headers=HX)
    assert r.status_code == 200 and b'data-complete="true"' in r.data
