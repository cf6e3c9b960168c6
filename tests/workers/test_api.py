"""Worker registry, the admin API and the worker (machine) API through the test client."""
from datetime import timedelta

import pytest

from stcloud import db
from stcloud.models import Job, JobEvent, Worker, utcnow
from stcloud.workers import service
from tests.workers.helpers import bearer, get_job, queue_job


@pytest.fixture
def worker(client):
    r = client.post("/api/cloud/workers", json={"name": "box-1", "labels": {"gpu": "a100"}})
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    return {"id": body["worker_id"], "token": body["token"], "h": bearer(body["token"]), "body": body}


def register(client, w, **info):
    r = client.post("/api/workers/register", json={"hostname": "h1", "agent_version": "t",
                                                   "gpus": [{"name": "A100", "memory_gb": 80}], **info},
                    headers=w["h"])
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def test_create_list_and_command(client, worker):
    body = worker["body"]
    assert body["token"].startswith("stw_")
    assert body["command"] == f"STCLOUD_WORKER_TOKEN={body['token']} stcloud worker --server http://localhost"
    assert "--token" not in body["command"]
    listed = client.get("/api/cloud/workers").get_json()
    assert [w["id"] for w in listed["workers"]] == [worker["id"]]
    w = listed["workers"][0]
    assert w["status"] == "offline" and w["labels"] == {"gpu": "a100"}
    assert "token" not in w and "token_hash" not in w
    assert listed["timeout_seconds"] == 90
    # the token is stored hashed
    with client.application.app_context(), db.session() as s:
        row = s.get(Worker, worker["id"])
        assert row.token_hash == service.hash_token(worker["token"]) and worker["token"] not in row.token_hash


def test_bad_input_is_400(client):
    assert client.post("/api/cloud/workers", json={"labels": {}}).status_code == 400
    assert client.post("/api/cloud/workers", json={"name": "x", "labels": ["a"]}).status_code == 400
    assert client.post("/api/cloud/workers", data="nope", content_type="application/json").status_code == 400
    assert client.post("/api/cloud/workers/wrk_nope/drain", json={}).status_code == 404
    assert client.put("/api/cloud/workers/settings", json={"timeout_seconds": "soon"}).status_code == 400


def test_bad_or_missing_token_is_401(client, worker):
    for headers in ({}, bearer("stw_wrong"), {"Authorization": "Basic eDp5"}):
        r = client.post("/api/workers/heartbeat", json={}, headers=headers)
        assert r.status_code == 401
        assert r.mimetype == "application/problem+json"
    assert client.post("/api/workers/claim", headers=bearer("")).status_code == 401


def test_register_records_gpus_and_heartbeat_answers(client, worker):
    ans = register(client, worker, labels={"region": "eu"})
    assert ans["worker_id"] == worker["id"] and ans["resume"] == [] and ans["abandon"] == []
    assert ans["heartbeat_interval"] == 5.0
    w = client.get(f"/api/cloud/workers/{worker['id']}").get_json()["worker"]
    assert w["status"] == "idle" and w["gpu_count"] == 1 and w["vram_gb"] == 80
    assert w["labels"] == {"gpu": "a100", "region": "eu"} and w["hostname"] == "h1"
    hb = client.post("/api/workers/heartbeat", json={}, headers=worker["h"]).get_json()
    assert hb == {"cancel": [], "drain": False, "lease_expires_at": None, "heartbeat_interval": 5.0}


def test_claim_lease_logs_checkpoint_complete(app, client, worker):
    register(client, worker)
    assert client.post("/api/workers/claim", headers=worker["h"]).status_code == 204
    jid = queue_job(app, name="first")
    r = client.post("/api/workers/claim", headers=worker["h"])
    assert r.status_code == 200
    job = r.get_json()["job"]
    assert job["id"] == jid and job["attempt"] == 1 and job["checkpoint"] is None and job["log_seq"] == 0
    assert job["archive"]["url"] == f"/api/workers/jobs/{jid}/archive"
    assert job["dataloader_config"][0]["instance_data_dir"].startswith("datasets/")
    stored = get_job(app, jid)
    assert stored.status == "running" and stored.worker_id == worker["id"] and stored.lease_expires_at
    # one job at a time per worker
    assert client.post("/api/workers/claim", headers=worker["h"]).status_code == 409

    # archive: streamed, checksummed, holder only
    r = client.get(job["archive"]["url"], headers=worker["h"])
    assert r.status_code == 200 and r.headers["X-Content-SHA256"] == stored.dataset_sha256
    import hashlib
    assert hashlib.sha256(r.data).hexdigest() == stored.dataset_sha256
    r.close()

    # logs: append-only, idempotent on seq
    url = f"/api/workers/jobs/{jid}/logs"
    assert client.post(url, json={"seq": 1, "lines": ["stage: training", "step 5/20 loss=0.5 lr=1e-3"]},
                       headers=worker["h"]).get_json() == {"accepted": True, "log_seq": 1}
    dup = client.post(url, json={"seq": 1, "lines": ["stage: training", "step 5/20 loss=0.5 lr=1e-3"]},
                      headers=worker["h"]).get_json()
    assert dup["accepted"] is False and dup["duplicate"] is True
    assert client.post(url, json={"seq": 2, "lines": ["step 10/20 loss=0.25 lr=1e-3"]},
                       headers=worker["h"]).get_json()["accepted"]
    assert client.post(url, json={"seq": 0, "lines": []}, headers=worker["h"]).status_code == 400
    assert client.post(url, json={"seq": 3, "lines": "x"}, headers=worker["h"]).status_code == 200
    text = client.get(f"/api/cloud/jobs/{jid}/logs").get_json()["text"]
    assert text.count("step 5/20") == 1 and "step 10/20" in text
    assert get_job(app, jid).progress["step"] == 10

    # heartbeat renews the lease and merges progress
    before = get_job(app, jid).lease_expires_at
    hb = client.post("/api/workers/heartbeat", json={"job_id": jid, "progress": {"stage": "training"}},
                     headers=worker["h"]).get_json()
    assert hb["cancel"] == [] and get_job(app, jid).lease_expires_at >= before

    # checkpoint report
    r = client.post(f"/api/workers/jobs/{jid}/checkpoint",
                    json={"key": f"{jid}/checkpoints/checkpoint-10", "step": 10,
                          "files": [f"{jid}/checkpoints/checkpoint-10/a"]},
                    headers=worker["h"])
    assert r.status_code == 200 and get_job(app, jid).checkpoint["step"] == 10
    r = client.post(f"/api/workers/jobs/{jid}/checkpoint", json={"key": f"{jid}/old", "step": 5}, headers=worker["h"])
    assert get_job(app, jid).checkpoint["step"] == 10  # an older one never replaces a newer one
    assert client.post(f"/api/workers/jobs/{jid}/checkpoint", json={"key": "other/x", "step": 11},
                       headers=worker["h"]).status_code == 400

    # end state
    outputs = [{"name": "pytorch_lora_weights.safetensors", "key": f"{jid}/pytorch_lora_weights.safetensors",
                "size": 10, "sha256": "ab"}]
    r = client.post(f"/api/workers/jobs/{jid}/complete",
                    json={"status": "completed", "exit_code": 0, "last_lines": ["stage: done"], "outputs": outputs},
                    headers=worker["h"])
    assert r.get_json() == {"status": "completed"}
    done = get_job(app, jid)
    assert done.status == "completed" and done.lease_expires_at is None
    # outputs come from what the S3 endpoint holds under outputs/<job_id>/, not from the report
    assert all(o.get("destination") == "builtin" for o in done.outputs or [])
    assert done.provider_data["attempts"][0]["outcome"] == "completed"
    w = client.get(f"/api/cloud/workers/{worker['id']}").get_json()["worker"]
    assert w["status"] == "idle" and w["current_job_id"] is None
    # a finished job is no longer held: reports on it are refused
    assert client.post(f"/api/workers/jobs/{jid}/progress", json={"progress": {}},
                       headers=worker["h"]).status_code == 403


def test_failed_end_state_keeps_exit_code_and_last_lines(app, client, worker):
    register(client, worker)
    jid = queue_job(app, archive=False)
    client.post("/api/workers/claim", headers=worker["h"])
    r = client.post(f"/api/workers/jobs/{jid}/complete",
                    json={"status": "failed", "exit_code": 2, "last_lines": ["error: bad resolution"]},
                    headers=worker["h"])
    assert r.get_json()["status"] == "failed"
    job = get_job(app, jid)
    assert "code 2" in job.error and "bad resolution" in job.error


def test_reporting_on_a_job_not_held_is_403(app, client, worker):
    other = client.post("/api/cloud/workers", json={"name": "box-2"}).get_json()
    register(client, worker)
    jid = queue_job(app, archive=True)
    client.post("/api/workers/claim", headers=worker["h"])
    h2 = bearer(other["token"])
    for method, path, body in [
        ("post", f"/api/workers/jobs/{jid}/logs", {"seq": 1, "lines": ["x"]}),
        ("post", f"/api/workers/jobs/{jid}/progress", {"progress": {"step": 1}}),
        ("post", f"/api/workers/jobs/{jid}/checkpoint", {"key": f"{jid}/c", "step": 1}),
        ("post", f"/api/workers/jobs/{jid}/complete", {"status": "completed"}),
        ("post", f"/api/workers/jobs/{jid}/release", {}),
        ("get", f"/api/workers/jobs/{jid}/archive", None),
        ("post", "/api/workers/jobs/job_doesnotexist/logs", {"seq": 1, "lines": ["x"]}),
    ]:
        r = getattr(client, method)(path, json=body, headers=h2) if body is not None else client.get(path, headers=h2)
        assert r.status_code == 403, (path, r.status_code)
    # the heartbeat of the other worker claiming to run it is told to cancel
    assert client.post("/api/workers/heartbeat", json={"job_id": jid}, headers=h2).get_json()["cancel"] == [jid]
    assert get_job(app, jid).log_size == 0


def test_cancel_reaches_the_worker_in_the_heartbeat_answer(app, client, worker):
    register(client, worker)
    jid = queue_job(app, archive=False)
    client.post("/api/workers/claim", headers=worker["h"])
    assert client.post("/api/workers/heartbeat", json={"job_id": jid}, headers=worker["h"]).get_json()["cancel"] == []
    assert client.post(f"/api/cloud/jobs/{jid}/cancel", json={}).status_code == 200
    assert client.post("/api/workers/heartbeat", json={"job_id": jid}, headers=worker["h"]).get_json()["cancel"] == [jid]
    # still stopping the trainer (and saving its checkpoint): busy with the job until the end report
    w = client.get(f"/api/cloud/workers/{worker['id']}").get_json()["worker"]
    assert w["status"] == "busy" and w["current_job_id"] == jid
    # trailing lines of the cancelled run are still accepted, the end report leaves it cancelled
    assert client.post(f"/api/workers/jobs/{jid}/logs", json={"seq": 1, "lines": ["stage: cancelled"]},
                       headers=worker["h"]).status_code == 200
    assert client.post(f"/api/workers/jobs/{jid}/complete", json={"status": "cancelled", "exit_code": 143},
                       headers=worker["h"]).get_json() == {"status": "cancelled"}
    w = client.get(f"/api/cloud/workers/{worker['id']}").get_json()["worker"]
    assert w["status"] == "idle" and w["current_job_id"] is None


def test_drain_finishes_current_job_and_takes_no_new_one(app, client, worker):
    register(client, worker)
    j1, j2 = queue_job(app, archive=False), queue_job(app, archive=False)
    assert client.post("/api/workers/claim", headers=worker["h"]).get_json()["job"]["id"] == j1
    r = client.post(f"/api/cloud/workers/{worker['id']}/drain", json={})
    assert r.get_json()["worker"]["status"] == "draining"
    hb = client.post("/api/workers/heartbeat", json={"job_id": j1}, headers=worker["h"]).get_json()
    assert hb["drain"] is True and hb["cancel"] == []  # the running job continues
    client.post(f"/api/workers/jobs/{j1}/complete", json={"status": "completed", "exit_code": 0}, headers=worker["h"])
    assert client.post("/api/workers/claim", headers=worker["h"]).get_json() == {"job": None, "drain": True}
    # a heartbeat or re-register cannot undo a drain
    client.post("/api/workers/heartbeat", json={}, headers=worker["h"])
    assert register(client, worker)["draining"] is True
    assert client.post("/api/workers/claim", headers=worker["h"]).get_json()["drain"] is True
    assert get_job(app, j2).status == "queued"
    # only the admin can
    client.post(f"/api/cloud/workers/{worker['id']}/resume", json={})
    assert client.post("/api/workers/claim", headers=worker["h"]).get_json()["job"]["id"] == j2


def test_rotate_token_refuses_the_old_one(client, worker):
    r = client.post(f"/api/cloud/workers/{worker['id']}/rotate-token", json={}).get_json()
    assert r["token"] != worker["token"] and r["token"] in r["command"]
    assert client.post("/api/workers/heartbeat", json={}, headers=worker["h"]).status_code == 401
    assert client.post("/api/workers/heartbeat", json={}, headers=bearer(r["token"])).status_code == 200


def test_delete_refused_while_busy_unless_forced(app, client, worker):
    register(client, worker)
    jid = queue_job(app, archive=False)
    client.post("/api/workers/claim", headers=worker["h"])
    r = client.delete(f"/api/cloud/workers/{worker['id']}")
    assert r.status_code == 409 and r.get_json()["job_id"] == jid
    assert client.delete(f"/api/cloud/workers/{worker['id']}?force=true").status_code == 204
    job = get_job(app, jid)
    assert job.status == "queued" and job.attempt == 2 and job.worker_id is None
    assert client.post("/api/workers/heartbeat", json={}, headers=worker["h"]).status_code == 401
    assert client.delete(f"/api/cloud/workers/{worker['id']}").status_code == 404


def test_register_resumes_a_held_job_and_requeues_an_orphan(app, client, worker):
    register(client, worker)
    jid = queue_job(app, archive=False)
    client.post("/api/workers/claim", headers=worker["h"])
    ans = register(client, worker, current_job_id=jid)  # reconnect, still running it
    assert ans["resume"] == [jid] and ans["abandon"] == []
    assert get_job(app, jid).status == "running"
    ans = register(client, worker)  # restarted without it -> re-queued at once
    job = get_job(app, jid)
    assert job.status == "queued" and job.attempt == 2
    ans = register(client, worker, current_job_id=jid)  # and a stale claim to it is abandoned
    assert ans["abandon"] == [jid]


def _expire(app, jid):
    with app.app_context(), db.transaction() as s:
        s.get(Job, jid).lease_expires_at = utcnow() - timedelta(seconds=1)


def test_lease_expiry_requeues_with_attempt_and_reason_then_fails(app, client, worker):
    register(client, worker)
    jid = queue_job(app, archive=False, max_attempts=2)
    client.post("/api/workers/claim", headers=worker["h"])
    with app.app_context():
        assert service.check_liveness()["requeued"] == []  # lease still valid
    _expire(app, jid)
    with app.app_context():
        assert service.check_liveness()["requeued"] == [jid]
    job = get_job(app, jid)
    assert job.status == "queued" and job.attempt == 2 and job.worker_id is None
    with app.app_context(), db.session() as s:
        ev = s.query(JobEvent).filter_by(job_id=jid, to_status="queued", from_status="running").one()
        assert "box-1 lost" in ev.detail and "attempt 2/2" in ev.detail and ev.source == "scheduler"
    # the lost worker learns it must stop; its reports are refused
    assert client.post("/api/workers/heartbeat", json={"job_id": jid}, headers=worker["h"]).get_json()["cancel"] == [jid]
    assert client.post(f"/api/workers/jobs/{jid}/logs", json={"seq": 5, "lines": ["late"]},
                       headers=worker["h"]).status_code == 403
    # second attempt: claimed again, lease runs out again -> failed with the reason
    assert client.post("/api/workers/claim", headers=worker["h"]).get_json()["job"]["attempt"] == 2
    _expire(app, jid)
    with app.app_context():
        service.expire_leases()
    job = get_job(app, jid)
    assert job.status == "failed" and "lost" in job.error and "gave up after 2 attempt" in job.error
    assert [a["outcome"] for a in job.provider_data["attempts"]] == ["lost", "lost"]


def test_claim_sweeps_expired_leases_without_the_scheduler(app, client, worker):
    other = client.post("/api/cloud/workers", json={"name": "box-2"}).get_json()
    h2 = bearer(other["token"])
    register(client, worker)
    register(client, {"h": h2})
    jid = queue_job(app, archive=False)
    client.post("/api/workers/claim", headers=worker["h"])
    client.post(f"/api/workers/jobs/{jid}/checkpoint", json={"key": f"{jid}/checkpoints/checkpoint-10", "step": 10},
                headers=worker["h"])
    assert client.post("/api/workers/claim", headers=h2).status_code == 204
    _expire(app, jid)
    job = client.post("/api/workers/claim", headers=h2).get_json()["job"]
    assert job["id"] == jid and job["attempt"] == 2 and job["checkpoint"]["step"] == 10


def test_heartbeat_keeps_the_lease_alive(app, client, worker):
    register(client, worker)
    jid = queue_job(app, archive=False)
    client.post("/api/workers/claim", headers=worker["h"])
    with app.app_context(), db.transaction() as s:
        s.get(Job, jid).lease_expires_at = utcnow() + timedelta(seconds=1)
    client.post("/api/workers/heartbeat", json={"job_id": jid}, headers=worker["h"])
    with app.app_context():
        assert service.expire_leases(utcnow() + timedelta(seconds=5)) == []
        assert get_job(app, jid).status == "running"


def test_silent_worker_goes_offline(app, client, worker):
    register(client, worker)
    with app.app_context(), db.transaction() as s:
        s.get(Worker, worker["id"]).last_heartbeat_at = utcnow() - timedelta(seconds=91)
    assert client.get("/api/cloud/workers").get_json()["workers"][0]["status"] == "offline"  # shown at once
    with app.app_context():
        assert service.check_liveness()["offline"] == 1
    client.post("/api/workers/heartbeat", json={}, headers=worker["h"])
    assert client.get("/api/cloud/workers").get_json()["workers"][0]["status"] == "idle"


def test_timeout_setting_env_and_override(make_app, monkeypatch):
    monkeypatch.setenv("STCLOUD_WORKER_TIMEOUT", "7")
    app = make_app()
    c = app.test_client()
    assert c.get("/api/cloud/workers/settings").get_json()["timeout_seconds"] == 7
    assert c.put("/api/cloud/workers/settings", json={"timeout_seconds": 30}).get_json()["timeout_seconds"] == 30
    w = c.post("/api/cloud/workers", json={"name": "x"}).get_json()
    assert c.post("/api/workers/register", json={}, headers=bearer(w["token"])).get_json()["lease_seconds"] == 30
    assert c.put("/api/cloud/workers/settings", json={"timeout_seconds": None}).get_json()["timeout_seconds"] == 7


def test_matching_in_claim(app, client, worker):
    register(client, worker)  # gpu=a100, 1 GPU of 80 GB
    j_big = queue_job(app, archive=False, requirements={"min_gpus": 4})
    j_h100 = queue_job(app, archive=False, requirements={"labels": {"gpu": "h100*"}})
    j_local = queue_job(app, archive=False, provider="local")
    j_ok = queue_job(app, archive=False, requirements={"labels": {"gpu": "a1*"}, "min_vram_gb": 40})
    assert client.post("/api/workers/claim", headers=worker["h"]).get_json()["job"]["id"] == j_ok
    for j in (j_big, j_h100, j_local):
        assert get_job(app, j).status == "queued"


def test_admin_token_protects_admin_api_not_worker_api(make_app):
    app = make_app(STCLOUD_ADMIN_TOKEN="admin-secret")
    c = app.test_client()
    assert c.get("/api/cloud/workers").status_code == 401
    w = c.post("/api/cloud/workers", json={"name": "x"}, headers=bearer("admin-secret")).get_json()
    assert c.post("/api/workers/register", json={}, headers=bearer(w["token"])).status_code == 200
    assert c.post("/api/workers/register", json={}, headers=bearer("admin-secret")).status_code == 401


def test_claim_gives_storage_credentials_and_fills_builtin_publishing(app, client, worker):
    register(client, worker)
    cfg = {"max_train_steps": 5, "publishing_config": [
        {"provider": "s3", "stcloud_builtin": True, "bucket": "outputs", "access_key": "[redacted]",
         "secret_key": "[redacted]", "base_path": "x/", "endpoint_url": "http://old/api/cloud/storage"},
        {"provider": "s3", "bucket": "theirs", "access_key": "A", "secret_key": "B"}]}
    jid = queue_job(app, archive=False, config=cfg)
    job = client.post("/api/workers/claim", headers=worker["h"]).get_json()["job"]
    st = job["storage"]
    assert st["bucket"] == "outputs" and st["prefix"] == f"{jid}/" and st["endpoint_path"] == "/api/cloud/storage"
    assert st["access_key_id"] and st["secret_access_key"] and st["region"] == "us-east-1"
    builtin, theirs = job["config"]["publishing_config"]
    assert builtin["access_key"] == st["access_key_id"] and builtin["secret_key"] == st["secret_access_key"]
    assert theirs == cfg["publishing_config"][1]
    # a job without that delivery gets no publishing entry added
    jid2 = queue_job(app, archive=False)
    client.post(f"/api/workers/jobs/{jid}/complete", json={"status": "completed", "exit_code": 0}, headers=worker["h"])
    job2 = client.post("/api/workers/claim", headers=worker["h"]).get_json()["job"]
    assert job2["id"] == jid2 and "publishing_config" not in job2["config"]
