"""In Chromium, with the Content-Security-Policy enforced: no page triggers a violation, and the
behaviours moved out of inline handlers still work."""
from __future__ import annotations

import pytest

from stcloud import db
from stcloud.models import Job, utcnow
from tests.web.test_security_headers import pages

pytestmark = pytest.mark.browser


def _watch(page) -> list[str]:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return problems


def test_no_page_violates_the_policy(app, live_server, page):
    client = app.test_client()
    full = [p for p in pages(app) if "<html" in client.get(p).get_data(as_text=True)]
    assert len(full) >= 8
    problems = _watch(page)
    for path in full:
        page.goto(live_server + path)
        page.wait_for_load_state("networkidle")
    assert problems == []


def test_delete_asks_first(app, live_server, page):
    with app.app_context(), db.transaction() as s:
        job = Job(name="to delete", provider="local", status="completed", completed_at=utcnow())
        s.add(job)
        s.flush()
        job_id = job.id
    problems = _watch(page)
    page.goto(f"{live_server}/jobs/{job_id}")
    page.once("dialog", lambda d: d.dismiss())
    page.click("form[data-confirm] button")
    page.wait_for_timeout(300)
    assert page.url.endswith(f"/jobs/{job_id}")
    page.once("dialog", lambda d: d.accept())
    with page.expect_navigation():
        page.click("form[data-confirm] button")
    with app.app_context(), db.session() as s:
        assert s.get(Job, job_id) is None
    assert problems == []
