"""Resuming a worker job on Replicate: the prediction's config gets ``resume_from_checkpoint``,
a presigned URL under the public URL of a zip of the checkpoint folder, which downloads."""
from __future__ import annotations

import io
import json
import zipfile

import pytest
import requests

from tests.jobs.test_checkpoints_api import agent_checkpoint, make_job
from tests.providers.fixtures import fake, rapp  # noqa: F401  (fixtures)


@pytest.fixture
def app(rapp):  # noqa: F811
    return rapp


def test_resume_a_worker_job_on_replicate(app, live_server, fake):  # noqa: F811
    app.config["STCLOUD_PUBLIC_URL"] = live_server
    jid = make_job(app, "failed", provider="worker", config={"max_train_steps": 100},
                   delivery={"type": "builtin"})
    files = agent_checkpoint(app, jid, 40)
    r = requests.post(f"{live_server}/api/cloud/jobs/{jid}/resume",
                      json={"provider": "replicate", "data_consent": True}, timeout=60)
    assert r.status_code == 201, r.text
    new = r.json()["job"]
    assert new["provider"] == "replicate" and new["resumed_from"] == jid
    pred = fake.predictions[new["provider_job_id"]]
    config = json.loads(pred["input"]["config_json"])
    url = config["resume_from_checkpoint"]
    assert url.startswith(f"{live_server}/api/cloud/storage/outputs/{jid}/checkpoints/resume-40.zip?")
    # the new job publishes here again, checkpoints included, with its own key (not the old job's)
    [entry] = [e for e in config["publishing_config"] if e.get("stcloud_builtin")]
    assert entry["base_path"] == f"{new['id']}/" and entry["publish_checkpoints"] is True
    got = requests.get(url, timeout=10)
    assert got.status_code == 200
    with zipfile.ZipFile(io.BytesIO(got.content)) as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == {f"checkpoint-40/{k}": v for k, v in files.items()}
    # the key behind the URL reads that object only
    other = url.replace("resume-40.zip", "checkpoint-40/sample.png")
    assert requests.get(other, timeout=10).status_code == 403
