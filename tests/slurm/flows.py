"""Helpers for the end-to-end Slurm tests: the running stack and what the tests ask of it."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.conftest import ServeProcess
from tests.slurm.cluster import SlurmCluster


@dataclass
class Stack:
    srv: ServeProcess
    home: Path
    cluster: SlurmCluster
    sample: dict
    base_settings: dict = field(default_factory=dict)


    def submit(self, name: str, config: dict, dataloader: list, **extra) -> dict:
        """``POST /api/cloud/jobs/submit`` with ``provider: "slurm"``; the job as answered."""
        body = {"provider": "slurm", "name": name, "config": config, "dataloader_config": dataloader,
                "data_consent": True, **extra}
        resp = requests.post(self.srv.url + "/api/cloud/jobs/submit", json=body, timeout=60)
        assert resp.status_code == 201, resp.text
        job = resp.json()["job"]
        assert job["provider"] == "slurm" and job["status"] in ("queued", "running"), job
        return job

    def cancel(self, job_id: str) -> dict:
        resp = requests.post(f"{self.srv.url}/api/cloud/jobs/{job_id}/cancel", json={}, timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()["job"]

    def settings(self, **changes) -> dict:
        resp = requests.put(self.srv.url + "/api/cloud/providers/slurm", json=changes, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def job(self, job_id: str) -> dict:
        resp = requests.get(f"{self.srv.url}/api/cloud/jobs/{job_id}", timeout=10)
        resp.raise_for_status()
        return resp.json()["job"]

    def logs(self, job_id: str) -> str:
        resp = requests.get(f"{self.srv.url}/api/cloud/jobs/{job_id}/logs", timeout=10)
        resp.raise_for_status()
        return resp.json()["text"]

    def events(self, job_id: str) -> list[dict]:
        resp = requests.get(f"{self.srv.url}/api/cloud/jobs/{job_id}/events", timeout=10)
        resp.raise_for_status()
        return resp.json()["events"]

    def wait(self, job_id: str, predicate, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        job = self.job(job_id)
        while time.monotonic() < deadline:
            if predicate(job):
                return job
            time.sleep(0.5)
            job = self.job(job_id)
        raise AssertionError(f"job {job_id} never got there; last: {json.dumps(job)[:1500]}\n"
                             f"log tail: {self.logs(job_id)[-2500:]}")

    def squeue(self, slurm_id: str) -> dict:
        """Slurm's own record of the job (``squeue --json``)."""
        out = self.cluster.run("squeue", "--json", f"--jobs={slurm_id}").stdout
        jobs = [j for j in json.loads(out)["jobs"] if str(j["job_id"]) == str(slurm_id)]
        assert jobs, f"squeue does not show job {slurm_id}"
        return jobs[0]

    def wait_slurm(self, slurm_id: str, predicate, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.squeue(slurm_id)
            if predicate(state) or time.monotonic() > deadline:
                return state
            time.sleep(0.3)

