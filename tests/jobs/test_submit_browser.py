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
