"""The pipeline input ``resume_from_checkpoint`` with a cloud child: the fake Replicate gets a
presigned URL (under the public URL) of a zip of the parent's newest checkpoint, which downloads."""
from __future__ import annotations

import io
import json
import zipfile

import pytest
import requests

from tests.jobs.test_checkpoints_api import agent_checkpoint
from tests.jobs.test_checkpoints_api import make_job as make_job_with_config
from tests.providers.fixtures import dataset, fake, rapp, submit_body  # noqa: F401 - fixtures


@pytest.fixture
def app(rapp):  # noqa: F811 - live_server serves this app
    return rapp


def test_a_cloud_child_gets_a_presigned_url_of_the_parents_checkpoint(rapp, live_server, fake, dataset):  # noqa: F811
    rapp.config["STCLOUD_PUBLIC_URL"] = live_server
    parent = make_job_with_config(rapp, "completed", name="base", provider="worker",
                                  config={"max_train_steps": 40})
    files = agent_checkpoint(rapp, parent, 40)
    body = submit_body(dataset, data_consent=True, depends_on=[parent],
                       inputs={"resume_from_checkpoint": {"from": parent}})
    body["config"] = {**body["config"], "max_train_steps": 100}
    r = requests.post(f"{live_server}/api/cloud/jobs/submit", json=body, timeout=60)
    assert r.status_code == 201, r.text
    child = r.json()["job"]
    assert child["provider"] == "replicate" and child["resumed_from"] == parent and child["resume_step"] == 40
    config = json.loads(fake.predictions[child["provider_job_id"]]["input"]["config_json"])
    url = config["resume_from_checkpoint"]
    assert url.startswith(f"{live_server}/api/cloud/storage/outputs/{parent}/checkpoints/resume-40.zip?")
    got = requests.get(url, timeout=10)
    assert got.status_code == 200
    with zipfile.ZipFile(io.BytesIO(got.content)) as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == {f"checkpoint-40/{k}": v for k, v in files.items()}


def test_nothing_left_to_train_is_refused(rapp, fake, dataset):  # noqa: F811
    parent = make_job_with_config(rapp, "completed", name="base", provider="worker",
                                  config={"max_train_steps": 40})
    agent_checkpoint(rapp, parent, 40)
    body = submit_body(dataset, data_consent=True, depends_on=[parent],
                       inputs={"resume_from_checkpoint": {"from": parent}})
    body["config"] = {**body["config"], "max_train_steps": 40}
    r = rapp.test_client().post("/api/cloud/jobs/submit", json=body)
    assert r.status_code == 422, r.get_data(as_text=True)
    assert "leaves nothing to train" in r.get_json()["detail"]
    assert not fake.predictions
