"""Browser, end to end with no account: a real `stcloud serve --local-worker` process; submit
a local job on the sample dataset from the Submit page, watch the progress bar and the log
move, download the trained `.safetensors` from the job page."""
from __future__ import annotations

import re
import time

import pytest
import requests

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(180)]


def progress_value(page) -> float:
    return float(page.locator("#job-progress").get_attribute("value") or 0)


def test_submit_local_job_watch_it_train_and_download_the_adapter(serve_process, page, tmp_path):
    # Slow steps a little so there is something to watch (200 steps of the sample config).
    srv = serve_process(args=("--local-worker",), env={"STCLOUD_TRAINER_STEP_DELAY": "0.04"})
    home = srv.home
    # the embedded worker registered and the sample exists under STCLOUD_HOME
    deadline = time.time() + 20
    workers = []
    while time.time() < deadline:
        workers = requests.get(srv.url + "/api/cloud/workers", timeout=5).json()["workers"]
        if workers and workers[0]["status"] == "idle":
            break
        time.sleep(0.2)
    assert workers and workers[0]["is_local"] and workers[0]["status"] == "idle"
    assert (home / "sample" / "sample_dataset").is_dir() and (home / "sample" / "sample_config.json").is_file()

    page.goto(srv.url + "/submit")
    assert "sample_dataset" in page.locator("textarea[name=dataloader_json]").input_value()  # prefilled
    page.check("input[name=provider][value=local]")
    page.fill("input[name=name]", "sample-lora")
    # Let the cost-estimate request that the edit triggers finish: a Submit click while it
    # is in flight is dropped by htmx (reported to the submit/cost owners).
    page.press("input[name=name]", "Tab")
    page.wait_for_load_state("networkidle")
    page.click("#submit-button")
    try:
        page.wait_for_url(re.compile(r".*/jobs/job_[0-9a-z]{26}$"), timeout=15000)
    except Exception:
        raise AssertionError("submit did not land on the job page: " + page.locator("#submit-result").inner_text()
                             + page.locator("#data-summary").inner_text()) from None
    page.wait_for_url(re.compile(r".*/jobs/job_[0-9a-z]{26}$"), timeout=30000)
    job_id = page.url.rsplit("/", 1)[1]

    # the progress bar moves (polled fragment) and the log grows (appended by offset)
    page.wait_for_function("() => Number(document.querySelector('#job-progress').value) > 0", timeout=30000)
    first, first_log = progress_value(page), len(page.locator("#log-text").inner_text())
    page.wait_for_function(
        f"() => Number(document.querySelector('#job-progress').value) > {first}", timeout=30000)
    page.wait_for_function(
        f"() => document.querySelector('#log-text').innerText.length > {first_log}", timeout=30000)
    assert re.search(r"step \d+/200 loss=", page.locator("#log-text").inner_text())
    assert page.locator("#status-panel .badge").first.inner_text() in ("running", "completed")

    # done: the adapter is listed among the outputs and downloads from the job page
    page.locator("#status-panel .badge", has_text="completed").wait_for(timeout=90000)
    assert progress_value(page) == 100
    assert page.locator("#job-attempts .attempt").count() == 1
    link = page.locator("#status-panel a", has_text=re.compile(r"^pytorch_lora_weights\.safetensors$"))
    link.wait_for(timeout=15000)
    with page.expect_download() as dl:
        link.click()
    target = tmp_path / "downloaded.safetensors"
    dl.value.save_as(str(target))
    from safetensors.numpy import load_file

    tensors = load_file(str(target))
    assert tensors and all(t.size for t in tensors.values())
    assert target.stat().st_size == (home / "cloud_outputs" / "outputs" / job_id /
                                     "pytorch_lora_weights.safetensors").stat().st_size
    # the log view finished and shows the whole run once
    page.wait_for_function("() => document.querySelector('#log-tail[data-complete]') !== null", timeout=15000)
    text = page.locator("#log-text").inner_text()
    assert len(re.findall(r"^step 200/200 ", text, re.M)) == 1 and "stage: done" in text
