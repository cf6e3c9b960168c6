"""The Submit page (htmx fragments), the job page's Refresh button."""
from __future__ import annotations

import json
import re

import pytest

from tests.conftest import csrf_of
from tests.providers.fixtures import (  # noqa: F401 - fixtures
    dataloader_for,
    dataset,
    fake,
    rapp,
    rclient,
    set_consent,
    submit_body,
)

pytestmark = pytest.mark.timeout(60)


def hx(client) -> dict:
    return {"HX-Request": "true", "X-CSRF-Token": csrf_of(client)}


def form_for(dataset, **extra) -> dict:
    data = {"provider": "replicate", "name": "page-job", "config_json": json.dumps({"max_train_steps": 100}),
            "dataloader_json": json.dumps(dataloader_for(dataset)), "hardware": "gpu-l40s",
            "idempotency_key": "page-key-1", "delivery_type": ""}
    data.update(extra)
    return data


def test_submit_page_is_prefilled_from_the_sample(rapp, rclient):
    html = rclient.get("/submit").get_data(as_text=True)
    assert "max_train_steps" in html and "sample_dataset" in html  # the worker engineer's sample
    assert 'value="gpu-a100-large"' in html and "Preview data" in html
    assert 'name="idempotency_key"' in html and "Always Ask" in html
    assert "/api/cloud" not in re.findall(r'hx-post="([^"]+)"', html)[0]


def test_preview_fragment(rclient, dataset):
    r = rclient.post("/submit/preview", headers=hx(rclient), data=form_for(dataset))
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert "8 files" in html and "symlink leaves dataset root" in html and "text_embeds cache" in html
    r = rclient.post("/submit/preview", headers=hx(rclient), data=form_for(dataset, dataloader_json="[oops"))
    assert r.status_code == 422 and "not valid JSON" in r.get_data(as_text=True)


def test_consent_dialog_then_submit_redirects_to_the_job(rclient, fake, dataset):
    h = hx(rclient)
    r = rclient.post("/submit", headers=h, data=form_for(dataset))
    assert r.status_code == 409
    html = r.get_data(as_text=True)
    assert 'id="consent-dialog"' in html and 'name="data_consent"' in html and "8 files" in html
    assert fake.requests == []
    r = rclient.post("/submit", headers=h, data=form_for(dataset, data_consent="1"))
    assert r.status_code == 200, r.get_data(as_text=True)
    job_url = r.headers["HX-Redirect"]
    assert re.fullmatch(r"/jobs/job_[0-9a-z]{26}", job_url)
    page = rclient.get(job_url).get_data(as_text=True)
    assert 'badge status-queued' in page and 'id="refresh-button"' in page
    progress = rclient.get("/submit/progress", query_string={"idempotency_key": "page-key-1"}).get_data(as_text=True)
    assert job_url.rsplit("/", 1)[1] in progress


def test_errors_come_back_as_422_with_a_fresh_key(rclient, dataset):
    r = rclient.post("/submit", headers=hx(rclient), data=form_for(dataset, config_json="{bad"))
    assert r.status_code == 422
    html = r.get_data(as_text=True)
    assert "config is not valid JSON" in html and 'hx-swap-oob="true"' in html
    assert 'value="page-key-1"' not in html


def test_plain_form_post_without_htmx(rclient, fake, dataset):
    set_consent(rclient, "allow")
    data = form_for(dataset, csrf_token=csrf_of(rclient))
    r = rclient.post("/submit", data=data)
    assert r.status_code == 303 and r.headers["Location"].startswith("/jobs/job_")
    r = rclient.post("/submit", data=form_for(dataset, csrf_token=csrf_of(rclient), provider="nope",
                                              idempotency_key="other"))
    assert r.status_code == 400 and "unknown provider" in r.get_data(as_text=True)


def test_refresh_button(rclient, fake, dataset):
    set_consent(rclient, "allow")
    job = rclient.post("/api/cloud/jobs/submit", json=submit_body(dataset)).get_json()["job"]
    fake.start(job["provider_job_id"], logs="step 3/10\n")
    r = rclient.post(f"/jobs/{job['id']}/refresh", headers=hx(rclient))
    assert r.status_code == 200 and "badge status-running" in r.get_data(as_text=True)
    fake.inject("GET", r"^/v1/predictions/", "500", times=None)
    r = rclient.post(f"/jobs/{job['id']}/refresh", headers=hx(rclient))
    assert r.status_code == 200 and r.headers["HX-Retarget"] == "#refresh-result"
    assert "HTTP 500" in r.get_data(as_text=True)


def test_plain_form_consent_flow_without_javascript(rclient, fake, dataset):
    r = rclient.post("/submit", data=form_for(dataset, csrf_token=csrf_of(rclient)))
    assert r.status_code == 409
    html = r.get_data(as_text=True)
    assert 'id="consent-dialog"' in html and 'name="config_json"' in html  # the form is kept
    r = rclient.post("/submit", data=form_for(dataset, csrf_token=csrf_of(rclient), data_consent="1"))
    assert r.status_code == 303 and fake.predictions_created == 1


def test_submit_page_starts_from_a_snapshot(app, client, tmp_path):
    import shutil

    if shutil.which("git") is None:
        import pytest

        pytest.skip("git not installed")
    data = tmp_path / "snapds"
    data.mkdir()
    (data / "x.png").write_bytes(b"\x89PNG x")
    body = {"provider": "worker", "name": "from-snap", "config_name": "cfgsnap",
            "config": {"max_train_steps": 321, "learning_rate": 0.0007},
            "dataloader_config": [{"id": "d", "type": "local", "instance_data_dir": str(data)}]}
    job = client.post("/api/cloud/jobs/submit", json=body).get_json()["job"]
    assert job["snapshot"], job
    page = client.get(f"/submit?config_name=cfgsnap&commit={job['snapshot']}").get_data(as_text=True)
    assert "321" in page and "0.0007" in page and 'id="based-on"' in page
    assert f"based on {job['snapshot'][:10]}" in page
    bad = client.get("/submit?config_name=cfgsnap&commit=" + "0" * 40)
    assert bad.status_code == 200 and "Could not load config" in bad.get_data(as_text=True)


def test_submit_page_defaults_to_local_without_token(client):
    page = client.get("/submit").get_data(as_text=True)
    assert 'value="local" checked' in page


def test_the_served_page_hides_other_providers_notes(client, monkeypatch):
    """Before any script runs: only the preselected provider's note is in view."""
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    html = client.get("/submit").get_data(as_text=True)
    checked = re.search(r'name="provider" value="(\w+)" checked', html).group(1)
    assert checked == "local"  # no Replicate token: the ready self-hosted provider is preselected
    hint = re.search(r'<p [^>]*id="token-hint"[^>]*>', html).group(0)
    assert 'data-for-provider="replicate"' in hint and " hidden" in hint
