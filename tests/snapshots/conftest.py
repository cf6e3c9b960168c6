"""Fixtures for the snapshot tests: a stand-in of the submit contract and an original job
with a real local dataset."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from PIL import Image

from stcloud import db
from stcloud.errors import Conflict
from stcloud.jobs import rerun
from stcloud.models import Job
from stcloud.packaging.scan import dataset_fingerprint
from stcloud.snapshots import service
from tests.snapshots.helpers import seed_job


@dataclass
class SubmitResult:
    job: Job
    idempotent: bool = False
    warnings: list = field(default_factory=list)
    status_code: int = 201


@pytest.fixture
def fake_submit(app, monkeypatch):
    calls = []

    def submit(body, source="api"):
        calls.append((body, source))
        sha = dataset_fingerprint(body["dataloader_config"])
        expected = body.get("expected_dataset_sha256")
        if expected and expected != sha:
            raise Conflict("dataset changed since the original run", extra={"dataset_sha256": sha})
        with db.transaction() as s:
            job = Job(name=body["name"], provider=body["provider"], status="queued", config=body["config"],
                      dataloader_config=body["dataloader_config"], hardware=body.get("hardware"),
                      max_cost_usd=body.get("max_cost_usd"), delivery=body.get("delivery"),
                      config_name=body.get("config_name"), dataset_sha256=sha, rerun_of=body.get("rerun_of"))
            s.add(job)
        commit, err = service.snapshot_for_submit(app.config["STCLOUD_HOME"], body.get("config_name") or body["name"],
                                                  body["config"], body["dataloader_config"], job.id,
                                                  body.get("snapshot_message"))
        with db.transaction() as s:
            row = s.get(Job, job.id)
            row.snapshot, row.snapshot_error = commit, err
        return SubmitResult(job=row, warnings=["from the stand-in"])

    monkeypatch.setattr(rerun, "submit", submit)
    return calls


@pytest.fixture
def original(app, tmp_path):
    ds = tmp_path / "photos"
    ds.mkdir()
    for i, color in enumerate(("red", "green")):
        Image.new("RGB", (8, 8), color).save(ds / f"img{i}.png")
    dl = [{"id": "photos", "type": "local", "instance_data_dir": str(ds)}]
    jid = seed_job(app, dl=dl, dataset_sha256=dataset_fingerprint(dl), hardware="gpu-l40s", max_cost_usd=3.0,
                   delivery={"target": "builtin"})
    return {"id": jid, "dataset": ds}
