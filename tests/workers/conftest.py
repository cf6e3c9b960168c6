"""Fixtures for the multi-process worker tests: servers on one database, agent processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from stcloud.packaging import build_archive
from tests.conftest import ROOT
from tests.workers.helpers import sample

KEYS_SHOWN = ("status", "attempt", "progress", "error", "checkpoint")


class Agents:
    """``stcloud worker`` processes (``python -m stcloud.workers.agent``), killed at teardown."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.procs: list[tuple[subprocess.Popen, object]] = []

    def start(self, url: str, token: str, *args, env: dict | None = None) -> subprocess.Popen:
        n = len(self.procs)
        log_path = self.tmp / f"agent-{n}.log"
        fh = open(log_path, "wb")
        cmd = [sys.executable, "-m", "stcloud.workers.agent", "--server", url,
               "--work-dir", str(self.tmp / f"agent-{n}"), "--poll-interval", "0.2", "--grace-seconds", "5", *args]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "STCLOUD_WORKER_TOKEN": token, **(env or {})}
        proc = subprocess.Popen(cmd, env=full_env, stdout=fh, stderr=subprocess.STDOUT, cwd=str(ROOT))
        proc.log_path = log_path
        self.procs.append((proc, fh))
        return proc

    def stop_all(self):
        for proc, _fh in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, fh in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            fh.close()


@pytest.fixture
def agents(tmp_path):
    a = Agents(tmp_path)
    yield a
    a.stop_all()


def log_of(proc) -> str:
    return Path(proc.log_path).read_text(errors="replace")


class Admin:
    """The admin REST API of a running server."""

    def __init__(self, url: str):
        self.url = url
        self.http = requests.Session()

    def post(self, path, body=None, expect=(200, 201)):
        r = self.http.post(self.url + path, json=body or {}, timeout=15)
        assert r.status_code in expect, (path, r.status_code, r.text)
        return r.json() if r.content else None

    def get(self, path):
        r = self.http.get(self.url + path, timeout=15)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    def worker(self, name, labels=None) -> dict:
        return self.post("/api/cloud/workers", {"name": name, "labels": labels or {}})

    def job(self, job_id) -> dict:
        return self.get(f"/api/cloud/jobs/{job_id}")["job"]

    def log(self, job_id) -> str:
        return self.get(f"/api/cloud/jobs/{job_id}/logs")["text"]

    def wait_job(self, job_id, pred, timeout=60, what="condition"):
        deadline = time.time() + timeout
        job = None
        while time.time() < deadline:
            job = self.job(job_id)
            if pred(job):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id}: {what} not reached in {timeout}s; last: "
                             f"{json.dumps({k: job.get(k) for k in KEYS_SHOWN})}\n"
                             f"log tail: {self.log(job_id)[-2000:]}")


@pytest.fixture
def shared(tmp_path, make_app):
    """An app (for seeding jobs) and the STCLOUD_DATABASE_URL its servers share."""
    app = make_app()
    home = Path(app.config["STCLOUD_HOME"])
    info = sample(home)
    dataloader = json.loads(Path(info["dataloader_path"]).read_text())
    archive = build_archive(dataloader, home / "uploads")
    return {"app": app, "db_url": app.config["STCLOUD_DATABASE_URL"], "archive": archive,
            "server_home": tmp_path / "server-home"}
