"""Browser: tick two jobs in the list, Compare, and the page draws their two loss curves;
the smoothing slider and the log scale redraw them; the samples stand side by side per step."""
from __future__ import annotations

import re

import pytest

from tests.jobs.test_checkpoints_api import put
from tests.jobs.test_compare import _run
from tests.jobs.test_gallery_browser import checkpoint, png

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]


def test_compare_page_draws_two_curves(app, live_server, page):
    a = _run(app, "lr-1e-4", 1e-4, [[1, 0.9], [2, 0.5], [3, 0.6], [4, 0.45]])
    b = _run(app, "lr-3e-4", 3e-4, [[1, 0.8], [2, 0.4], [3, 0.3], [4, 0.25]])
    _run(app, "other", 1e-3, [[1, 0.7]])
    page.goto(f"{live_server}/jobs")
    page.check(f"#pick-{a}")
    page.check(f"#pick-{b}")
    page.click("#compare-button")
    page.wait_for_url(re.compile(r".*/jobs/compare\?.*"))
    page.wait_for_function("() => window.Chart && Chart.getChart('compare-chart')")
    datasets = page.evaluate("() => Chart.getChart('compare-chart').data.datasets.map(d => [d.label, d.data.length])")
    assert len(datasets) == 2
    assert {label.split(" (")[0] for label, _n in datasets} == {"lr-1e-4", "lr-3e-4"}
    assert all(n == 4 for _label, n in datasets)
    ys = "() => Chart.getChart('compare-chart').data.datasets.find(d => d.label.startsWith('lr-3e-4')).data.map(p => p.y)"
    raw = page.evaluate(ys)
    page.fill("#compare-smoothing", "0")
    page.dispatch_event("#compare-smoothing", "input")
    unsmoothed = page.evaluate(ys)
    assert unsmoothed == pytest.approx([0.8, 0.4, 0.3, 0.25]) and raw != unsmoothed
    page.check("#compare-log")
    assert page.evaluate("() => Chart.getChart('compare-chart').options.scales.y.type") == "logarithmic"
    assert page.locator("#compare-table tbody tr").count() == 2
    assert "config.learning_rate" in page.locator("#config-diff").inner_text()


def test_compare_page_shows_samples_side_by_side(app, live_server, page):
    a = _run(app, "lr-1e-4", 1e-4, [[10, 0.9], [20, 0.5]])
    b = _run(app, "lr-3e-4", 3e-4, [[10, 0.8], [20, 0.4], [30, 0.3]])
    for job_id, step, shade in ((a, 10, 40), (a, 20, 80), (b, 20, 120), (b, 30, 160)):
        checkpoint(app, job_id, step)
        put(app, f"{job_id}/checkpoints/checkpoint-{step}/sample.png", png(shade))
    page.goto(f"{live_server}/jobs/compare?ids={a},{b}")
    grid = page.locator("#compare-samples")
    heads = grid.locator("thead th[data-job]")
    assert [heads.nth(i).get_attribute("data-job") for i in range(heads.count())] == [a, b]  # one column per job
    rows = grid.locator("tbody tr")
    assert [rows.nth(i).get_attribute("data-step") for i in range(rows.count())] == ["10", "20", "30"]
    row10, row20, row30 = (grid.locator(f"tbody tr[data-step='{n}']") for n in (10, 20, 30))
    assert row10.locator(f"td[data-job='{a}'] img").count() == 1
    assert "empty" in row10.locator(f"td[data-job='{b}']").get_attribute("class")  # b has no step 10
    assert row20.locator("img").count() == 2  # the matching step, side by side
    assert "empty" in row30.locator(f"td[data-job='{a}']").get_attribute("class")
    assert grid.locator("img").first.get_attribute("loading") == "lazy"
    grid.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#compare-samples img')].every(i => i.complete && i.naturalWidth === 64)")
    row20.locator(f"td[data-job='{b}'] a[data-enlarge]").click()  # large, as on the job page
    page.wait_for_function("() => document.getElementById('sample-dialog').open")
    assert "lr-3e-4 · step 20" in page.locator("#sample-dialog-caption").inner_text()
