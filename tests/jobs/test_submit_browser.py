"""Browser: the Submit page — preview the data, confirm consent, submit with the progress bar,
land on the job page showing its status. App served on loopback, Replicate = the fake."""
from __future__ import annotations

import json
import re

import pytest

from tests.providers.fixtures import (  # noqa: F401 - fixtures
    dataloader_for,
    dataset,
    fake,
    rapp,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]


@pytest.fixture
def app(rapp):  # live_server serves this app
    return rapp


def test_preview_consent_submit_shows_the_job(live_server, page, fake, dataset, monkeypatch):
    import time

    from stcloud.providers.replicate import ReplicateService

    real_upload = ReplicateService.upload_file

    def slow_upload(self, *a, **kw):  # slow enough to watch the progress bar poll the job
        time.sleep(1.5)
        return real_upload(self, *a, **kw)

    monkeypatch.setattr(ReplicateService, "upload_file", slow_upload)
    page.goto(f"{live_server}/submit")
    page.check("input[name=provider][value=replicate]")
    page.fill("input[name=name]", "browser-lora")
    page.click("#config-tab-json")  # the JSON is the config form's advanced tab
    page.fill("textarea[name=config_json]", json.dumps({"max_train_steps": 100, "learning_rate": 1e-4}))
    page.fill("textarea[name=dataloader_json]", json.dumps(dataloader_for(dataset)))

    page.click("#preview-button")
    summary = page.locator("#data-summary-card")
    summary.wait_for()
    assert "8 files" in summary.inner_text()
    assert "symlink leaves dataset root" in summary.inner_text()

    page.click("#submit-button")
    dialog = page.locator("#consent-dialog")
    dialog.wait_for()
    assert "Upload this data?" in dialog.inner_text()
    assert fake.requests_to("POST", r"^/v1/files$") == []  # nothing uploaded before consent

    page.click("#consent-confirm")
    progress = page.locator("#submit-progress-text", has_text="uploading")
    progress.wait_for()  # scan -> package -> upload -> submit, polled from the job row
    assert "job_" in progress.inner_text()
    page.wait_for_url(re.compile(r".*/jobs/job_[0-9a-z]{26}$"))
    badge = page.locator("#status-panel .badge").first
    badge.wait_for()
    assert badge.inner_text() in ("queued", "running")
    assert "browser-lora" in page.locator("h1").inner_text()
    assert page.locator("#refresh-button").is_visible()
    assert fake.predictions_created == 1

    # the provider moves on; the Refresh button polls it now
    pred_id = next(iter(fake.predictions))
    fake.start(pred_id, logs="stage: training\nstep 10/100 loss=0.5\n")
    page.click("#refresh-button")
    page.locator("#status-panel .badge", has_text="running").wait_for()


def test_submit_right_after_an_edit_is_not_swallowed(live_server, page, dataset):
    """A field edit fires a cost-estimate request; clicking Submit while it is in flight must
    still submit (the estimate must not inherit the form's disabled-element/indicator)."""
    import time

    def slow(route):
        time.sleep(1.5)
        route.continue_()

    page.route("**/api/cloud/cost-estimate", slow)
    page.goto(f"{live_server}/submit")
    page.check("input[name=provider][value=worker]")
    page.fill("textarea[name=dataloader_json]", json.dumps(dataloader_for(dataset)))
    page.fill("input[name=name]", "quick-click")
    page.click("#submit-button")  # the estimate for the edit above is still running
    page.wait_for_url(re.compile(r".*/jobs/job_[0-9a-z]+$"), timeout=20000)
    assert "quick-click" in page.locator("h1").inner_text()


def test_submit_error_stays_visible_while_progress_polls(live_server, page):
    """The progress poller fires while the submit is in flight; its replies arriving after the
    422 must land in the poller itself, never over the error."""
    import time

    progress_replies = []

    def slow_submit(route):
        if route.request.method == "POST":
            time.sleep(1.3)  # the poller fires every 400 ms meanwhile
        route.continue_()

    def late_progress(route):
        time.sleep(0.8)  # these replies arrive after the submit's 422
        response = route.fetch()
        progress_replies.append(response.status)
        route.fulfill(response=response)

    page.route(lambda url: url.endswith("/submit"), slow_submit)
    page.route(lambda url: "/submit/progress" in url, late_progress)
    page.goto(f"{live_server}/submit")
    page.check("input[name=provider][value=worker]")
    page.click("#config-tab-json")  # the JSON is the config form's advanced tab
    page.fill("textarea[name=config_json]", "{not json")
    page.click("#submit-button")
    error = page.locator("#submit-result #submit-error")
    error.wait_for(timeout=15000)
    deadline = time.monotonic() + 10
    while len(progress_replies) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    page.wait_for_timeout(500)  # let the last late reply swap
    assert len(progress_replies) >= 2, progress_replies
    assert error.is_visible()
    assert "config" in error.inner_text()
    assert page.locator("#submit-progress #submit-progress-text").count() == 1  # swapped in place


def test_provider_dependent_fields(live_server, page):
    """Hardware shows for providers priced by a hardware profile (capabilities), worker
    requirements for providers that match requirements, the Hub model id for Hub delivery."""
    page.goto(f"{live_server}/submit")
    page.check("input[name=provider][value=local]")
    assert not page.locator("#hardware-field").is_visible()
    assert not page.locator("#hub-field").is_visible()
    page.check("input[name=provider][value=worker]")
    assert page.locator("#requirements-field").is_visible()
    assert not page.locator("#hardware-field").is_visible()
    page.check("input[name=provider][value=replicate]")
    assert page.locator("#hardware-field").is_visible()
    assert not page.locator("#requirements-field").is_visible()
    options = page.locator("select[name=hardware] option:not([disabled])")
    assert options.count() >= 1
    assert all(o.get_attribute("data-provider") == "replicate" for o in options.all())
    page.select_option("#delivery-type", "hub")
    assert page.locator("#hub-field").is_visible()
    page.select_option("#delivery-type", "builtin")
    assert not page.locator("#hub-field").is_visible()


def test_delivery_defaults_to_this_machine_with_a_public_url(live_server, page, client):
    page.goto(f"{live_server}/submit")
    assert page.locator("#delivery-type").input_value() == ""
    r = client.put("/api/cloud/settings/public-url", json={"public_url": "https://train.example.com"})
    assert r.status_code == 200, r.get_data(as_text=True)
    page.goto(f"{live_server}/submit")
    assert page.locator("#delivery-type").input_value() == "builtin"
