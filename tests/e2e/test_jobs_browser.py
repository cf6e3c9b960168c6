"""Browser: the job list and a job page with seeded jobs; the log view appends new lines."""
import re

import pytest

from stcloud.jobs import service
from stcloud.jobs.service import JobUpdate
from tests.jobs.factories import make_job

pytestmark = pytest.mark.browser


def test_job_list_and_job_page_live_log(app, live_server, page):
    jid = make_job(app, "running", name="browser lora", provider="worker")
    make_job(app, "completed", name="finished lora", provider="local")
    with app.app_context():
        service.apply_update(jid, JobUpdate(logs_append="stage: training\nstep 10/100 loss=0.5000\n"),
                             source="worker")

    page.goto(live_server + "/jobs")
    assert page.locator("table.jobs tbody tr").count() == 2
    row = page.locator(f"#job-row-{jid}")
    assert "running" in row.inner_text()
    # filters swap only the table, and push the URL
    page.select_option("select[name=status]", "completed")
    page.wait_for_function("() => document.querySelectorAll('table.jobs tbody tr').length === 1")
    assert "finished lora" in page.locator("table.jobs").inner_text()
    assert "status=completed" in page.url
    page.go_back()
    page.wait_for_function("() => document.querySelectorAll('table.jobs tbody tr').length === 2")

    page.click("text=browser lora")
    page.wait_for_url(re.compile(rf".*/jobs/{jid}$"))
    log = page.locator("#log-text")
    assert "step 10/100" in log.inner_text()
    assert page.locator("#job-progress").get_attribute("value") == "10.0"

    with app.app_context():
        service.apply_update(jid, JobUpdate(logs_append="step 55/100 loss=0.2500\nnew line appended\n"),
                             source="worker")
    page.wait_for_function("() => document.querySelector('#log-text').innerText.includes('new line appended')",
                           timeout=10000)
    text = log.inner_text()
    assert text.count("step 10/100") == 1  # appended, not re-downloaded
    page.wait_for_function("() => document.querySelector('#job-progress').value == 55", timeout=10000)

    # the row on the list refreshes itself while the job is active
    with app.app_context():
        service.apply_update(jid, JobUpdate(logs_append="done\n", status="completed"), source="worker")
    page.wait_for_function("() => document.querySelector('#log-tail[data-complete]') !== null", timeout=10000)
    # the status panel polls on its own (every 2 s): wait for its next refresh
    page.wait_for_function("() => document.querySelector('#status-panel .badge').innerText.includes('completed')",
                           timeout=10000)
    assert "completed" in page.locator("#status-panel .badge").inner_text()


def test_cancel_from_job_page(app, live_server, page):
    jid = make_job(app, "queued", name="to cancel", provider="worker")
    page.goto(f"{live_server}/jobs/{jid}")
    page.once("dialog", lambda d: d.accept())
    page.click("button:has-text(\"Cancel job\")")
    page.wait_for_function("() => document.querySelector('#status-panel .badge').innerText === 'cancelled'")


def test_new_job_appears_on_the_list(app, live_server, page):
    make_job(app, "completed", name="old one", provider="local")
    page.goto(live_server + "/jobs")
    assert page.locator("table.jobs tbody tr").count() == 1
    make_job(app, "queued", name="brand new", provider="worker")
    page.wait_for_function("() => document.querySelector('table.jobs').innerText.includes('brand new')",
                           timeout=12000)
