"""Browser: tick two jobs in the list, Compare, and the page draws their two loss curves;
the smoothing slider and the log scale redraw them."""
from __future__ import annotations

import re

import pytest

from tests.jobs.test_compare import _run

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
