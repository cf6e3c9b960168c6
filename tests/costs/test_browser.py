"""Browser: the Spend page (charts, limit and rate forms) and the submit form's live
estimate with a warn-level limit warning. Headless Chromium over loopback."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
import requests

from stcloud.models import utcnow

from .conftest import add_job

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def _seed(app, base):
    now = utcnow()
    for i, (est, cost) in enumerate([(1.0, 1.2), (2.0, 1.5), (1.5, 1.5)]):
        # on the local worker, so they do not count against the replicate limit below
        add_job(app, name=f"done-{i}", provider="local", status="completed", estimated=est, cost=cost,
                estimate={"basis": "steps"}, completed_at=now - timedelta(days=i, minutes=5))
    add_job(app, name="worker-job", provider="worker", status="completed", cost=0.4,
            completed_at=now - timedelta(minutes=30))
    # $6 warn limit: a 2000-step L40S job ($5.25 on the steps basis) would take it to 87%
    r = requests.put(f"{base}/api/cloud/cost-limits/replicate",
                     json={"enabled": True, "amount_usd": 6.0, "period": "monthly", "action": "warn"}, timeout=10)
    assert r.status_code == 200


def test_submit_form_shows_estimate_and_warn_level_warning(live_server, app, page):
    _seed(app, live_server)
    # no finished replicate/gpu-l40s jobs: the steps basis
    page.goto(f"{live_server}/submit")
    page.wait_for_selector("#cost-estimate")
    page.check("input[name=provider][value=replicate]")
    page.select_option("select[name=hardware]", "gpu-l40s")
    page.click("#config-tab-json")  # the JSON is the config form's advanced tab
    page.fill("textarea[name=config_json]", json.dumps({"max_train_steps": 2000}))
    page.locator("textarea[name=config_json]").dispatch_event("change")
    warning = page.locator("#cost-estimate .estimate-warning")
    warning.wait_for()
    assert "$5.25" in page.inner_text("#cost-estimate .estimate-amount")
    assert "Basis: steps: 2000 steps × 2.7 s/step" in page.inner_text("#cost-estimate .estimate-basis")
    assert "88%" in warning.inner_text() and "replicate monthly limit" in warning.inner_text()
    assert page.locator("#cost-estimate .estimate-block").count() == 0
    # fewer steps: under 80%, the warning goes away; the estimate follows the form
    page.fill("textarea[name=config_json]", json.dumps({"max_train_steps": 500}))
    page.wait_for_function("() => document.querySelector('#cost-estimate .estimate-amount') && "
                           "document.querySelector('#cost-estimate .estimate-amount').innerText.includes('$1.31')")
    assert page.locator("#cost-estimate .estimate-warning").count() == 0
    # A100 is priced at its own rate
    page.select_option("select[name=hardware]", "gpu-a100-large")
    page.wait_for_function("() => document.querySelector('#cost-estimate .estimate-amount').innerText.includes('$1.88')")


def test_spend_page_charts_and_forms(live_server, app, page):
    _seed(app, live_server)
    page.goto(f"{live_server}/spend")
    page.wait_for_function("() => window.stcloudCosts && window.stcloudCosts.charts['spend-chart']")
    labels = page.evaluate("window.stcloudCosts.charts['spend-chart'].data.datasets.map(d => d.label)")
    assert {"replicate", "worker", "local"} <= set(labels)
    assert any("limit" in label and "$6.00" in label for label in labels)  # the limit line
    assert page.evaluate("window.stcloudCosts.charts['spend-chart'].options.scales.y.stacked") is True
    est = page.evaluate("window.stcloudCosts.charts['estimate-chart'].data.datasets.map(d => d.label)")
    assert est == ["estimate", "actual"]
    assert "%" in page.inner_text("#mean-error")
    assert page.locator("#estimate-table tbody tr").count() == 3

    # change a price through the UI
    row = page.locator("#rates-table tr[data-profile='replicate/gpu-l40s']")
    row.locator("input[name=usd_per_hour]").fill("4.2")
    row.locator("button").click()
    page.locator("#rates .flash.ok").wait_for()
    assert "$4.2000" in page.inner_text("#rates-table tr[data-profile='replicate/gpu-l40s'] .rate")

    # set the global limit through the UI: one limit form, its scope picked in the selector
    assert page.locator(".limit-form").count() == 1
    page.select_option("#limit-scope", "all")
    form = page.locator("#limit-form-all")
    form.locator("input[name=enabled]").check()
    form.locator("input[name=amount_usd]").fill("25")
    form.locator("select[name=action]").select_option("block")
    form.locator("input[name=timezone]").fill("Asia/Tokyo")
    form.locator("button[type=submit]").click()
    page.locator("#limit-form-all .flash.ok").wait_for()
    st = requests.get(f"{live_server}/api/cloud/cost-limits/all", timeout=10).json()
    assert (st["enabled"], st["amount_usd"], st["action"], st["timezone"]) == (True, 25.0, "block", "Asia/Tokyo")
    form = page.locator("#limit-form-all")
    form.locator("input[name=timezone]").fill("Mars/Base")
    form.locator("button[type=submit]").click()
    page.locator("#limit-form-all .flash.error").wait_for()
    assert "timezone" in page.inner_text("#limit-form-all .flash.error")

    # the window selector swaps the body and redraws the chart
    page.select_option("select[name=days]", "7")
    page.wait_for_function("() => window.stcloudCosts.charts['spend-chart'].data.labels.length === 7")
    assert "days=7" in page.url

    # the calculator on the Spend page uses the same estimate fragment
    page.fill("#estimate-calculator input[name=max_train_steps]", "1000")
    page.locator("#estimate-calculator input[name=max_train_steps]").dispatch_event("change")
    page.wait_for_function("() => document.querySelector('#estimate-calculator .estimate-amount') && "
                           "document.querySelector('#estimate-calculator .estimate-amount').innerText.includes('$3.15')")


def test_job_list_limit_bar(live_server, app, page):
    _seed(app, live_server)
    add_job(app, name="big", status="queued", rate=0.001, estimated=7.0)
    page.goto(f"{live_server}/")
    bar = page.locator("#limit-bar .limit-bar[data-provider=replicate]")
    bar.wait_for()
    assert bar.get_attribute("data-level") == "exceeded"
    assert "limit reached" in bar.inner_text()
