"""The example provider package (``examples/stcloud-example-provider``), installed with pip and
found through its ``stcloud.providers`` entry point — no edit to stcloud. A job submitted to it
through the API reaches ``completed`` through the poller with the adapter's logs, progress and
cost; the provider shows in the API, the Providers page, the submit form, the job filters,
estimates and spend limits, and takes its declared settings with PUT."""
from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from stcloud.jobs.poller import poll_due
from stcloud.models import utcnow
from stcloud.providers import registry
from tests.conftest import ROOT
from tests.providers.fixtures import dataloader_for, make_dataset, set_consent

EXAMPLE = ROOT / "examples" / "stcloud-example-provider"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def example_installed(tmp_path_factory):
    """``pip install`` the package into a directory put on ``sys.path``: the registry then reads
    its entry point from the installed metadata, as it would from site-packages."""
    target = tmp_path_factory.mktemp("plugin-site")
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                          str(target), str(EXAMPLE)], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    assert list(target.glob("stcloud_example_provider-*.dist-info")), "pip installed no metadata"
    sys.path.insert(0, str(target))
    registry.reload()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        for name in [m for m in sys.modules if m.startswith("stcloud_example_provider")]:
            del sys.modules[name]
        registry.reload()


@pytest.fixture
def eclient(example_installed, make_app):
    return make_app().test_client()


def test_listed_with_its_capabilities(eclient):
    provs = {p["name"]: p for p in eclient.get("/api/cloud/providers").get_json()["providers"]}
    ex = provs["example"]
    assert ex["label"] == "Example provider" and ex["status"] == "available" and ex["configured"]
    assert ex["supports_cost_tracking"] and ex["uploads_data"] and ex["max_upload_bytes"] == 50 * 1024 * 1024
    assert [h["name"] for h in ex["hardware_profiles"]] == ["sim-small"]
    assert {f["name"] for f in ex["settings"]} == {"seconds_per_step", "usd_per_hour", "api_key"}


def test_settings_are_validated_and_saved(eclient):
    r = eclient.put("/api/cloud/providers/example", json={"seconds_per_step": "fast"})
    assert r.status_code == 400 and r.mimetype == "application/problem+json"
    assert r.get_json()["field"] == "seconds_per_step"
    r = eclient.put("/api/cloud/providers/example", json={"colour": "red"})
    assert r.status_code == 400 and r.get_json()["field"] == "colour"
    r = eclient.put("/api/cloud/providers/example", json={"usd_per_hour": -1})
    assert r.status_code == 400 and r.get_json()["field"] == "usd_per_hour"
    r = eclient.put("/api/cloud/providers/example", json={"seconds_per_step": 0.02, "api_key": "key-9876"})
    assert r.status_code == 200, r.get_data(as_text=True)
    values = r.get_json()["values"]
    assert values["seconds_per_step"] == 0.02 and values["api_key"] == {"set": True}
    assert "key-9876" not in r.get_data(as_text=True)  # write-only


def test_shows_on_the_providers_page_and_in_the_submit_form(eclient):
    page = eclient.get("/providers").get_data(as_text=True)
    assert 'id="provider-example"' in page and "Example provider" in page
    assert 'name="seconds_per_step"' in page and 'name="api_key"' in page
    form = eclient.get("/submit").get_data(as_text=True)
    assert 'name="provider" value="example"' in form
    assert 'data-provider="example"' in form  # its hardware with its price
    jobs_page = eclient.get("/jobs").get_data(as_text=True)
    assert '<option value="example"' in jobs_page


def test_a_job_runs_to_completed_through_the_poller(eclient, tmp_path, home):
    client = eclient
    app = client.application
    set_consent(client, "allow")
    assert client.put("/api/cloud/providers/example", json={"seconds_per_step": 0.02,
                                                            "usd_per_hour": 36.0}).status_code == 200
    est = client.post("/api/cloud/cost-estimate", json={"provider": "example", "hardware": "sim-small",
                                                         "config": {"max_train_steps": 10}}).get_json()
    assert est["usd_per_hour"] == pytest.approx(36.0)
    assert client.get("/api/cloud/cost-limits/example").status_code == 200

    dataset = make_dataset(tmp_path / "data")
    r = client.post("/api/cloud/jobs/submit", json={
        "provider": "example", "name": "plugin-job", "hardware": "sim-small",
        "config": {"max_train_steps": 10}, "dataloader_config": dataloader_for(dataset)})
    assert r.status_code == 201, r.get_data(as_text=True)
    job = r.get_json()["job"]
    assert job["provider"] == "example" and job["provider_job_id"].startswith("ex_")
    assert job["status"] == "running"
    assert not list((home / "uploads").glob("*.zip"))  # uploaded to the provider, not kept here

    deadline = time.monotonic() + 30
    while job["status"] != "completed" and time.monotonic() < deadline:
        time.sleep(0.1)
        with app.app_context():
            poll_due(now=utcnow() + timedelta(seconds=5))
        job = client.get(f"/api/cloud/jobs/{job['id']}").get_json()["job"]
    assert job["status"] == "completed", job
    assert job["progress"]["step"] == 10 and job["percent"] == 100.0
    assert job["cost_usd"] == pytest.approx(10 * 0.02 * 36.0 / 3600, rel=1e-3)
    assert job["outputs"] and job["outputs"][0]["name"] == "pytorch_lora_weights.safetensors"
    logs = client.get(f"/api/cloud/jobs/{job['id']}/logs").get_json()["text"]
    assert "step 10/10 loss=" in logs and logs.count("step 1/10") == 1
    events = [e["to"] for e in client.get(f"/api/cloud/jobs/{job['id']}/events").get_json()["events"]]
    assert events == ["uploading", "running", "completed"]
    listed = client.get("/api/cloud/jobs?provider=example").get_json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert (Path(home) / "example-provider" / f"{job['provider_job_id']}.zip").exists()  # the "upload"
