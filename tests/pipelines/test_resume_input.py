"""The pipeline input ``resume_from_checkpoint``: B starts from A's newest checkpoint on the
local worker (A -> B), trains only the steps after it, and joins A's chain of attempts."""
from __future__ import annotations

import re

import pytest
import requests

from stcloud import db
from stcloud.models import JobDependency
from stcloud.workers.local import start_local_worker
from tests.jobs.factories import make_job
from tests.pipelines.test_pipelines import STEP, _dataloader, _wait

pytestmark = pytest.mark.timeout(240)

FIRST, TOTAL = 20, 40


def test_child_resumes_from_the_parents_last_checkpoint(app, live_server, home):
    worker = start_local_worker(app, live_server)
    try:
        doc = {"name": "continue", "defaults": {"provider": "local", "dataloader_config": _dataloader(home)},
               "steps": [
                   {"name": "A", "config": {**STEP, "max_train_steps": FIRST, "checkpointing_steps": 10}},
                   {"name": "B", "depends_on": ["A"], "inputs": {"resume_from_checkpoint": {"from": "A"}},
                    "config": {**STEP, "max_train_steps": TOTAL, "checkpointing_steps": 10}},
               ]}
        r = requests.post(f"{live_server}/api/cloud/pipelines", json=doc, timeout=30)
        assert r.status_code == 201, r.text
        ids = {st["step"]: st["job_id"] for st in r.json()["pipeline"]["steps"]}
        _wait(live_server, ids["A"], lambda j: j["status"] == "completed", app)
        ck = requests.get(f"{live_server}/api/cloud/jobs/{ids['A']}/checkpoints", timeout=10).json()["checkpoints"]
        assert [c["step"] for c in ck if c["downloadable"]] == [10, FIRST]
        b = _wait(live_server, ids["B"], lambda j: j["terminal"], app, timeout=150)
        log = requests.get(f"{live_server}/api/cloud/jobs/{ids['B']}/logs", timeout=10).json()["text"]
        assert b["status"] == "completed", log[-3000:]
        assert re.search(rf"resumed from checkpoint \S+checkpoint-{FIRST} at step {FIRST}", log), log[-3000:]
        first_step = min(int(m) for m in re.findall(r"^step (\d+)/", log, re.M))
        assert first_step == FIRST + 1  # nothing A trained is trained again
        assert b["progress"]["step"] == TOTAL and b["progress"]["total_steps"] == TOTAL
        assert any(o["name"] == "pytorch_lora_weights.safetensors" for o in b["outputs"])
        chain = requests.get(f"{live_server}/api/cloud/jobs/{ids['B']}/chain", timeout=10).json()
        assert [(a["job_id"], a["resume_step"]) for a in chain["attempts"]] == [(ids["A"], None), (ids["B"], FIRST)]
    finally:
        worker.stop()


def test_a_parent_without_a_checkpoint_is_refused_with_the_reason(app, client, home):
    parent = make_job(app, "completed", name="no-checkpoints", provider="local")
    body = {"provider": "local", "config": dict(STEP), "dataloader_config": _dataloader(home),
            "depends_on": [parent], "inputs": {"resume_from_checkpoint": {"from": parent}}}
    r = client.post("/api/cloud/jobs/submit", json=body)
    assert r.status_code == 422 and r.mimetype == "application/problem+json", r.get_data(as_text=True)
    assert "no uploaded checkpoint" in r.get_json()["detail"] and parent in r.get_json()["detail"]
    with app.app_context(), db.session() as s:
        assert s.query(JobDependency).count() == 0  # nothing stays, as for a plain submit


def test_resume_input_must_name_a_dependency(client, home):
    r = client.post("/api/cloud/pipelines", json={
        "defaults": {"provider": "local", "config": dict(STEP), "dataloader_config": _dataloader(home)},
        "steps": [{"name": "A"}, {"name": "B", "inputs": {"resume_from_checkpoint": {"from": "A"}}}]})
    assert r.status_code == 422 and "not in depends_on" in r.get_json()["detail"]

