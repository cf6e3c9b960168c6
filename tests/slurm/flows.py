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

    direct: "DirectSubmit | None" = None

    def submit(self, name: str, config: dict, dataloader: list, **extra) -> dict:
        """``POST /api/cloud/jobs/submit`` with ``provider: "slurm"``; the job as answered."""
        if self.direct is not None:
            return self.direct.submit(name, config, dataloader, **extra)
        body = {"provider": "slurm", "name": name, "config": config, "dataloader_config": dataloader,
                "data_consent": True, **extra}
        resp = requests.post(self.srv.url + "/api/cloud/jobs/submit", json=body, timeout=60)
        assert resp.status_code == 201, resp.text
        job = resp.json()["job"]
        assert job["provider"] == "slurm" and job["status"] in ("queued", "running"), job
        return job

    def cancel(self, job_id: str) -> dict:
        if self.direct is not None:
            return self.direct.cancel(job_id)
        resp = requests.post(f"{self.srv.url}/api/cloud/jobs/{job_id}/cancel", json={}, timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()["job"]

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


class DirectSubmit:
    """Until submit routes ``provider: "slurm"`` through the provider seam: create the job the
    way submit does for self-hosted workers (row, archive kept on the server for the agent to
    download, ``queued``) and start it with the adapter, in this process, on the server's
    database and home."""

    def __init__(self, home: Path, slurm_conf: Path):
        from stcloud import create_app

        self.home = home
        self.app = create_app({"STCLOUD_HOME": str(home), "SLURM_CONF": str(slurm_conf)})

    def submit(self, name: str, config: dict, dataloader: list, slurm: dict | None = None) -> dict:
        from stcloud import db, packaging
        from stcloud.jobs import service as jobs_service
        from stcloud.jobs import states
        from stcloud.models import Job, new_id
        from stcloud.providers import slurm_factory, slurm_settings
        from stcloud.providers.base import RunRequest

        with self.app.app_context():
            overrides = slurm_settings.parse_override(slurm)
            job_id = new_id("job")
            archive = packaging.build_archive(dataloader, self.home / "uploads", base_dir=self.home,
                                              archive_name=f"{job_id}.zip")
            with db.transaction() as s:
                job = Job(id=job_id, name=name, provider="slurm", status=states.PENDING, config=config,
                          dataloader_config=dataloader, gpu_count=1, archive_path=str(archive.path),
                          dataset_sha256=archive.sha256, progress={},
                          provider_data={"archive_dataloader_config": archive.dataloader_config})
                s.add(job)
                s.flush()
                jobs_service.transition(s, job, states.UPLOADING, source="submit", detail="submitted (test)")
            info = slurm_factory.create().run_job(RunRequest(
                job_id=job_id, name=name, config=config, dataloader_config=dataloader,
                archive_path=str(archive.path), inputs={"slurm": overrides}))
            with db.transaction() as s:
                job = s.get(Job, job_id)
                job.provider_job_id = info.provider_job_id
                job.provider_data = {**(job.provider_data or {}), **info.extra}
                job.rate_usd_per_second = info.extra["slurm"]["rate_usd_per_second"]
                jobs_service.transition(s, job, states.QUEUED, source="submit",
                                        detail=f"Slurm job {info.provider_job_id}")
                return jobs_service.to_dict(job)

    def cancel(self, job_id: str) -> dict:
        from stcloud import db
        from stcloud.jobs import service as jobs_service
        from stcloud.jobs import states
        from stcloud.providers import slurm_factory

        with self.app.app_context():
            with db.session() as s:
                pid = jobs_service.get_job(s, job_id).provider_job_id
            slurm_factory.create().cancel_job(pid)
            with db.transaction() as s:
                job = jobs_service.get_job(s, job_id)
                jobs_service.transition(s, job, states.CANCELLED, source="api", detail="cancelled by user")
                return jobs_service.to_dict(job)
