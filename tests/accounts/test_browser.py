"""Browser (Chromium), auth on, a real `stcloud serve --local-worker`: a member signs in,
submits the sample job, sees it train, downloads its adapter, and signs out."""
import re

import pytest
import requests

from tests.accounts.helpers import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(180)]


def test_login_submit_logout(serve_process, page, tmp_path):
    srv = serve_process(args=("--local-worker",), env={"STCLOUD_AUTH": "on", "STCLOUD_TRAINER_STEP_DELAY": "0"})
    admin = requests.Session()
    password = (srv.home / "initial-admin-password").read_text().strip()
    assert admin.post(srv.url + "/api/auth/login", json={"username": "admin", "password": password},
                      timeout=10).status_code == 200
    r = admin.post(srv.url + "/api/cloud/users", json={"username": "mia", "role": "member", "password": PASSWORD},
                   timeout=10)
    assert r.status_code == 201

    page.goto(srv.url + "/submit")
    page.wait_for_url(re.compile(r".*/login\?next=/submit$"))
    page.fill("input[name=username]", "mia")
    page.fill("input[name=password]", "wrong password")
    page.click("button[type=submit]")
    assert "invalid username or password" in page.locator("[role=alert]").inner_text()
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/submit$"))
    assert "mia (member)" in page.locator("#nav-account").inner_text()
    assert page.locator("a", has_text="Users").count() == 0  # admin-only links stay hidden

    page.check("input[name=provider][value=local]")
    page.fill("input[name=name]", "mia-lora")
    page.press("input[name=name]", "Tab")
    page.wait_for_load_state("networkidle")
    page.click("#submit-button")
    page.wait_for_url(re.compile(r".*/jobs/job_[0-9a-z]{26}$"), timeout=30000)
    job_id = page.url.rsplit("/", 1)[1]
    page.locator("#status-panel .badge", has_text="completed").wait_for(timeout=120000)
    link = page.locator("#status-panel a", has_text=re.compile(r"^pytorch_lora_weights\.safetensors$"))
    link.wait_for(timeout=15000)
    href = link.get_attribute("href")
    with page.expect_download() as dl:
        link.click()
    target = tmp_path / "adapter.safetensors"
    dl.value.save_as(str(target))
    assert target.stat().st_size == (srv.home / "cloud_outputs" / "outputs" / job_id /
                                     "pytorch_lora_weights.safetensors").stat().st_size

    jobs = admin.get(srv.url + f"/api/cloud/jobs/{job_id}", timeout=10).json()["job"]
    assert jobs["status"] == "completed"
    audit = admin.get(srv.url + "/api/cloud/audit?actor=mia", timeout=10).json()["records"]
    assert {"auth.login", "job.submit"} <= {r["action"] for r in audit}

    page.click("text=Log out")
    page.wait_for_url(re.compile(r".*/login$"))
    page.goto(srv.url + "/jobs")
    page.wait_for_url(re.compile(r".*/login\?next=/jobs$"))
    r = page.request.get(srv.url + href)  # signed out: the download is refused (to the sign-in page)
    assert "/login" in r.url and r.body() != target.read_bytes()
    assert page.request.get(srv.url + "/api/cloud/jobs").status == 401
