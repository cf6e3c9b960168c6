"""Real answers against the schemas the document gives them, for routes the fuzzer cannot
reach with valid state: a job awaiting approval, a checkpoint to resume or continue from, a
pipeline, the Slurm settings, a worker claiming a job, a user's own account."""
from __future__ import annotations

import pytest

from stcloud import db
from stcloud.models import Job
from tests.accounts.helpers import team
from tests.api.conformance import assert_conforms
from tests.jobs.test_checkpoints_api import agent_checkpoint, make_job, sample_dataloader

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def dataset(tmp_path):
    data = tmp_path / "dataset"
    data.mkdir()
    for i in range(3):
        (data / f"img{i}.txt").write_text(f"caption {i}\n")
        (data / f"img{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes([i]))
    return str(data)


def _ok(app, r, status=200):
    assert r.status_code == status, r.get_data(as_text=True)
    return assert_conforms(app, r)


def test_approval_answers(app, client, dataset):
    _ok(app, client.put("/api/cloud/rates", json={"provider": "worker", "usd_per_hour": 36}))
    assert _ok(app, client.put("/api/cloud/settings/approval", json={"threshold_usd": 0.0001})) == \
        {"threshold_usd": 0.0001}
    _ok(app, client.get("/api/cloud/settings/approval"))
    body = {"provider": "worker", "config": {"max_train_steps": 500},
            "dataloader_config": [{"id": "d", "type": "local", "instance_data_dir": dataset}]}
    waiting = [_ok(app, client.post("/api/cloud/jobs/submit", json={**body, "name": n}), 201)["job"]["id"]
               for n in ("a", "b")]
    approved = _ok(app, client.post(f"/api/cloud/jobs/{waiting[0]}/approve", json={}))["job"]
    assert approved["status"] == "queued" and approved["approval"]["state"] == "approved"
    rejected = _ok(app, client.post(f"/api/cloud/jobs/{waiting[1]}/reject", json={"reason": "too big"}))["job"]
    assert rejected["status"] == "cancelled"
    events = _ok(app, client.get(f"/api/cloud/jobs/{waiting[0]}/events"))["events"]
    assert ("pending_approval", "uploading") in [(e["from"], e["to"]) for e in events]
    _ok(app, client.get(f"/api/cloud/jobs/{waiting[0]}/logs"))


def test_submit_side_answers(app, client, dataset):
    dataloader = [{"id": "d", "type": "local", "instance_data_dir": dataset}]
    preview = _ok(app, client.post("/api/cloud/data-preview", json={"provider": "worker", "dataloader_config": dataloader}))
    assert preview["has_local_data"] and preview["summary"]["totals"]["datasets"] == 1
    r = client.post("/api/cloud/jobs/submit", json={"provider": "worker", "config": {"max_train_steps": 5},
                                                    "dataloader_config": dataloader, "idempotency_key": "key-1"})
    job = _ok(app, r, 201)["job"]
    assert _ok(app, client.get("/api/cloud/jobs/submit/progress?idempotency_key=key-1"))["job"]["id"] == job["id"]
    assert _ok(app, client.get("/api/cloud/jobs/submit/progress?idempotency_key=key-2"))["job"] is None
    assert _ok(app, client.put("/api/cloud/settings/proxy", json={"proxy_url": "http://u:pw@proxy.example:3128",
                                                                  "no_proxy": "localhost"}))["has_credentials"]
    _ok(app, client.get("/api/cloud/settings/proxy"))
    _ok(app, client.put("/api/cloud/settings/public-url", json={"public_url": "https://training.example.com"}))
    _ok(app, client.get("/api/cloud/settings/public-url"))
    assert _ok(app, client.put("/api/cloud/configs/settings", json={"enabled": False})) == {"enabled": False}
    _ok(app, client.get("/api/cloud/configs/settings"))
    _ok(app, client.put("/api/cloud/settings/recovery", json={"orphan_policy": "cancel"}))
    _ok(app, client.get("/api/cloud/settings/recovery"))


def test_checkpoint_resume_and_continue_answers(app, client):
    failed = make_job(app, "failed", provider="worker", name="ck job", config={"max_train_steps": 100})
    agent_checkpoint(app, failed, 20)
    agent_checkpoint(app, failed, 40)
    listing = _ok(app, client.get(f"/api/cloud/jobs/{failed}/checkpoints"))
    assert [ck["step"] for ck in listing["checkpoints"]] == [20, 40]
    assert _ok(app, client.get(f"/api/cloud/jobs/{failed}/resume"))["plan"]["remaining_steps"] == 60
    resumed = _ok(app, client.post(f"/api/cloud/jobs/{failed}/resume", json={"provider": "local"}), 201)
    assert resumed["job"]["resumed_from"] == failed
    chain = _ok(app, client.get(f"/api/cloud/jobs/{resumed['job']['id']}/chain"))
    assert [a["job_id"] for a in chain["attempts"]] == [failed, resumed["job"]["id"]]
    done = make_job(app, "completed", provider="worker", config={"max_train_steps": 100})
    agent_checkpoint(app, done, 50)
    r = client.post(f"/api/cloud/jobs/{done}/checkpoints/50/continue", json={"provider": "local"})
    assert _ok(app, r, 201)["plan"]["remaining_steps"] == 50


def test_pipeline_answers(app, client):
    step = {"provider": "local", "config": {"max_train_steps": 5}, "dataloader_config": sample_dataloader(app)}
    r = client.post("/api/cloud/pipelines", json={"name": "p", "steps": [
        {"name": "a", **step}, {"name": "b", "depends_on": ["a"], **step}]})
    pipe = _ok(app, r, 201)["pipeline"]
    assert [s["step"] for s in pipe["steps"]] == ["a", "b"]
    assert _ok(app, client.get(f"/api/cloud/pipelines/{pipe['id']}"))["pipeline"]["id"] == pipe["id"]
    assert [p["id"] for p in _ok(app, client.get("/api/cloud/pipelines"))["pipelines"]] == [pipe["id"]]
    cancelled = _ok(app, client.post(f"/api/cloud/pipelines/{pipe['id']}/cancel", json={}))["pipeline"]
    assert cancelled["status"] == "cancelled" and cancelled["cancelled_at"]


def test_slurm_settings_answers(app, client):
    _ok(app, client.get("/api/cloud/providers/slurm"))
    changed = _ok(app, client.put("/api/cloud/providers/slurm", json={"partition": "gpu", "time_limit": 30,
                                                                      "extra_sbatch": ["--exclusive"]}))
    assert changed["partition"] == "gpu" and changed["extra_sbatch"] == ["--exclusive"]
    r = client.put("/api/cloud/providers/slurm", json={"transport": "rest", "rest_url": "http://127.0.0.1:9",
                                                      "rest_user": "slurm", "rest_token": "eyJ.a.b"})
    assert _ok(app, r)["rest_token_set"] is True
    assert _ok(app, client.delete("/api/cloud/providers/slurm/token"))["rest_token_set"] is False
    assert _ok(app, client.get("/api/cloud/providers/slurm/validate"))["valid"] is False
    assert [p["name"] for p in _ok(app, client.get("/api/cloud/providers"))["providers"]]
    for name in ("replicate", "local"):
        _ok(app, client.get(f"/api/cloud/providers/{name}"))


def test_worker_answers(app, client):
    created = _ok(app, client.post("/api/cloud/workers", json={"name": "gpu-box", "labels": {"gpu": "a100"}}), 201)
    agent = {"Authorization": f"Bearer {created['token']}"}
    _ok(app, client.post("/api/workers/register", json={"hostname": "box", "gpus": [{"name": "A100",
                                                                                     "memory_gb": 80}]},
                         headers=agent))
    job_id = make_job(app, "queued", provider="worker", config={"max_train_steps": 10})
    claimed = _ok(app, client.post("/api/workers/claim", headers=agent))["job"]
    assert claimed["id"] == job_id
    _ok(app, client.post("/api/workers/heartbeat", json={"job_id": job_id}, headers=agent))
    _ok(app, client.post(f"/api/workers/jobs/{job_id}/progress", json={"progress": {"step": 3, "total_steps": 10,
                                                                                    "loss": 0.5}}, headers=agent))
    _ok(app, client.post(f"/api/workers/jobs/{job_id}/logs", json={"seq": 1, "lines": ["step 3"]}, headers=agent))
    r = client.post(f"/api/workers/jobs/{job_id}/checkpoint",
                    json={"key": f"{job_id}/checkpoints/checkpoint-3", "step": 3, "files": ["a.safetensors"]},
                    headers=agent)
    assert _ok(app, r)["checkpoint"]["step"] == 3
    assert _ok(app, client.post(f"/api/workers/jobs/{job_id}/complete", json={"status": "completed"},
                                headers=agent))["status"] == "completed"
    again = make_job(app, "queued", provider="worker", config={"max_train_steps": 10})
    assert _ok(app, client.post("/api/workers/claim", headers=agent))["job"]["id"] == again
    assert _ok(app, client.post(f"/api/workers/jobs/{again}/release", json={"reason": "shutting down"},
                                headers=agent))["status"] == "queued"
    worker_id = created["worker_id"]
    for path in (f"/api/cloud/workers/{worker_id}/drain", f"/api/cloud/workers/{worker_id}/resume",
                 f"/api/cloud/workers/{worker_id}/rotate-token"):
        _ok(app, client.post(path, json={}))
    _ok(app, client.get("/api/cloud/workers"))
    _ok(app, client.get(f"/api/cloud/workers/{worker_id}"))


def test_account_answers(make_app):
    app = make_app(STCLOUD_AUTH="on")
    crew = team(app)
    c = app.test_client()
    mia, ada = crew["member"].headers, crew["admin"].headers
    assert _ok(app, c.get("/api/cloud/me", headers=mia))["via"] == "api_key"
    prefs = _ok(app, c.get("/api/cloud/me/notifications", headers=mia))
    _ok(app, c.put("/api/cloud/me/notifications", json=prefs, headers=mia))
    key = _ok(app, c.post("/api/cloud/tokens", json={"name": "laptop"}, headers=mia), 201)
    assert key["key"]["state"] == "active"
    _ok(app, c.get("/api/cloud/tokens", headers=mia))
    assert "password" in _ok(app, c.post("/api/cloud/users", json={"username": "neo"}, headers=ada), 201)
    _ok(app, c.get("/api/cloud/users", headers=ada))
    assert _ok(app, c.get("/api/cloud/audit", headers=ada))["records"]
    _ok(app, c.get("/api/cloud/costs/summary", headers=ada))
    _ok(app, c.get("/api/cloud/cost-limits", headers=ada))
    minted = _ok(app, c.post("/api/cloud/storage/credentials", json={"bucket": "outputs"}, headers=ada), 201)
    _ok(app, c.get("/api/cloud/storage/credentials", headers=ada))
    assert _ok(app, c.delete(f"/api/cloud/storage/credentials/{minted['access_key_id']}",
                             headers=ada))["credential"]["state"] == "revoked"
    with app.app_context(), db.session() as s:
        assert s.query(Job).count() == 0
