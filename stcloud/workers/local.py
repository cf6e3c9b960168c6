"""The embedded local worker (``stcloud serve --local-worker``): the same agent as
``stcloud worker``, run as a child process of the server so a crashing trainer cannot take
the server down. It dies with the server (SIGTERM on ``stop()``, PR_SET_PDEATHSIG and a
parent-pid watch when the server is killed).

It also makes the first run work out of the box: the sample dataset and config are
written under ``STCLOUD_HOME/sample`` (``sample_dataset/``, ``sample_config.json``,
``sample_dataloader.json``) — where the submit page prefills from.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from stcloud.workers import service

log = logging.getLogger(__name__)


class LocalWorker:
    def __init__(self, proc: subprocess.Popen, worker_id: str):
        self.proc = proc
        self.worker_id = worker_id

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the agent stops its trainer and hands the job back), then SIGKILL."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start_local_worker(app, url: str) -> LocalWorker:
    """Ensure the local worker row + token and the sample data, then start the agent."""
    from stcloud.trainer.sample import ensure_sample
    from stcloud.workers.agent import _pdeathsig

    home = Path(app.config["STCLOUD_HOME"])
    with app.app_context():
        worker_id, token = service.ensure_local_worker(home)
    try:
        ensure_sample(home / "sample")
    except OSError as exc:  # the server still runs; the submit page explains what is missing
        log.warning("could not write the sample dataset under %s: %s", home, exc)
    # The token goes through the environment, not argv (visible in ps).
    env = {**os.environ, "STCLOUD_WORKER_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    env.pop("STCLOUD_ADMIN_TOKEN", None)
    cmd = [sys.executable, "-m", "stcloud.workers.agent", "--server", url, "--work-dir", str(home / "worker"),
           "--poll-interval", str(app.config.get("STCLOUD_LOCAL_WORKER_POLL", 1.0)), "--exit-with-parent",
           "--stay-when-drained"]
    trainer = app.config.get("STCLOUD_LOCAL_TRAINER_COMMAND")
    if trainer:
        cmd += ["--trainer-command", trainer]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                            preexec_fn=_pdeathsig() if sys.platform.startswith("linux") else None)
    log.info("local worker %s started (pid %s), work dir %s", worker_id, proc.pid, home / "worker")
    return LocalWorker(proc, worker_id)
