"""Drive stcloud from Prefect through its REST API: train a base LoRA, then fine-tune from its
weights, each step a Prefect task that submits a job and waits for its end.

    STCLOUD_SERVER=http://127.0.0.1:8080 STCLOUD_TOKEN=stc_... python examples/prefect_flow.py

The same graph can be sent to stcloud as one pipeline (``POST /api/cloud/pipelines``); this
shows the other way: the orchestrator owns the order, stcloud runs the jobs.
"""
from __future__ import annotations

import os
import time

import requests
from prefect import flow, task

TERMINAL = {"completed", "failed", "cancelled"}


def _session(token: str | None) -> requests.Session:
    s = requests.Session()
    if token:
        s.headers["Authorization"] = f"Bearer {token}"
    return s


@task
def submit(server: str, token: str | None, body: dict) -> str:
    r = _session(token).post(f"{server}/api/cloud/jobs/submit", json=body, timeout=120)
    if r.status_code >= 400:
        raise RuntimeError(f"submit refused: {r.status_code} {r.json().get('detail')}")
    return r.json()["job"]["id"]


@task
def wait(server: str, token: str | None, job_id: str, timeout: float = 600, poll: float = 1.0) -> dict:
    http = _session(token)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"{server}/api/cloud/jobs/{job_id}", timeout=30).json()["job"]
        if job["status"] in TERMINAL:
            if job["status"] != "completed":
                raise RuntimeError(f"job {job_id} {job['status']}: {job.get('error')}")
            return job
        time.sleep(poll)
    raise TimeoutError(f"job {job_id} did not finish in {timeout:.0f}s")


@flow(name="stcloud-base-then-finetune")
def base_then_finetune(server: str, base_body: dict, finetune_config: dict, token: str | None = None) -> dict:
    base_id = submit(server, token, base_body)
    wait(server, token, base_id)
    # the fine-tune waits in stcloud too (depends_on) and starts from the base's weights
    ft_body = {**base_body, "config": {**base_body["config"], **finetune_config},
               "depends_on": [base_id], "inputs": {"init_lora_weights": {"from": base_id}}}
    ft_id = submit(server, token, ft_body)
    return {"base": base_id, "finetune": wait(server, token, ft_id)}


if __name__ == "__main__":
    import json
    import sys

    server = os.environ.get("STCLOUD_SERVER", "http://127.0.0.1:8080").rstrip("/")
    body = json.load(open(sys.argv[1])) if len(sys.argv) > 1 else {
        "provider": "local", "config": json.load(open("instance/sample/sample_config.json")),
        "dataloader_config": json.load(open("instance/sample/sample_dataloader.json"))}
    print(base_then_finetune(server, body, {"max_train_steps": 40}, os.environ.get("STCLOUD_TOKEN")))
