"""Estimates and spend limits apply to Slurm jobs: the estimate prices the run at
``gpu_hour_usd`` × ``gpus_per_job`` (hardware profile ``slurm``), a submit reserves it, and a
``block`` limit refuses a Slurm submit (402) when the estimate is more than what is left —
before anything reaches Slurm. In-process app; the submits that pass go to the real cluster."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from stcloud.trainer.sample import ensure_sample
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(120)

GPU_HOUR_USD = 1.5
GPUS = 2


@pytest.fixture
def slurm_app(app, client, slurm_env, tmp_path):
    resp = client.put("/api/cloud/providers/slurm", json={
        "partition": "held",  # DOWN: the submitted batch jobs wait there, nothing runs
        "gpus_per_job": GPUS, "cpus_per_job": 1, "gpu_hour_usd": GPU_HOUR_USD,
        "server_url": f"http://127.0.0.1:{free_port()}", "output_dir": str(tmp_path / "slurm-out")})
    assert resp.status_code == 200, resp.get_json()
    return app


def body(tmp_path, **changes) -> dict:
    sample = ensure_sample(tmp_path / "sample")
    cfg = json.loads(Path(sample["config_path"]).read_text())
    # the reference trainer at 0.01 s + 0.99 s per step: 3600 steps are one hour
    cfg.update(max_train_steps=3600, step_delay_seconds=0.99)
    dl = json.loads(Path(sample["dataloader_path"]).read_text())
    return {"provider": "slurm", "name": "slurm-costs", "config": cfg, "dataloader_config": dl,
            "data_consent": True, **changes}


def slurm_jobs(cluster) -> list[str]:
    return [str(j["job_id"]) for j in json.loads(cluster.run("squeue", "--json").stdout)["jobs"]
            if str(j.get("name") or "").startswith("stcloud-") and j["job_state"] == "PENDING"]


def test_estimate_and_block_limit_for_slurm_jobs(slurm_app, client, slurm_env, tmp_path):
    one_hour = GPU_HOUR_USD * GPUS  # $3.00
    est = client.post("/api/cloud/cost-estimate", json=body(tmp_path))
    assert est.status_code == 200, est.get_json()
    got = est.get_json()
    assert got["hardware"] == "slurm" and got["basis"] == "steps"
    assert got["usd_per_hour"] == pytest.approx(one_hour)
    assert got["seconds"] == pytest.approx(3600) and got["estimated_cost_usd"] == pytest.approx(one_hour)
    assert got["would_block"] is False

    limit = client.put("/api/cloud/cost-limits/slurm", json={"enabled": True, "amount_usd": 5.0,
                                                              "period": "daily", "action": "block"})
    assert limit.status_code == 200, limit.get_json()
    # within the limit: submitted to Slurm, the estimate reserved on the job
    first = client.post("/api/cloud/jobs/submit", json=body(tmp_path))
    assert first.status_code == 201, first.get_json()
    job = first.get_json()["job"]
    try:
        assert job["provider"] == "slurm" and job["provider_job_id"] in slurm_jobs(slurm_env)
        assert job["estimated_cost_usd"] == pytest.approx(one_hour)
        assert job["rate_usd_per_second"] == pytest.approx(one_hour / 3600)
        # $3 reserved of $5: another hour is more than is left -> the preview says so, submit refuses
        again = client.post("/api/cloud/cost-estimate", json=body(tmp_path)).get_json()
        assert again["would_block"] is True and again["block_reason"]
        before = slurm_jobs(slurm_env)
        refused = client.post("/api/cloud/jobs/submit", json=body(tmp_path, name="over-the-limit"))
        assert refused.status_code == 402, refused.get_json()
        problem = refused.get_json()
        assert refused.content_type.startswith("application/problem+json") and "slurm" in problem["detail"]
        assert not set(slurm_jobs(slurm_env)) - set(before)  # nothing reached Slurm
        # a shorter job fits in what is left
        short = client.post("/api/cloud/jobs/submit", json=body(tmp_path, name="short", config={
            **body(tmp_path)["config"], "max_train_steps": 1800}))
        assert short.status_code == 201, short.get_json()
        assert short.get_json()["job"]["estimated_cost_usd"] == pytest.approx(one_hour / 2)
        client.post(f"/api/cloud/jobs/{short.get_json()['job']['id']}/cancel", json={})
    finally:
        assert client.post(f"/api/cloud/jobs/{job['id']}/cancel", json={}).status_code == 200


def test_a_per_job_gpu_count_is_priced_by_its_own_count(slurm_app, client, slurm_env, tmp_path):
    """Settings say 2 GPUs; a job asking for 1 or 4 (its ``slurm`` object) is estimated,
    reserved and held to the limit at its own count, not the settings'."""
    for gpus in (1, 4, 0):
        est = client.post("/api/cloud/cost-estimate", json=body(tmp_path, slurm={"gpus_per_job": gpus}))
        assert est.status_code == 200, est.get_json()
        got = est.get_json()
        assert got["hardware"] == f"slurm-{gpus}gpu" and got["usd_per_hour"] == pytest.approx(GPU_HOUR_USD * gpus)
        assert got["estimated_cost_usd"] == pytest.approx(GPU_HOUR_USD * gpus)
    same = client.post("/api/cloud/cost-estimate", json=body(tmp_path, slurm={"gpus_per_job": GPUS})).get_json()
    assert same["hardware"] == "slurm"  # the settings' count keeps the listed profile
    bad = client.post("/api/cloud/cost-estimate", json=body(tmp_path, slurm={"gpus_per_job": 65}))
    assert bad.status_code == 400 and bad.get_json()["field"] == "slurm"  # as the submit answers it
    assert "gpus_per_job" in bad.get_json()["detail"]

    limit = client.put("/api/cloud/cost-limits/slurm", json={"enabled": True, "amount_usd": 5.0,
                                                              "period": "daily", "action": "block"})
    assert limit.status_code == 200, limit.get_json()
    # 4 GPUs for an hour is $6: over the $5 limit although the settings' 2 GPUs ($3) would fit
    before = slurm_jobs(slurm_env)
    refused = client.post("/api/cloud/jobs/submit", json=body(tmp_path, name="four", slurm={"gpus_per_job": 4}))
    assert refused.status_code == 402, refused.get_json()
    assert not set(slurm_jobs(slurm_env)) - set(before)
    one = client.post("/api/cloud/jobs/submit", json=body(tmp_path, name="one", slurm={"gpus_per_job": 1}))
    assert one.status_code == 201, one.get_json()
    job = one.get_json()["job"]
    try:
        assert job["hardware"] == "slurm-1gpu" and job["estimated_cost_usd"] == pytest.approx(GPU_HOUR_USD)
        assert job["rate_usd_per_second"] == pytest.approx(GPU_HOUR_USD / 3600)
        assert job["provider_job_id"] in slurm_jobs(slurm_env)
    finally:
        assert client.post(f"/api/cloud/jobs/{job['id']}/cancel", json={}).status_code == 200
