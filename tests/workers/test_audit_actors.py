"""What a worker's agent does on its own is audited under ``worker:<name>``: its registration,
the S3 key minted for a job it claimed, a running job it ended as cancelled. Heartbeats, logs
and progress are never audited."""
import pytest

from stcloud.accounts import audit
from tests.workers.helpers import bearer, queue_job


@pytest.fixture
def worker(client):
    r = client.post("/api/cloud/workers", json={"name": "box-7"})
    assert r.status_code == 201, r.get_json()
    return {"id": r.get_json()["worker_id"], "h": bearer(r.get_json()["token"])}


def _records(app, **filters):
    with app.app_context():
        return list(reversed(audit.query(limit=1000, **filters)))


def test_worker_actions_are_recorded_as_the_worker(app, client, worker):
    r = client.post("/api/workers/register", json={"hostname": "gpu-host", "agent_version": "9.9",
                                                   "gpus": [{"name": "A100", "memory_gb": 80}]},
                    headers=worker["h"])
    assert r.status_code == 200, r.get_json()
    (reg,) = _records(app, action="worker.register")
    assert reg["actor"] == "worker:box-7" and reg["target"] == worker["id"] and reg["outcome"] == "ok"
    assert reg["detail"] == {"hostname": "gpu-host", "agent_version": "9.9", "gpu_count": 1,
                             "resumed": [], "abandoned": []}
    assert reg["client_addr"] == "127.0.0.1"

    jid = queue_job(app, archive=False)
    job = client.post("/api/workers/claim", headers=worker["h"]).get_json()["job"]
    assert job["id"] == jid
    (mint,) = _records(app, action="s3.credential.mint")
    assert mint["actor"] == "worker:box-7" and mint["target"] == job["storage"]["access_key_id"]
    assert mint["detail"] == {"job_id": jid, "bucket": "outputs", "prefix": f"{jid}/"}

    before = len(_records(app))
    assert client.post("/api/workers/heartbeat", json={"job_id": jid, "progress": {"step": 1}},
                       headers=worker["h"]).status_code == 200
    assert client.post(f"/api/workers/jobs/{jid}/logs", json={"seq": 1, "lines": ["step 1"]},
                       headers=worker["h"]).status_code == 200
    assert len(_records(app)) == before  # streaming reports write no audit record

    # given back and claimed again: the job's key is still good, so no second mint
    assert client.post(f"/api/workers/jobs/{jid}/release", json={"reason": "test"}, headers=worker["h"]).status_code == 200
    again = client.post("/api/workers/claim", headers=worker["h"]).get_json()["job"]
    assert again["id"] == jid and again["storage"]["access_key_id"] == job["storage"]["access_key_id"]
    assert len(_records(app, action="s3.credential.mint")) == 1

    r = client.post(f"/api/workers/jobs/{jid}/complete", json={"status": "cancelled", "exit_code": 143,
                                                                "error": "stopped by SIGTERM"}, headers=worker["h"])
    assert r.get_json() == {"status": "cancelled"}
    (cancel,) = _records(app, action="job.cancel")
    assert cancel["actor"] == "worker:box-7" and cancel["target"] == jid
    assert cancel["detail"] == {"source": "worker", "exit_code": 143, "reason": "stopped by SIGTERM"}
    with app.app_context():
        assert audit.verify().ok


def test_a_completed_job_and_a_cancel_after_the_fact_are_not_worker_cancels(app, client, worker):
    client.post("/api/workers/register", json={}, headers=worker["h"])
    done = queue_job(app, archive=False)
    assert client.post("/api/workers/claim", headers=worker["h"]).get_json()["job"]["id"] == done
    client.post(f"/api/workers/jobs/{done}/complete", json={"status": "completed", "exit_code": 0}, headers=worker["h"])
    stopped = queue_job(app, archive=False)
    assert client.post("/api/workers/claim", headers=worker["h"]).get_json()["job"]["id"] == stopped
    # the user cancels (audited as the user by the request hook); the agent then reports it
    assert client.post(f"/api/cloud/jobs/{stopped}/cancel", json={}).status_code == 200
    client.post(f"/api/workers/jobs/{stopped}/complete", json={"status": "cancelled", "exit_code": 143},
                headers=worker["h"])
    assert [(r["actor"], r["target"]) for r in _records(app, action="job.cancel")] == [("local", stopped)]
