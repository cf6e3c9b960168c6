"""Browser: the job page's snapshot diff, the Configs page, and the re-run buttons."""
from __future__ import annotations

import re

import pytest

from tests.snapshots.helpers import config, get_job, needs_submit, seed_job

pytestmark = pytest.mark.browser


def _rgb(page, selector) -> str:
    return page.eval_on_selector(selector, "el => getComputedStyle(el).backgroundColor")


def test_job_page_diff_view_and_configs_page(app, live_server, page):
    a = seed_job(app, message="baseline")
    b = seed_job(app, cfg=config(lr=2e-4, **{"--max_train_steps": 40}), message="double the lr")

    page.goto(f"{live_server}/jobs/{b}")
    section = page.locator("[data-testid=snapshot-section]")  # loaded by htmx after the page
    section.wait_for()
    assert get_job(app, b).snapshot[:12] in section.locator("[data-testid=snapshot-commit]").inner_text()
    diff = section.locator("[data-testid=snapshot-diff]")
    added = diff.locator("ins.dl-add")
    removed = diff.locator("del.dl-del")
    assert added.count() == 2 and removed.count() == 2
    assert '"--learning_rate": 0.0002,' in added.first.inner_text()
    assert '"--learning_rate": 0.0001,' in removed.first.inner_text()
    # highlighted: green for added, red for removed, nothing for context lines
    assert _rgb(page, "ins.dl-add") == "rgb(220, 243, 229)"
    assert _rgb(page, "del.dl-del") == "rgb(251, 224, 224)"
    assert _rgb(page, ".dl-ctx") == "rgba(0, 0, 0, 0)"
    assert section.get_by_role("button", name="Re-run exactly").is_visible()
    assert section.get_by_role("button", name="Re-run with current data").is_visible()
    # the previous run is one click away, and it is the first of its config
    section.get_by_role("link", name=a).click()
    page.wait_for_url(re.compile(rf".*/jobs/{a}$"))
    page.locator("[data-testid=snapshot-section]").wait_for()
    assert "first run of this config" in page.locator("[data-testid=snapshot-section]").inner_text()

    # Configs page: saved configs -> history (htmx) -> "use this version" opens submit
    page.goto(f"{live_server}/configs")
    page.get_by_role("link", name="my-lora").click()
    hist = page.locator("[data-testid=config-history]")
    hist.wait_for()
    assert "double the lr" in hist.inner_text() and "baseline" in hist.inner_text()
    old = get_job(app, a).snapshot
    link = hist.locator(f"a[href*='commit={old}']")
    assert link.get_attribute("href") == f"/submit?config_name=my-lora&commit={old}"


def test_rerun_buttons_against_the_submit_contract(app, live_server, page, fake_submit, original):
    """The buttons with the stand-in submit service (conftest.fake_submit)."""
    from PIL import Image

    orig = get_job(app, original["id"])
    page.goto(f"{live_server}/jobs/{orig.id}")
    page.get_by_role("button", name="Re-run exactly").click()
    page.wait_for_url(lambda url: "/jobs/job_" in url and orig.id not in url)
    new_id = page.url.rsplit("/", 1)[1]
    assert get_job(app, new_id).rerun_of == orig.id and fake_submit[-1][1] == "rerun"
    assert fake_submit[-1][0]["expected_dataset_sha256"] == orig.dataset_sha256
    section = page.locator("[data-testid=snapshot-section]")
    section.wait_for()
    assert "Same config and dataloader as the previous run" in section.inner_text()

    Image.new("RGB", (8, 8), "white").save(original["dataset"] / "img0.png")
    page.goto(f"{live_server}/jobs/{orig.id}")
    page.get_by_role("button", name="Re-run exactly").click()
    refused = page.locator("[data-testid=rerun-refused]")
    refused.wait_for()
    assert "dataset changed since the original run" in refused.inner_text()
    refused.get_by_role("button", name="Re-run with current data").click()
    page.wait_for_url(lambda url: "/jobs/job_" in url and orig.id not in url and new_id not in url)
    newer = page.url.rsplit("/", 1)[1]
    assert get_job(app, newer).rerun_of == orig.id
    assert get_job(app, newer).dataset_sha256 != orig.dataset_sha256
    assert "expected_dataset_sha256" not in fake_submit[-1][0]


@needs_submit
def test_rerun_buttons(app, client, live_server, page, tmp_path):
    from PIL import Image

    from stcloud import settings

    with app.app_context():
        settings.put("consent", "allow")
    ds = tmp_path / "photos"
    ds.mkdir()
    for i, color in enumerate(("red", "green")):
        Image.new("RGB", (8, 8), color).save(ds / f"img{i}.png")
    body = {"provider": "worker", "name": "my-lora", "config": config(), "data_consent": True,
            "dataloader_config": [{"id": "photos", "type": "local", "instance_data_dir": str(ds)}]}
    resp = client.post("/api/cloud/jobs/submit", json=body)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    orig = resp.get_json()["job"]

    # one click: the exact re-run opens the new job's page
    page.goto(f"{live_server}/jobs/{orig['id']}")
    page.get_by_role("button", name="Re-run exactly").click()
    page.wait_for_url(lambda url: "/jobs/job_" in url and orig["id"] not in url)
    new_id = page.url.rsplit("/", 1)[1]
    assert get_job(app, new_id).rerun_of == orig["id"]
    assert get_job(app, new_id).dataset_sha256 == orig["dataset_sha256"]
    page.locator("[data-testid=snapshot-section]").wait_for()
    assert "Same config and dataloader as the previous run" in page.locator("[data-testid=snapshot-section]").inner_text()

    # the data changed: refused, with the offer to re-run with the current data
    Image.new("RGB", (8, 8), "white").save(ds / "img0.png")
    page.goto(f"{live_server}/jobs/{orig['id']}")
    page.get_by_role("button", name="Re-run exactly").click()
    refused = page.locator("[data-testid=rerun-refused]")
    refused.wait_for()
    assert "dataset changed" in refused.inner_text().lower()
    refused.get_by_role("button", name="Re-run with current data").click()
    page.wait_for_url(lambda url: "/jobs/job_" in url and orig["id"] not in url and new_id not in url)
    newer = page.url.rsplit("/", 1)[1]
    assert get_job(app, newer).rerun_of == orig["id"]
    assert get_job(app, newer).dataset_sha256 != orig["dataset_sha256"]
