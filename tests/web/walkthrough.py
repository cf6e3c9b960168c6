"""Shared by the walk-through tests (issue 17's "Done when", in the browser and the terminal):
a real ``stcloud serve --local-worker`` running the reference trainer, a notification receiver
on loopback, and the screenshot directory."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ServeProcess
from tests.notify.test_notify import Receiver

# Three learning rates, a small run each (well under a minute for the three).
LEARNING_RATES = (0.0003, 0.003, 0.03)
STEPS, EVERY = 60, 20
STEP_DELAY = 0.04  # slow enough to watch the list move, fast enough for a test


def screenshot_dir(tmp_path: Path) -> Path:
    """``STCLOUD_SCREENSHOTS`` (for the lead to look at), else the test's own tmp dir."""
    d = Path(os.environ.get("STCLOUD_SCREENSHOTS") or tmp_path / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def start_server(home: Path, env: dict | None = None) -> ServeProcess:
    """The server with its embedded local worker, waited for until the worker is idle. An
    empty STCLOUD_TRAINER_STEP_DELAY lets each job's ``step_delay_seconds`` pace the trainer."""
    headers = {"Authorization": f"Bearer {env['STCLOUD_ADMIN_TOKEN']}"} if env and env.get("STCLOUD_ADMIN_TOKEN") else {}
    proc = ServeProcess(home, args=("--local-worker",), env={"STCLOUD_TRAINER_STEP_DELAY": "", **(env or {})})
    try:
        proc.wait_ready()
        deadline = time.time() + 30
        while time.time() < deadline:
            workers = requests.get(proc.url + "/api/cloud/workers", headers=headers, timeout=5).json()["workers"]
            if workers and workers[0]["status"] == "idle":
                return proc
            time.sleep(0.2)
        raise RuntimeError(f"the local worker did not come up: {proc.log_path.read_text()[-3000:]}")
    except BaseException:
        proc.stop()
        raise


@pytest.fixture
def server(request, tmp_path, monkeypatch):
    """The walk-through's server (imported by each walk-through module); a module's
    ``SERVER_ENV`` is added to its environment (the CLI walk-through's admin token)."""
    for var in ("STCLOUD_ADMIN_TOKEN", "STCLOUD_PUBLIC_URL", "STCLOUD_DATABASE_URL", "REPLICATE_API_TOKEN",
                "STCLOUD_AUTH"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    proc = start_server(home, env=getattr(request.module, "SERVER_ENV", None))
    yield proc
    proc.stop()


@pytest.fixture
def receiver():
    """A notification receiver (Slack-style and signed webhooks) on loopback."""
    r = Receiver()
    yield r
    r.stop()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def job_end_messages(receiver, names) -> dict[str, str]:
    """``{job name: Slack text}`` of the job-end messages the receiver got so far."""
    out = {}
    for body in receiver.bodies("/slack"):
        for name in names:
            if name in body.get("text", ""):
                out[name] = body["text"]
    return out
