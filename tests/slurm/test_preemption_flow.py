"""End to end on a real Slurm that preempts: a real ``stcloud serve`` whose Slurm jobs run in
partition ``low``; a job in ``high`` takes the node, Slurm cancels the stcloud batch job
(``PREEMPTED``, ``PreemptMode=CANCEL``), stcloud submits it again and the new run's agent
resumes from the last uploaded checkpoint, as after a node failure. The cluster is this
module's own (preemption configured), started on loopback and stopped by PID."""
from __future__ import annotations

import sys

import pytest
import requests

from stcloud.trainer.sample import ensure_sample
from tests.conftest import ServeProcess
from tests.slurm import flows
from tests.slurm.cluster import running
from tests.slurm.test_flows import sample_config, sample_dataloader
from tests.slurm.test_reconcile import PREEMPT_CONF

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def preempting_cluster():
    with running(extra_conf=PREEMPT_CONF) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def stack(preempting_cluster, tmp_path_factory):
    home = tmp_path_factory.mktemp("slurm-preempt-home")
    srv = ServeProcess(home, args=("--no-local-worker",), env={"SLURM_CONF": str(preempting_cluster.conf)})
    try:
        srv.wait_ready()
        sample = ensure_sample(home / "sample")
        # both CPUs of the node: any job in "high" preempts it
        base = {"transport": "cli", "partition": "low", "gpus_per_job": 0, "cpus_per_job": 2,
                "mem_per_job_mb": 300, "time_limit": 10, "server_url": srv.url, "agent_python": sys.executable,
                "output_dir": str(home / "slurm-out")}
        resp = requests.put(srv.url + "/api/cloud/providers/slurm", json=base, timeout=10)
        assert resp.status_code == 200, resp.text
        yield flows.Stack(srv=srv, home=home, cluster=preempting_cluster, sample=sample, base_settings=base)
    finally:
        srv.stop()


def test_preempted_job_is_submitted_again_and_resumes_from_its_checkpoint(stack):
    job = stack.submit("slurm-preempted", sample_config(stack, step_delay_seconds=0.1, checkpointing_steps=20),
                       sample_dataloader(stack))
    first_id = job["provider_job_id"]
    stack.wait(job["id"], lambda j: (j["checkpoint"] or {}).get("step", 0) >= 40, timeout=120)
    stack.cluster.run("sbatch", "--parsable", "--partition=high", "--cpus-per-task=1", "--output=/dev/null",
                      "--wrap", "sleep 3")
    assert stack.wait_slurm(first_id, lambda j: j["job_state"] == "PREEMPTED", timeout=30)["job_state"] == "PREEMPTED"
    moved = stack.wait(job["id"], lambda j: j["provider_job_id"] not in (None, first_id), timeout=30)
    assert moved["attempt"] == 2 and moved["status"] in ("queued", "running")
    done = stack.wait(job["id"], lambda j: j["terminal"], timeout=150)
    logs = stack.logs(job["id"])
    assert done["status"] == "completed", (done, logs[-3000:])
    assert f"Slurm job {first_id}: PREEMPTED" in logs and "submitted again as Slurm job" in logs
    assert int(logs.split("resuming from the checkpoint at step ", 1)[1].split()[0]) >= 40
    assert "pytorch_lora_weights.safetensors" in [o.get("name") for o in done["outputs"]]
    assert stack.squeue(done["provider_job_id"])["partition"] == "low"
