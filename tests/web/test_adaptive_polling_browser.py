"""In Chromium: the adaptive refresh (static/poll.js) sends If-None-Match, gets 304 while the
job did not change, still shows every change, and asks nothing while the tab is hidden."""
from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from stcloud.jobs import service
from stcloud.jobs.service import JobUpdate
from tests.jobs.factories import make_job

pytestmark = pytest.mark.browser


def _record(page, path: str) -> list[tuple[float, int, str | None]]:
    """(when, status, If-None-Match sent) of each htmx request to exactly ``path``."""
    seen: list[tuple[float, int, str | None]] = []

    def on_response(resp):
        if urlsplit(resp.url).path == path and resp.request.headers.get("hx-request") == "true":
            seen.append((time.monotonic(), resp.status, resp.request.headers.get("if-none-match")))
    page.on("response", on_response)
    return seen


def _set_hidden(page, hidden: bool) -> None:
    page.evaluate("""hidden => {
        Object.defineProperty(document, "hidden", {value: hidden, configurable: true});
        Object.defineProperty(document, "visibilityState", {value: hidden ? "hidden" : "visible", configurable: true});
        document.dispatchEvent(new Event("visibilitychange"));
    }""", hidden)


def test_job_page_refreshes_conditionally_and_pauses_when_hidden(app, live_server, page):
    jid = make_job(app, "running", provider="worker", name="adaptive")
    with app.app_context():
        service.apply_update(jid, JobUpdate(logs_append="first line\n", progress={"step": 1, "total_steps": 10}),
                             source="worker")
    panel = _record(page, f"/jobs/{jid}")
    page.goto(f"{live_server}/jobs/{jid}")
    page.wait_for_selector("#progress-text:has-text('step 1/10')")

    # nothing changed: the panel's poll is conditional from the first one and answered 304
    deadline = time.monotonic() + 15
    while not any(s == 304 for _, s, _ in panel) and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert any(status == 304 and inm for _, status, inm in panel), panel

    # a change still shows up (progress in the panel, a line in the log)
    with app.app_context():
        service.apply_update(jid, JobUpdate(logs_append="second line\n", progress={"step": 7, "total_steps": 10}),
                             source="worker")
    page.wait_for_selector("#progress-text:has-text('step 7/10')", timeout=25000)
    page.wait_for_selector("#log-text:has-text('second line')", timeout=25000)

    # hidden tab: no request at all; shown again: refreshed at once
    _set_hidden(page, True)
    page.wait_for_timeout(500)
    count = len(panel)
    with app.app_context():
        service.apply_update(jid, JobUpdate(progress={"step": 9, "total_steps": 10}), source="worker")
    page.wait_for_timeout(6000)
    assert len(panel) == count
    assert page.locator("#progress-text:has-text('step 7/10')").count() == 1
    shown = time.monotonic()
    _set_hidden(page, False)
    page.wait_for_selector("#progress-text:has-text('step 9/10')", timeout=5000)
    assert time.monotonic() - shown < 5


def test_job_list_rows_follow_their_jobs(app, live_server, page):
    jid = make_job(app, "running", provider="worker", name="row job")
    rows = _record(page, f"/jobs/{jid}/row")
    page.goto(f"{live_server}/jobs")
    row = page.locator(f"#job-row-{jid}")
    row.wait_for()
    # seeded tag: every poll is conditional from the first one, and answered 304 while nothing
    # changed. (A running job's tag also turns over each TICK_SECONDS clock bucket, so the first
    # poll may legitimately be a 200 when the page and the poll straddle a bucket boundary.)
    deadline = time.monotonic() + 20
    while not any(status == 304 for _, status, _ in rows) and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert rows and all(inm for _, _, inm in rows), rows
    assert any(status == 304 for _, status, _ in rows), rows
    assert sum(status == 200 for _, status, _ in rows) <= 1, rows
    with app.app_context():
        service.apply_update(jid, JobUpdate(progress={"step": 4, "total_steps": 8}), source="worker")
    page.wait_for_selector(f"#job-row-{jid} .progress-cell:has-text('4/8')", timeout=25000)
    with app.app_context():
        service.apply_update(jid, JobUpdate(status="completed"), source="worker")
    page.wait_for_selector(f"#job-row-{jid}[data-status='completed']", timeout=40000)
    assert page.locator(f"#job-row-{jid}").get_attribute("data-poll") is None
