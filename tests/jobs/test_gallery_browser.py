"""Browser: the job page's gallery per checkpoint step (thumbnails load lazily, a click opens
one large), each checkpoint's download link, and resume through the confirm page that shows
the steps and cost left."""
from __future__ import annotations

import io
import re

import pytest
import requests
from PIL import Image

from tests.jobs.test_checkpoints_api import make_job, put

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]


def png(shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (64, 32), shade).save(buf, format="PNG")
    return buf.getvalue()


def checkpoint(app, job_id: str, step: int) -> None:
    put(app, f"{job_id}/checkpoints/checkpoint-{step}/pytorch_lora_weights.safetensors", f"w{step}".encode())
    put(app, f"{job_id}/checkpoints/checkpoint-{step}/sample.png", png(step))
    put(app, f"{job_id}/checkpoints/checkpoint-{step}/trainer_state.json", b"{}")


def test_gallery_shows_samples_per_step_and_resumes(app, live_server, page):
    jid = make_job(app, "failed", provider="worker", config={"max_train_steps": 100})
    checkpoint(app, jid, 25)
    checkpoint(app, jid, 50)
    put(app, f"{jid}/output/validation_images/step_50_portrait_512x512.png", png(200))

    page.goto(f"{live_server}/jobs/{jid}")
    page.wait_for_selector("#gallery .gallery-step")
    steps = page.locator("#gallery .gallery-step")
    assert [steps.nth(i).get_attribute("data-step") for i in range(steps.count())] == ["50", "25"]  # newest first
    thumbs = page.locator("#gallery img.thumb")
    assert thumbs.count() == 3 and thumbs.first.get_attribute("loading") == "lazy"
    page.locator("#checkpoints").scroll_into_view_if_needed()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#gallery img.thumb')].every(i => i.complete && i.naturalWidth === 64)")

    # click to enlarge: the dialog shows the same image, large
    page.locator("#gallery .gallery-step[data-step='25'] a[data-enlarge]").click()
    page.wait_for_function("() => document.getElementById('sample-dialog').open")
    page.wait_for_function("() => document.getElementById('sample-dialog-img').naturalWidth === 64")
    assert "step 25" in page.locator("#sample-dialog-caption").inner_text()
    page.locator("#sample-dialog button").click()
    page.wait_for_function("() => !document.getElementById('sample-dialog').open")

    # each checkpoint downloads as a zip (the link the page gives)
    href = page.locator("#gallery .gallery-step[data-step='50'] a.ck-download").get_attribute("href")
    r = requests.get(live_server + href, timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/zip"

    # resume: the confirm page shows what is left, then the new job's page
    page.click("#resume-link")
    page.wait_for_selector("#resume-plan")
    assert page.locator("#plan-step").inner_text() == "50"
    assert page.locator("#plan-remaining").inner_text().startswith("50 of 100")
    assert "$" in page.locator("#plan-cost").inner_text()
    page.select_option("#resume-provider", "local")
    page.click("#resume-replan button")
    page.wait_for_selector("#resume-plan")
    page.click("#resume-submit")
    page.wait_for_url(re.compile(r".*/jobs/job_[0-9a-z]{26}$"))
    new_id = page.url.rsplit("/", 1)[1]
    assert new_id != jid
    page.wait_for_selector("#job-chain")
    assert page.locator("#job-chain tr.chain-attempt").count() == 2
    assert "local" in page.locator("#job-chain tr.chain-attempt.current").inner_text()
