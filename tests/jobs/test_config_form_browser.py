"""Browser: the Submit page's config form — JSON → form, form → JSON (keeping keys the form does
not know and a config's "--key" spelling), fields that do not apply hidden, presets per model
family, errors as you type from the schema the API uses, and the submitted job carrying the
config the form built."""
from __future__ import annotations

import json
import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]


def _json(page) -> dict:
    return json.loads(page.input_value("textarea[name=config_json]"))


def _set_json(page, cfg: dict | str) -> None:
    """Type the config on the JSON (advanced) tab, then come back to the form tab."""
    page.click("#config-tab-json")
    page.fill("textarea[name=config_json]", cfg if isinstance(cfg, str) else json.dumps(cfg))  # fires "input"
    page.click("#config-tab-form")


def _field(page, name):
    return page.locator(f'[data-config-field="{name}"]')


def _settled(page) -> None:
    page.wait_for_function("() => ['valid', 'invalid'].includes(document.getElementById('config-status').dataset.state)")


def test_json_to_form_and_back(live_server, page):
    page.goto(f"{live_server}/submit")
    _set_json(page, {"max_train_steps": 120, "--learning_rate": 0.0001, "my_extra_key": [1, 2],
                     "lr_scheduler": "constant", "model_type": "lora"})
    assert _field(page, "max_train_steps").input_value() == "120"
    assert _field(page, "learning_rate").input_value() == "0.0001"
    assert _field(page, "lr_scheduler").input_value() == "constant"
    assert page.locator("#cf-lr_warmup_steps").is_hidden()  # no warm-up with a constant rate
    _settled(page)
    assert page.locator("#config-status").get_attribute("data-state") == "valid"

    # form -> JSON: the known key is rewritten in place, unknown keys stay
    _field(page, "learning_rate").fill("0.0003")
    _field(page, "lora_rank").fill("8")
    _field(page, "lr_scheduler").select_option("cosine")
    assert page.locator("#cf-lr_warmup_steps").is_visible()
    _field(page, "lr_warmup_steps").fill("20")
    cfg = _json(page)
    assert cfg == {"max_train_steps": 120, "--learning_rate": 0.0003, "my_extra_key": [1, 2],
                   "lr_scheduler": "cosine", "model_type": "lora", "lora_rank": 8, "lr_warmup_steps": 20}
    _field(page, "lora_rank").fill("")  # emptied: the key goes
    assert "lora_rank" not in _json(page)

    # full fine-tune: the LoRA fields do not apply
    _field(page, "model_type").select_option("full")
    assert page.locator("#cf-lora_rank").is_hidden() and page.locator("#cf-lora_alpha").is_hidden()
    _field(page, "model_type").select_option("lora")
    assert page.locator("#cf-lora_rank").is_visible()


def test_errors_as_you_type_come_from_the_api_schema(live_server, page):
    page.goto(f"{live_server}/submit")
    _set_json(page, {"max_train_steps": 100})
    _field(page, "lora_rank").fill("0")
    error = page.locator('[data-config-error="lora_rank"]')
    error.filter(has_text="greater than or equal to 1").wait_for()
    assert _field(page, "lora_rank").get_attribute("aria-invalid") == "true"
    _field(page, "lr_scheduler").select_option("linear")
    _field(page, "lr_warmup_steps").fill("500")
    page.locator('[data-config-error="lr_warmup_steps"]').filter(has_text="at most the steps (100)").wait_for()
    _field(page, "lora_rank").fill("16")
    _field(page, "lr_warmup_steps").fill("10")
    page.wait_for_function("() => document.getElementById('config-status').dataset.state === 'valid'")
    assert error.inner_text() == ""
    # JSON that does not parse leaves the form alone and says so
    _set_json(page, "{not json")
    assert "does not parse" in page.locator("#config-json-error").inner_text()
    assert _field(page, "lora_rank").input_value() == "16"


def test_presets_per_family_and_family_dependent_fields(live_server, page):
    page.goto(f"{live_server}/submit")
    _set_json(page, {"tracker_run_name": "keep-me"})
    page.select_option("#config-preset", "flux")
    page.click("#config-apply-preset")
    cfg = _json(page)
    assert cfg["model_family"] == "flux" and cfg["mixed_precision"] == "bf16" and cfg["lora_rank"] == 16
    assert cfg["tracker_run_name"] == "keep-me"
    assert _field(page, "model_family").input_value() == "flux"
    assert _field(page, "resolution").input_value() == "1024"
    assert page.locator("#cf-mixed_precision").is_visible() and page.locator("#cf-validation_steps").is_visible()
    page.select_option("#config-preset", "reference")
    page.click("#config-apply-preset")
    assert _json(page)["model_family"] == "reference"
    # the CPU reference trainer has no mixed precision and renders no validation images
    assert page.locator("#cf-mixed_precision").is_hidden() and page.locator("#cf-validation_steps").is_hidden()
    _settled(page)
    assert page.locator("#config-status").get_attribute("data-state") == "valid"


def test_the_submitted_job_has_the_config_the_form_built(live_server, page, tmp_path):
    data = tmp_path / "ds"
    data.mkdir()
    (data / "a.txt").write_text("caption\n")
    (data / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a dataset needs images
    page.goto(f"{live_server}/submit")
    page.check("input[name=provider][value=worker]")
    page.fill("input[name=name]", "from-the-form")
    _set_json(page, {})
    page.select_option("#config-preset", "reference")
    page.click("#config-apply-preset")
    _field(page, "learning_rate").fill("0.002")
    _field(page, "max_train_steps").fill("60")
    page.fill("textarea[name=dataloader_json]",
              json.dumps([{"id": "d", "type": "local", "instance_data_dir": str(data)}]))
    page.click("#submit-button")
    page.wait_for_url(re.compile(r".*/jobs/job_[0-9a-z]{26}$"))
    job_id = page.url.rsplit("/", 1)[1]
    job = page.request.get(f"{live_server}/api/cloud/jobs/{job_id}").json()["job"]
    assert job["config"]["learning_rate"] == 0.002 and job["config"]["max_train_steps"] == 60
    assert job["config"]["model_family"] == "reference" and job["config"]["lora_rank"] == 4


def test_the_json_is_the_advanced_tab_of_one_widget(live_server, page):
    page.goto(f"{live_server}/submit")
    form_tab, json_tab = page.locator("#config-tab-form"), page.locator("#config-tab-json")
    assert page.locator("#config-editor [role=tablist]").count() == 1
    assert form_tab.get_attribute("aria-selected") == "true" and json_tab.get_attribute("aria-selected") == "false"
    assert page.locator("#config-form-panel").is_visible() and page.locator("#config-json-panel").is_hidden()
    assert form_tab.get_attribute("tabindex") != "-1" and json_tab.get_attribute("tabindex") == "-1"

    # keyboard: arrows move between the tabs (and wrap), Home/End go to the ends
    form_tab.focus()
    page.keyboard.press("ArrowRight")
    assert json_tab.get_attribute("aria-selected") == "true"
    assert page.evaluate("() => document.activeElement.id") == "config-tab-json"
    assert page.locator("#config-json-panel").is_visible() and page.locator("#config-form-panel").is_hidden()
    page.keyboard.press("ArrowRight")
    assert form_tab.get_attribute("aria-selected") == "true"
    page.keyboard.press("End")
    assert json_tab.get_attribute("aria-selected") == "true"
    page.keyboard.press("Home")
    assert form_tab.get_attribute("aria-selected") == "true"

    # a field edited on the form tab is in the JSON on the other tab
    _field(page, "max_train_steps").fill("80")
    json_tab.click()
    assert _json(page)["max_train_steps"] == 80
    # the JSON edited on its tab refills the form, checked through the API's schema
    page.fill("textarea[name=config_json]", json.dumps({"max_train_steps": 80, "lora_rank": 0}))
    page.locator('[data-config-error="lora_rank"]').filter(has_text="greater than or equal to 1").wait_for(
        state="attached")  # under its field, on the form tab
    status = page.locator("#config-status")  # and said under both tabs
    assert status.is_visible() and "greater than or equal to 1" in status.inner_text()
    assert status.get_attribute("data-state") == "invalid"
    # a JSON that does not parse: an inline error on both tabs, the fields keep the last good config
    page.fill("textarea[name=config_json]", '{"max_train_steps": 99,')
    assert "does not parse" in page.locator("#config-json-error").inner_text()
    assert page.locator("textarea[name=config_json]").get_attribute("aria-invalid") == "true"
    form_tab.click()
    assert page.locator("#config-json-error").is_visible()
    assert _field(page, "max_train_steps").input_value() == "80" and _field(page, "lora_rank").input_value() == "0"
    json_tab.click()
    page.fill("textarea[name=config_json]", json.dumps({"max_train_steps": 99, "lora_rank": 8}))
    assert page.locator("#config-json-error").inner_text() == ""
    form_tab.click()
    assert _field(page, "max_train_steps").input_value() == "99"
    _settled(page)
    assert page.locator("#config-status").get_attribute("data-state") == "valid"
