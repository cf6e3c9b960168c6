"""Resume anywhere onto Slurm (issue 18), on the real single-node cluster: a Slurm job killed
mid-training ends ``failed`` with its checkpoints uploaded; resuming it with
``provider: "slurm"`` submits a new batch job whose agent downloads the copied checkpoint,
trains only the steps after it and completes; the chain's cost is the sum of both attempts."""
from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
import requests

from tests.slurm import flows
from tests.slurm.test_flows import sample_config, sample_dataloader, stack  # noqa: F401 - fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TOTAL = 200


def _trainer_pid(stack: flows.Stack, slurm_id: str) -> int:  # noqa: F811 - the fixture's name
    """The PID of the trainer process inside Slurm job ``slurm_id`` (``scontrol listpids``)."""
    out = stack.cluster.run("scontrol", "listpids", slurm_id).stdout
    for line in out.splitlines()[1:]:
        pid = line.split()[0]
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"stcloud.trainer" in cmdline:
            return int(pid)
    raise AssertionError(f"no trainer process in Slurm job {slurm_id}: {out}")


def test_failed_job_resumed_on_slurm_starts_from_its_checkpoint(stack: flows.Stack):  # noqa: F811
    cfg = sample_config(stack, step_delay_seconds=0.1, checkpointing_steps=20, max_train_steps=TOTAL)
    job = stack.submit("slurm-resume-src", cfg, sample_dataloader(stack))
    stack.wait(job["id"], lambda j: (j["checkpoint"] or {}).get("step", 0) >= 40, timeout=120)
    # the trainer dies (SIGKILL, as the kernel's OOM killer would): the agent reports the failure
    os.kill(_trainer_pid(stack, job["provider_job_id"]), signal.SIGKILL)
    failed = stack.wait(job["id"], lambda j: j["terminal"], timeout=60)
    assert failed["status"] == "failed", failed
    assert failed["cost_usd"] and failed["cost_usd"] > 0

    r = requests.post(f"{stack.srv.url}/api/cloud/jobs/{job['id']}/resume", json={"provider": "slurm"}, timeout=60)
    assert r.status_code == 201, r.text
    plan, second = r.json()["plan"], r.json()["job"]
    step = plan["step"]
    assert step >= 40 and step % 20 == 0 and plan["remaining_steps"] == TOTAL - step
    assert second["provider"] == "slurm" and second["resumed_from"] == job["id"]
    assert second["checkpoint"]["step"] == step and second["checkpoint"]["copied_from"] == job["id"]
    assert second["provider_job_id"] != job["provider_job_id"]

    done = stack.wait(second["id"], lambda j: j["terminal"], timeout=180)
    logs = stack.logs(second["id"])
    assert done["status"] == "completed", (done, logs[-3000:])
    assert re.search(rf"resumed from checkpoint \S+checkpoint-{step} at step {step}", logs), logs[-3000:]
    first_step = min(int(m) for m in re.findall(r"^step (\d+)/", logs, re.M))
    assert first_step == step + 1  # nothing before the checkpoint was trained again
    assert done["progress"]["step"] == TOTAL and done["progress"]["total_steps"] == TOTAL
    assert "pytorch_lora_weights.safetensors" in [o.get("name") for o in done["outputs"]]
    ended = stack.wait_slurm(done["provider_job_id"], lambda j: j["job_state"] == "COMPLETED", timeout=30)
    assert ended["job_state"] == "COMPLETED"

    chain = requests.get(f"{stack.srv.url}/api/cloud/jobs/{second['id']}/chain", timeout=10).json()
    assert [(a["provider"], a["status"], a["resume_step"]) for a in chain["attempts"]] == [
        ("slurm", "failed", None), ("slurm", "completed", step)]
    second_cost = stack.wait(second["id"], lambda j: j["cost_usd"], timeout=30)["cost_usd"]
    assert chain["total_cost_usd"] == pytest.approx(failed["cost_usd"] + second_cost, rel=1e-6, abs=1e-6)
