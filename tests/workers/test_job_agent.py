"""One-job mode of the worker API: the agent a scheduler (Slurm) starts for one job uses a
per-job credential (``stj_…`` + ``X-Stcloud-Job``), reaches only that job, and is refused once
the job has ended; ordinary workers never get such a job."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from stcloud import db
from stcloud.jobs import service as jobs_service
from stcloud.models import Job, Worker
from stcloud.workers import service
from stcloud.workers.agent import worker_command
from tests.workers.helpers import get_job, queue_job


def job_headers(app, job_id, submission=1, *, for_job=None):
    with app.app_context():
        token = service.mint_job_token(job_id, submission)
    return {"Authorization": f"Bearer {token}", "X-Stcloud-Job": for_job or job_id}


@pytest.fixture
def slurm_job(app):
    return queue_job(app, provider="slurm", name="on-slurm")


def test_ordinary_workers_never_claim_a_slurm_job(app, client, slurm_job):
    r = client.post("/api/cloud/workers", json={"name": "box"})
    h = {"Authorization": f"Bearer {r.get_json()['token']}"}
    assert client.post("/api/workers/register", json={"gpus": []}, headers=h).status_code == 200
    assert client.post("/api/workers/claim", headers=h).status_code == 204
    worker_job = queue_job(app, provider="worker")
    claimed = client.post("/api/workers/claim", headers=h).get_json()["job"]
    assert claimed["id"] == worker_job and get_job(app, slurm_job).status == "queued"


def test_the_credential_runs_exactly_its_job_and_dies_with_it(app, client, slurm_job):
    other = queue_job(app, provider="slurm", name="another")
    h = job_headers(app, slurm_job)
    reg = client.post("/api/workers/register", json={"hostname": "node7", "gpus": []}, headers=h)
    assert reg.status_code == 200 and reg.get_json()["worker_id"] == service.job_agent_worker_id(slurm_job)
    job = client.post("/api/workers/claim", headers=h).get_json()["job"]
    assert job["id"] == slurm_job and job["attempt"] == 1 and job["storage"]["prefix"] == f"{slurm_job}/"
    # the archive's own dataloader: paths inside the archive, not on the server's disk
    assert job["dataloader_config"][0]["instance_data_dir"].startswith("datasets/")
    archive = client.get(f"/api/workers/jobs/{slurm_job}/archive", headers=h)
    assert archive.status_code == 200 and archive.data[:2] == b"PK"
    assert get_job(app, slurm_job).status == "running"
    # only its job: another job's routes are 403, its credential is not this job's
    assert client.get(f"/api/workers/jobs/{other}/archive", headers=h).status_code == 403
    assert client.post("/api/workers/claim", headers=job_headers(app, other, for_job=slurm_job)).status_code == 401
    assert client.post("/api/workers/claim", headers=job_headers(app, slurm_job, 2)).status_code == 401
    assert client.post("/api/workers/claim", headers={"Authorization": h["Authorization"]}).status_code == 401
    assert client.post("/api/workers/claim", headers={**h, "Authorization": "Bearer stj_1.00"}).status_code == 401
    # the worker protocol as for workers
    assert client.post(f"/api/workers/jobs/{slurm_job}/logs", json={"seq": 1, "lines": ["step 5/20 loss=0.5"]},
                       headers=h).get_json()["accepted"] is True
    assert client.post("/api/workers/heartbeat", json={"job_id": slurm_job}, headers=h).get_json()["cancel"] == []
    done = client.post(f"/api/workers/jobs/{slurm_job}/complete", json={"status": "completed", "exit_code": 0},
                       headers=h)
    assert done.status_code == 200 and done.get_json()["status"] == "completed"
    # ended: the credential is refused, the agent's worker row is gone
    refused = client.post("/api/workers/heartbeat", json={}, headers=h)
    assert refused.status_code == 401 and "completed" in refused.get_json()["detail"]
    with app.app_context(), db.session() as s:
        assert s.get(Worker, service.job_agent_worker_id(slurm_job)) is None


def test_claim_waits_until_the_job_is_recorded_and_a_restart_is_a_new_attempt(app, client):
    job_id = queue_job(app, provider="slurm")
    with app.app_context(), db.transaction() as s:  # as while submit still records the batch job
        s.get(Job, job_id).status = "uploading"
    h = job_headers(app, job_id)
    assert client.post("/api/workers/claim", headers=h).status_code == 204
    with app.app_context(), db.transaction() as s:
        jobs_service.transition(s, s.get(Job, job_id), "queued", source="test")
    assert client.post("/api/workers/claim", headers=h).get_json()["job"]["attempt"] == 1
    assert client.post(f"/api/workers/jobs/{job_id}/checkpoint", headers=h, json={
        "key": f"{job_id}/checkpoints/checkpoint-10", "step": 10, "files": []}).status_code == 200
    # Slurm restarted the batch job: its new agent claims again -> attempt 2 from the checkpoint
    again = client.post("/api/workers/claim", headers=h).get_json()["job"]
    assert again["attempt"] == 2 and again["checkpoint"]["step"] == 10
    with app.app_context(), db.session() as s:
        details = [e.detail for e in s.get(Job, job_id).events]
    assert any("restarted the job" in (d or "") and "attempt 2/3" in d for d in details)


def test_a_cancelled_job_refuses_its_agent(app, client, slurm_job):
    h = job_headers(app, slurm_job)
    client.post("/api/workers/claim", headers=h)
    with app.app_context(), db.transaction() as s:
        jobs_service.transition(s, s.get(Job, slurm_job), "cancelled", source="test")
    assert client.post(f"/api/workers/jobs/{slurm_job}/progress", json={"progress": {"step": 3}},
                       headers=h).status_code == 401


def test_after_a_cancel_the_agent_may_still_report_its_checkpoint_for_a_while(app, client, slurm_job, monkeypatch):
    h = job_headers(app, slurm_job)
    client.post("/api/workers/claim", headers=h)
    with app.app_context(), db.transaction() as s:
        jobs_service.transition(s, s.get(Job, slurm_job), "cancelled", source="test")
    ckpt = {"key": f"{slurm_job}/checkpoints/checkpoint-7", "step": 7, "files": []}
    r = client.post(f"/api/workers/jobs/{slurm_job}/checkpoint", headers=h, json=ckpt)
    assert r.status_code == 200 and get_job(app, slurm_job).checkpoint["step"] == 7
    assert client.post(f"/api/workers/jobs/{slurm_job}/logs", json={"seq": 1, "lines": ["saved checkpoint-7"]},
                       headers=h).get_json()["accepted"] is True
    # only reports: the job does not start again, and the window closes
    assert client.post("/api/workers/claim", headers=h).status_code == 401
    monkeypatch.setattr(service, "LATE_REPORT_SECONDS", 0)
    late = client.post(f"/api/workers/jobs/{slurm_job}/checkpoint", headers=h, json={**ckpt, "step": 8})
    assert late.status_code == 401 and get_job(app, slurm_job).checkpoint["step"] == 7


def test_cli_one_job_mode_needs_its_credential_in_the_environment():
    runner = CliRunner()
    res = runner.invoke(worker_command, ["--server", "http://127.0.0.1:9", "--job", "job_x", "--once"],
                        env={"STCLOUD_JOB_TOKEN": None, "STCLOUD_WORKER_TOKEN": None})
    assert res.exit_code == 2 and "STCLOUD_JOB_TOKEN" in res.output
    res = runner.invoke(worker_command, ["--server", "http://127.0.0.1:9"],
                        env={"STCLOUD_JOB_TOKEN": None, "STCLOUD_WORKER_TOKEN": None})
    assert res.exit_code == 2 and "worker token is required" in res.output
