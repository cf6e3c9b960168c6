"""Pipelines: validation, waiting jobs, a three-job pipeline on the local worker (A -> B, A -> C)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import requests

from stcloud import db
from stcloud.jobs import service as jobs_service
from stcloud.models import JobDependency, JobEvent
from stcloud.pipelines import service as pipelines
from stcloud.trainer.sample import ensure_sample
from stcloud.workers.local import start_local_worker
from tests.conftest import csrf_of
from tests.jobs.factories import make_job

STEP = {"max_train_steps": 12, "checkpointing_steps": 100, "learning_rate": 3e-3, "seed": 7,
        "resolution": 16, "train_batch_size": 4, "lora_rank": 2}


def _dataloader(home: Path) -> list:
    info = ensure_sample(home / "sample-src")
    return json.loads(Path(info["dataloader_path"]).read_text())


def test_unknown_dependency_and_cycle_are_422(client):
    r = client.post("/api/cloud/pipelines", json={"steps": [
        {"name": "a", "provider": "local", "config": {}, "dataloader_config": [{"id": "x"}]},
        {"name": "b", "depends_on": ["nope"], "provider": "local", "config": {}}]})
    assert r.status_code == 422 and r.mimetype == "application/problem+json"
    assert "nope" in r.get_json()["detail"]
    r = client.post("/api/cloud/pipelines", json={"defaults": {"provider": "local", "config": {}},
                                                  "steps": [{"name": "a", "depends_on": ["b"]},
                                                            {"name": "b", "depends_on": ["a"]}]})
    assert r.status_code == 422 and "cycle" in r.get_json()["detail"]
    r = client.post("/api/cloud/jobs/submit", json={"provider": "local", "config": {},
                                                    "dataloader_config": [{"id": "x"}], "depends_on": ["job_nope"]})
    assert r.status_code == 422 and r.get_json()["field"] == "depends_on"
    r = client.post("/api/cloud/pipelines", data="steps: [", content_type="application/yaml",
                    headers={"X-CSRF-Token": csrf_of(client)})
    assert r.status_code == 400 and "YAML" in r.get_json()["detail"]
    with client.application.app_context(), db.session() as s:
        assert s.query(JobDependency).count() == 0  # nothing written


def test_waiting_job_holds_nothing_and_failed_parent_cancels_it(app, client, home):
    parent = make_job(app, "running", name="parent", provider="local")
    body = {"provider": "local", "config": dict(STEP), "dataloader_config": _dataloader(home),
            "depends_on": [parent]}
    r = client.post("/api/cloud/jobs/submit", json=body)
    assert r.status_code == 201, r.get_data(as_text=True)
    job = r.get_json()["job"]
    assert job["status"] == "waiting" and job["estimated_cost_usd"] is None
    listed = client.get("/api/cloud/jobs?status=waiting").get_json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert job["id"] in client.get("/jobs").get_data(as_text=True)
    with app.app_context():
        assert pipelines.tick() == 0  # parent still running
        jobs_service.apply_update(parent, jobs_service.JobUpdate(status="failed", error="boom"), source="test")
        pipelines.tick()
        with db.session() as s:
            got = jobs_service.get_job(s, job["id"])
            assert got.status == "cancelled" and "parent" in got.error
    page = client.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert parent in page  # the dependency is linked from the job page


def test_a_waiting_job_keeps_its_secrets_in_the_store_not_in_its_rows(app, client, home):
    parent = make_job(app, "running", name="parent", provider="local")
    token = "hf_" + "W" * 24
    body = {"provider": "local", "config": {**STEP, "hub_token": token}, "dataloader_config": _dataloader(home),
            "depends_on": [parent]}
    r = client.post("/api/cloud/jobs/submit", json=body)
    assert r.status_code == 201, r.get_data(as_text=True)
    job_id = r.get_json()["job"]["id"]
    with app.app_context(), db.session() as s:
        dep = s.get(JobDependency, job_id)
        row = jobs_service.get_job(s, job_id)
        assert token not in json.dumps(dep.body) and token not in json.dumps(row.config)
        # the release puts it back for the submit it runs
        released = {}
        real_submit = pipelines.submit_mod.submit

        def capture(b, **kw):
            released.update(b)
            return real_submit(b, **kw)

        pipelines.submit_mod.submit = capture
        try:
            jobs_service.apply_update(parent, jobs_service.JobUpdate(status="completed"), source="test")
            pipelines.tick()
        finally:
            pipelines.submit_mod.submit = real_submit
    assert released["config"]["hub_token"] == token


def _wait(url, job_id, pred, app, timeout=90):
    deadline = time.time() + timeout
    job = None
    while time.time() < deadline:
        with app.app_context():
            pipelines.tick()  # what the scheduler runs every 3 s
        job = requests.get(f"{url}/api/cloud/jobs/{job_id}", timeout=10).json()["job"]
        if pred(job):
            return job
        time.sleep(0.3)
    raise AssertionError(f"{job_id}: condition not reached; last {job and job['status']}")


def test_three_job_pipeline_runs_in_order_and_cancels(app, live_server, home, tmp_path):
    worker = start_local_worker(app, live_server)
    try:
        dl = _dataloader(home)
        doc = {"name": "nightly", "defaults": {"provider": "local", "config": dict(STEP), "dataloader_config": dl},
               "steps": [
                   {"name": "A"},
                   {"name": "B", "depends_on": ["A"], "inputs": {"init_lora_weights": {"from": "A"}},
                    "config": {"max_train_steps": 4000, "step_delay_seconds": 0.02}},
                   {"name": "C", "depends_on": ["A"], "on": "completed"},
               ]}
        r = requests.post(f"{live_server}/api/cloud/pipelines", json=doc, timeout=30)
        assert r.status_code == 201, r.text
        pipe = r.json()["pipeline"]
        ids = {st["step"]: st["job_id"] for st in pipe["steps"]}
        assert {st["step"]: st["status"] for st in pipe["steps"]}["B"] == "waiting"
        _wait(live_server, ids["A"], lambda j: j["status"] == "completed", app)
        b = _wait(live_server, ids["B"], lambda j: j["status"] == "running" and (j["progress"] or {}).get("step"), app)
        log = requests.get(f"{live_server}/api/cloud/jobs/{ids['B']}/logs", timeout=10).json()["text"]
        assert "initial LoRA weights from" in log and "init_lora_weights: fetched" in log
        assert b["status"] == "running"
        c = requests.get(f"{live_server}/api/cloud/jobs/{ids['C']}", timeout=10).json()["job"]
        assert c["status"] == "queued"  # released after A, behind B on the one local worker
        r = requests.post(f"{live_server}/api/cloud/pipelines/{pipe['id']}/cancel", json={}, timeout=30)
        assert r.status_code == 200, r.text
        steps = {st["step"]: st["status"] for st in r.json()["pipeline"]["steps"]}
        assert steps == {"A": "completed", "B": "cancelled", "C": "cancelled"}
        page = requests.get(f"{live_server}/pipelines/{pipe['id']}", timeout=10).text
        assert "<svg" in page and ids["B"] in page
        with app.app_context(), db.session() as s:
            order = [e.job_id for e in s.query(JobEvent).filter(JobEvent.to_status == "running").order_by(JobEvent.id)]
        assert order.index(ids["A"]) < order.index(ids["B"])
    finally:
        worker.stop()
