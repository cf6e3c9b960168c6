"""End to end on a real Slurm: a real ``stcloud serve`` (scheduler included) on loopback, jobs
with ``provider: "slurm"`` become batch jobs whose script runs the stcloud agent in one-job
mode; it claims the job with its per-job credential, downloads the dataset archive, trains
with the reference trainer, streams logs and progress, uploads checkpoints and outputs to
the built-in S3 endpoint and reports; the Slurm sync reconciles what Slurm knows."""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import requests

from stcloud.trainer.sample import ensure_sample
from tests.conftest import ServeProcess
from tests.slurm import flows

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

GPU_HOUR_USD = 36.0  # 1 cent a second per GPU: costs are visible in a test-length run


@pytest.fixture(scope="module")
def stack(slurm_cluster, tmp_path_factory):
    home = tmp_path_factory.mktemp("slurm-home")
    srv = ServeProcess(home, args=("--no-local-worker",), env={"SLURM_CONF": str(slurm_cluster.conf)})
    try:
        srv.wait_ready()
        sample = ensure_sample(home / "sample")
        base = {"transport": "cli", "partition": slurm_cluster.partition, "gpus_per_job": 1, "cpus_per_job": 1,
                "mem_per_job_mb": 300, "time_limit": 10, "server_url": srv.url, "agent_python": sys.executable,
                "output_dir": str(home / "slurm-out"), "gpu_hour_usd": GPU_HOUR_USD}
        resp = requests.put(srv.url + "/api/cloud/providers/slurm", json=base, timeout=10)
        assert resp.status_code == 200, resp.text
        yield flows.Stack(srv=srv, home=home, cluster=slurm_cluster, sample=sample, base_settings=base)
    finally:
        srv.stop()


@pytest.fixture
def rest_transport(stack):
    resp = requests.put(stack.srv.url + "/api/cloud/providers/slurm", timeout=10, json={
        "transport": "rest", "rest_url": stack.cluster.rest_url, "rest_user": "root",
        "rest_token": stack.cluster.token()})
    assert resp.status_code == 200, resp.text
    yield
    requests.put(stack.srv.url + "/api/cloud/providers/slurm", json={"transport": "cli"}, timeout=10)


def sample_config(stack, **changes) -> dict:
    cfg = json.loads(Path(stack.sample["config_path"]).read_text())
    cfg.update(changes)
    return cfg


def sample_dataloader(stack, dataset_dir: Path | None = None) -> list:
    dl = json.loads(Path(stack.sample["dataloader_path"]).read_text())
    if dataset_dir is not None:
        dl[0]["instance_data_dir"] = str(dataset_dir)
    return dl


def run_sample_to_completion(stack, tmp_path, name):
    # The dataset is copied and the copy removed once submitted: the job can only train on
    # the archive its agent downloads from stcloud.
    data = tmp_path / "dataset"
    shutil.copytree(stack.sample["dataset_dir"], data)
    job = stack.submit(name, sample_config(stack, step_delay_seconds=0.02), sample_dataloader(stack, data))
    shutil.rmtree(data)
    slurm_id = job["provider_job_id"]
    assert slurm_id and slurm_id.isdigit()
    seen = stack.squeue(slurm_id)
    assert seen["name"] == f"stcloud-{job['id']}"
    done = stack.wait(job["id"], lambda j: j["terminal"], timeout=120)
    logs = stack.logs(job["id"])
    assert done["status"] == "completed", (done, logs[-3000:])
    assert "pytorch_lora_weights.safetensors" in [o.get("name") for o in done["outputs"]]
    assert Path(stack.home, "cloud_outputs", "outputs", job["id"], "pytorch_lora_weights.safetensors").stat().st_size
    assert done["progress"]["step"] == 200 and done["percent"] == 100
    assert "step 200/200" in logs and "verified" in logs and "[stcloud] Slurm job" in logs
    assert stack.wait_slurm(slurm_id, lambda j: j["job_state"] == "COMPLETED", timeout=30)["job_state"] == "COMPLETED"
    events = stack.events(job["id"])
    assert [e["to"] for e in events if e["accepted"]][-2:] == ["running", "completed"]
    page = requests.get(f"{stack.srv.url}/jobs/{job['id']}", timeout=10).text
    assert "pytorch_lora_weights.safetensors" in page
    return done


def test_sample_job_completes_through_sbatch(stack, tmp_path):
    done = run_sample_to_completion(stack, tmp_path, "slurm-cli-sample")
    assert done["provider_state"]["transport"] == "cli"
    show = stack.cluster.run("scontrol", "show", "job", "-o", done["provider_job_id"]).stdout
    assert f":{stack.cluster.procs['slurmrestd'].pid} " not in show.split("AllocNode:Sid=", 1)[1][:80] + " "
    assert done["cost_usd"] and done["cost_usd"] == pytest.approx(done["billed_seconds"] * GPU_HOUR_USD / 3600)


def test_sample_job_completes_through_slurmrestd(stack, tmp_path, rest_transport):
    done = run_sample_to_completion(stack, tmp_path, "slurm-rest-sample")
    assert done["provider_state"]["transport"] == "rest"
    # slurmrestd made the batch job: Slurm records the submitting process's session, and
    # slurmrestd runs in a session of its own (it leads it: its PID)
    show = stack.cluster.run("scontrol", "show", "job", "-o", done["provider_job_id"]).stdout
    assert f":{stack.cluster.procs['slurmrestd'].pid} " in show.split("AllocNode:Sid=", 1)[1][:80] + " ", show


def test_cancel_scancels_and_stops_billing(stack):
    # No periodic checkpoints: the only one is what the trainer saves when the cancel stops it.
    job = stack.submit("slurm-cancel", sample_config(stack, step_delay_seconds=0.2, checkpointing_steps=0),
                       sample_dataloader(stack))
    stack.wait(job["id"], lambda j: j["status"] == "running" and (j["progress"].get("step") or 0) >= 5, timeout=90)
    assert stack.cancel(job["id"])["status"] == "cancelled"
    state = stack.wait_slurm(job["provider_job_id"], lambda j: j["job_state"] == "CANCELLED", timeout=30)
    assert state["job_state"] == "CANCELLED"
    first = stack.wait(job["id"], lambda j: j["cost_usd"] is not None, timeout=20)  # settled by the sync
    assert first["status"] == "cancelled" and first["cost_usd"] > 0
    time.sleep(6)  # a sync round or more later: the bill does not move
    later = stack.job(job["id"])
    assert later["status"] == "cancelled" and later["cost_usd"] == first["cost_usd"]
    assert later["billed_seconds"] == first["billed_seconds"]
    # The trainer stopped by the cancel saved a checkpoint where it was; the agent's late report
    # of it is accepted (the credential still takes a checkpoint shortly after the end).
    saved = stack.wait(job["id"], lambda j: j["checkpoint"] is not None, timeout=30)["checkpoint"]
    assert saved["step"] >= 5 and saved["key"].startswith(f"{job['id']}/")


def test_time_limit_ends_in_timeout_failed_with_that_reason(stack):
    # the per-job override of the submit body (the cluster-wide setting stays as it is)
    job = stack.submit("slurm-timeout", sample_config(stack, step_delay_seconds=1.0), sample_dataloader(stack),
                       slurm={"time_limit": 1})
    done = stack.wait(job["id"], lambda j: j["terminal"], timeout=200)
    assert done["status"] == "failed", done
    assert done["error"].startswith("Slurm: TIMEOUT — the job hit its time limit"), done["error"]
    assert stack.squeue(job["provider_job_id"])["job_state"] == "TIMEOUT"
    assert "TIMEOUT" in stack.logs(job["id"])


def test_pending_job_shows_slurms_reason(stack):
    job = stack.submit("slurm-held", sample_config(stack), sample_dataloader(stack),
                       slurm={"partition": "held"})  # DOWN: jobs wait there
    waiting = stack.wait(job["id"], lambda j: "PartitionDown" in (j["progress"].get("stage") or ""), timeout=30)
    assert waiting["status"] == "queued"
    assert waiting["progress"]["stage"] == "pending in Slurm: PartitionDown"
    # the structured member of the API: Slurm's state and reason, as the sync read them
    state = waiting["provider_state"]
    assert (state["job_id"], state["state"], state["reason"]) == (job["provider_job_id"], "PENDING", "PartitionDown")
    assert state["partition"] == "held" and state["transport"] == "cli" and state["polled_at"]
    assert f"Slurm job {job['provider_job_id']}: PENDING (PartitionDown)" in stack.logs(job["id"])
    page = requests.get(f"{stack.srv.url}/jobs/{job['id']}", timeout=10).text
    shown = page.split('id="provider-state">', 1)[1].split("</div>", 1)[0]
    assert f"Slurm job {job['provider_job_id']}: <strong class=\"mono\">PENDING</strong> (PartitionDown)" in shown
    stack.cancel(job["id"])
    stack.wait_slurm(job["provider_job_id"], lambda j: j["job_state"] == "CANCELLED", timeout=30)


def test_requeue_mid_training_resumes_from_the_checkpoint(stack):
    cfg = sample_config(stack, step_delay_seconds=0.1, checkpointing_steps=20)
    job = stack.submit("slurm-requeue", cfg, sample_dataloader(stack))
    stack.wait(job["id"], lambda j: (j["checkpoint"] or {}).get("step", 0) >= 40, timeout=120)
    slurm_id = job["provider_job_id"]
    stack.cluster.run("scontrol", "requeue", slurm_id)
    # Slurm holds a requeued job back (reason BeginTime) for a while; the admin lets it go now.
    pending = stack.wait_slurm(slurm_id, lambda j: j["job_state"] == "PENDING", timeout=30)
    assert pending["restart_cnt"] == 1
    stack.cluster.run("scontrol", "update", f"JobId={slurm_id}", "StartTime=now")
    done = stack.wait(job["id"], lambda j: j["terminal"], timeout=180)
    logs = stack.logs(job["id"])
    assert done["status"] == "completed", (done, logs[-3000:])
    assert done["attempt"] == 2
    assert "resuming from the checkpoint at step" in logs
    resumed_at = int(logs.split("resuming from the checkpoint at step ", 1)[1].split()[0])
    assert resumed_at >= 40
    assert stack.squeue(job["provider_job_id"])["restart_cnt"] == 1
    details = " ".join(e["detail"] or "" for e in stack.events(job["id"]))
    assert "re-queued as attempt 2" in details
    assert "pytorch_lora_weights.safetensors" in [o.get("name") for o in done["outputs"]]


def test_ten_jobs_at_once_queue_in_slurm_and_all_complete(stack):
    cfg = sample_config(stack, step_delay_seconds=0.0, max_train_steps=40, checkpointing_steps=20)
    jobs = [stack.submit(f"slurm-ten-{i}", cfg, sample_dataloader(stack)) for i in range(10)]
    reasons = set()
    deadline = time.monotonic() + 240
    done = {}
    while time.monotonic() < deadline and len(done) < len(jobs):
        for j in jobs:
            if j["id"] in done:
                continue
            cur = stack.job(j["id"])
            stage = cur["progress"].get("stage") or ""
            if stage.startswith("pending in Slurm: "):
                reasons.add(stage.split(": ", 1)[1])
            if cur["terminal"]:
                done[j["id"]] = cur
        time.sleep(0.5)
    assert len(done) == 10, f"only {len(done)} of 10 finished"
    assert all(d["status"] == "completed" for d in done.values()), [d["error"] for d in done.values()]
    # two CPUs and two GPUs for ten jobs: Slurm queued most of them, with its reasons
    assert reasons & {"Resources", "Priority"}, reasons


def test_node_failure_resubmits_and_resumes_from_the_checkpoint(stack):
    """Without Slurm's own requeue (``--no-requeue``) a node failure ends the batch job in
    NODE_FAIL: stcloud submits a new batch job with a new credential, which resumes from the
    last uploaded checkpoint."""
    stack.settings(extra_sbatch=["--no-requeue"])
    try:
        job = stack.submit("slurm-nodefail", sample_config(stack, step_delay_seconds=0.1, checkpointing_steps=20),
                           sample_dataloader(stack))
    finally:
        stack.settings(extra_sbatch=[])
    first_id = job["provider_job_id"]
    stack.wait(job["id"], lambda j: (j["checkpoint"] or {}).get("step", 0) >= 40, timeout=120)
    stack.cluster.run("scontrol", "update", "NodeName=stnode1", "State=DOWN", "Reason=stcloud-test")
    try:
        stack.wait_slurm(first_id, lambda j: j["job_state"] == "NODE_FAIL", timeout=30)
        moved = stack.wait(job["id"], lambda j: j["provider_job_id"] not in (None, first_id), timeout=30)
        assert moved["attempt"] == 2 and moved["status"] == "queued"
    finally:
        resume = stack.cluster.run("scontrol", "update", "NodeName=stnode1", "State=RESUME", check=False)
        assert resume.returncode == 0 or "Invalid node state" in resume.stderr, resume.stderr
        stack.cluster.wait_idle()
    done = stack.wait(job["id"], lambda j: j["terminal"], timeout=150)
    logs = stack.logs(job["id"])
    assert done["status"] == "completed", (done, logs[-3000:])
    assert f"Slurm job {first_id}: NODE_FAIL" in logs and "submitted again as Slurm job" in logs
    assert int(logs.split("resuming from the checkpoint at step ", 1)[1].split()[0]) >= 40
    assert stack.squeue(done["provider_job_id"])["job_state"] in ("COMPLETED", "COMPLETING", "RUNNING")
