"""Browser: the Submit page shows what the chosen provider uses and nothing else. "This
machine", self-hosted workers and Slurm get no Replicate token warning, no Replicate hardware,
no Hub model id unless the delivery is the Hub, a delivery choice that says the outputs come
back here, and an estimate at the reference trainer's pace (not the GPU table's 2.7 s/step)."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

SELF_HOSTED = ("local", "worker", "slurm")


def _visible_hardware(page) -> list[str]:
    return page.evaluate("() => [...document.querySelectorAll('select[name=hardware] option')]"
                         ".filter(o => !o.hidden && !o.disabled).map(o => o.dataset.provider)")


def _keep_label(page) -> str:
    return page.evaluate("() => document.querySelector('#delivery-type option[value=\"\"]').textContent")


def _estimate(page) -> str:
    page.wait_for_function("() => document.querySelector('#cost-estimate .estimate-basis')")
    return page.inner_text("#cost-estimate")


def _choose(page, provider: str) -> None:
    with page.expect_response(lambda r: "/api/cloud/cost-estimate" in r.url):  # the estimate follows
        page.check(f"input[name=provider][value={provider}]")


def test_each_provider_shows_only_its_own_fields(live_server, page, monkeypatch):
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)  # Replicate not set up: its note shows
    page.goto(f"{live_server}/submit")
    assert page.locator("input[name=provider][value=simpletuner_io]").is_disabled()  # coming soon

    _choose(page, "replicate")
    assert page.locator("#token-hint").is_visible() and "REPLICATE_API_TOKEN" in page.inner_text("#token-hint")
    assert page.locator("#hardware-field").is_visible()
    assert set(_visible_hardware(page)) == {"replicate"}
    assert page.locator("#requirements-field").is_hidden()
    assert page.locator("#hub-field").is_hidden()  # only with the Hub as the delivery
    assert _keep_label(page) == "Keep outputs with the provider"
    page.select_option("#delivery-type", "hub")
    assert page.locator("#hub-field").is_visible()
    page.select_option("#delivery-type", "")
    assert page.locator("#hub-field").is_hidden()

    for provider in SELF_HOSTED:
        _choose(page, provider)
        assert page.locator("#token-hint").is_hidden(), provider
        assert not page.get_by_text("REPLICATE_API_TOKEN").is_visible(), provider
        assert page.locator("#hub-field").is_hidden(), provider
        assert page.locator("#s3-field").is_hidden(), provider
        assert _keep_label(page) == "Uploaded here by the worker (no extra delivery)", provider
        text = _estimate(page)
        assert "gpu-" not in text and "2.7 s/step" not in text and "(the reference trainer)" in text, (provider, text)
        assert "~9m" not in text, provider
        if provider == "slurm":  # Slurm jobs pick a Slurm profile, never a Replicate one
            assert page.locator("#hardware-field").is_visible()
            assert set(_visible_hardware(page)) == {"slurm"}
            assert page.locator("#requirements-field").is_hidden()
        else:  # workers are matched by requirements, priced at their pool's profile
            assert page.locator("#hardware-field").is_hidden(), provider
            assert page.locator("#requirements-field").is_visible(), provider
        # the Hub model id appears with the Hub delivery, for any provider, and goes again
        page.select_option("#delivery-type", "hub")
        assert page.locator("#hub-field").is_visible(), provider
        page.select_option("#delivery-type", "")
        assert page.locator("#hub-field").is_hidden(), provider

    # and back: Replicate's own fields return
    _choose(page, "replicate")
    assert page.locator("#token-hint").is_visible() and page.locator("#hardware-field").is_visible()
    assert _keep_label(page) == "Keep outputs with the provider"
