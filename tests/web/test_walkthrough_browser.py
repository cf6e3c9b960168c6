"""Issue 17's "Done when", walked in the browser against a real ``stcloud serve --local-worker``
with the reference trainer: three trainings with different learning rates submitted from the
Submit page's form, watched in the job list, compared (three curves, samples side by side),
a notification for each end (a Slack-style receiver and a Standard Webhooks verifier on
loopback), and the best run's last checkpoint (by final loss) downloaded from its page.
A screenshot of every page goes to ``STCLOUD_SCREENSHOTS`` (default: the test's tmp dir)."""
from __future__ import annotations

import json
import re
import zipfile

import pytest
import requests
from standardwebhooks import Webhook

from tests.web.walkthrough import (
    EVERY,
    LEARNING_RATES,
    STEP_DELAY,
    STEPS,
    job_end_messages,
    receiver,  # noqa: F401 - fixture
    screenshot_dir,
    server,  # noqa: F401 - fixture
    wait_for,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]


def _field(page, name):
    return page.locator(f'[data-config-field="{name}"]')


def test_three_learning_rates_from_the_form_to_the_best_checkpoint(server, receiver, page, tmp_path):
    shots = screenshot_dir(tmp_path)
    page.set_viewport_size({"width": 1400, "height": 1000})

    def shot(name):
        page.screenshot(path=str(shots / f"browser-{name}.png"), full_page=True)

    # 1. notifications: a Slack incoming webhook and a signed generic webhook, on the Settings page
    page.goto(f"{server.url}/settings")
    form = page.locator("#notify-form")
    form.wait_for()
    form.locator("input[name=slack_enabled]").check()
    form.locator("input[name=slack_url]").fill(f"{receiver.url}/slack")
    form.locator("input[name=webhook_enabled]").check()
    form.locator("input[name=webhook_url]").fill(f"{receiver.url}/hook")
    form.locator("button[type=submit]").click()
    secret = page.locator("#webhook-secret code").inner_text()
    assert secret.startswith("whsec_")
    shot("1-settings-notifications")

    # 2. three trainings from the form, one learning rate each, on "This machine"
    names = [f"lr-{lr:g}" for lr in LEARNING_RATES]
    ids = []
    for n, (name, lr) in enumerate(zip(names, LEARNING_RATES, strict=True)):
        page.goto(f"{server.url}/submit")
        page.check("input[name=provider][value=local]")
        page.fill("input[name=name]", name)
        _field(page, "learning_rate").fill(str(lr))
        _field(page, "max_train_steps").fill(str(STEPS))
        _field(page, "checkpointing_steps").fill(str(EVERY))
        page.click("#config-tab-json")  # the advanced tab: a key the form does not have
        cfg = json.loads(page.input_value("textarea[name=config_json]"))
        assert cfg["learning_rate"] == lr and cfg["max_train_steps"] == STEPS  # the form wrote them
        cfg["step_delay_seconds"] = STEP_DELAY
        page.fill("textarea[name=config_json]", json.dumps(cfg, indent=2))
        page.click("#config-tab-form")
        assert _field(page, "learning_rate").input_value() == str(lr)
        page.wait_for_function("() => document.getElementById('config-status').dataset.state === 'valid'")
        assert page.locator("#token-hint").is_hidden()  # nothing of Replicate's on "This machine"
        if n == 0:
            shot("2-submit-form")
        page.click("#submit-button")
        page.wait_for_url(re.compile(r".*/jobs/job_[0-9a-z]{26}$"))
        ids.append(page.url.rsplit("/", 1)[1])
    shot("3-job-page-just-submitted")

    # 3. watch them in the list until the three have completed
    page.goto(f"{server.url}/jobs")
    for jid in ids:
        page.locator(f"#job-row-{jid}").wait_for()
    shot("4-job-list-running")
    page.wait_for_function(
        "ids => ids.every(id => { const r = document.getElementById('job-row-' + id);"
        " return r && r.dataset.status === 'completed'; })", arg=ids, timeout=120_000)
    for jid in ids:
        row = page.locator(f"#job-row-{jid}")
        assert re.fullmatch(r"\d\.\d{4}", row.locator("td.final-loss").inner_text().strip())
        assert re.fullmatch(r"\d+s", row.locator("td.duration").inner_text().strip())
    shot("5-job-list-completed")

    # 4. compare the three: three curves, the figures, the samples side by side
    for jid in ids:
        page.check(f"#pick-{jid}")
    page.click("#compare-button")
    page.wait_for_url(re.compile(r".*/jobs/compare\?.*"))
    page.wait_for_function("() => window.Chart && Chart.getChart('compare-chart')")
    curves = page.evaluate("() => Chart.getChart('compare-chart').data.datasets.map(d => [d.label, d.data.length])")
    assert len(curves) == 3 and all(points >= 2 for _label, points in curves)
    assert {label.split(" (")[0] for label, _n in curves} == set(names)
    grid = page.locator("#compare-samples")
    heads = grid.locator("thead th[data-job]")
    assert sorted(heads.nth(i).get_attribute("data-job") for i in range(heads.count())) == sorted(ids)
    rows = grid.locator("tbody tr")
    assert [rows.nth(i).get_attribute("data-step") for i in range(rows.count())] == [
        str(s) for s in range(EVERY, STEPS + 1, EVERY)]
    assert all(rows.nth(i).locator("img").count() == 3 for i in range(rows.count()))  # every step, every run
    grid.scroll_into_view_if_needed()
    page.wait_for_function("() => [...document.querySelectorAll('#compare-samples img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    assert "config.learning_rate" in page.inner_text("#config-diff")
    best = page.locator("#compare-table tr[data-best]")
    assert best.count() == 1
    best_id = best.get_attribute("data-job")
    finals = {j["id"]: j["final_loss"] for j in
              requests.get(f"{server.url}/api/cloud/jobs/compare", params={"ids": ",".join(ids)}, timeout=10).json()["jobs"]}
    assert best_id == min(finals, key=finals.get)  # the best by final loss
    page.locator("#compare-table").scroll_into_view_if_needed()
    shot("6-compare")

    # 5. a notification for each end: Slack text, and the signed webhook verified
    messages = wait_for(lambda: len(job_end_messages(receiver, names)) == 3 and job_end_messages(receiver, names),
                        60, "three job-end notifications")
    assert all("completed" in text for text in messages.values())
    wait_for(lambda: len([1 for p, _h, _b in receiver.requests if p == "/hook"]) >= 3, 30, "three signed webhooks")
    hooks = [(h, b) for p, h, b in receiver.requests if p == "/hook"]
    verified = [Webhook(secret).verify(b, {k.lower(): v for k, v in h.items()}) for h, b in hooks]
    assert sorted(p["data"]["job"]["id"] for p in verified if p["type"] == "job.completed") == sorted(ids)
    page.goto(f"{server.url}/settings")
    page.locator("#notify-log").wait_for()
    page.locator("#notify-log").scroll_into_view_if_needed()
    shot("7-settings-deliveries")

    # 6. the best run's last checkpoint, from its page
    page.goto(f"{server.url}/jobs/{best_id}")
    page.wait_for_selector("#gallery .gallery-step")
    last = page.locator(f"#gallery .gallery-step[data-step='{STEPS}']")
    page.locator("#checkpoints").scroll_into_view_if_needed()
    shot("8-best-job-gallery")
    with page.expect_download() as dl:
        last.locator("a.ck-download").click()
    path = tmp_path / dl.value.suggested_filename
    dl.value.save_as(path)
    assert path.name == f"{best_id}-checkpoint-{STEPS}.zip"
    stored = server.home / "cloud_outputs" / "outputs" / best_id / "checkpoints" / f"checkpoint-{STEPS}"
    with zipfile.ZipFile(path) as zf:
        weights = zf.read(f"checkpoint-{STEPS}/pytorch_lora_weights.safetensors")
        assert f"checkpoint-{STEPS}/sample.png" in zf.namelist()
    assert weights == (stored / "pytorch_lora_weights.safetensors").read_bytes()
