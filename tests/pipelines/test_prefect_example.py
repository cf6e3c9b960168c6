"""examples/prefect_flow.py runs against a live stcloud (local worker): Prefect in its
ephemeral mode (no Prefect server configured; it starts a temporary one of its own)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests

from stcloud.workers.local import start_local_worker
from tests.conftest import ROOT
from tests.pipelines.test_pipelines import STEP, _dataloader

# Prefect's own database is created (migrated) on its first start, which takes minutes on a
# loaded machine: one home per machine, reused by later runs.
PREFECT_HOME = Path(tempfile.gettempdir()) / "stcloud-tests-prefect-home"


@pytest.mark.timeout(900)
def test_prefect_flow_drives_stcloud(app, live_server, home, tmp_path):
    body = {"provider": "local", "config": dict(STEP), "dataloader_config": _dataloader(home)}
    body_path = tmp_path / "body.json"
    body_path.write_text(json.dumps(body))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"STCLOUD_SERVER": live_server, "PREFECT_HOME": str(PREFECT_HOME),
                "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "240", "PREFECT_LOGGING_LEVEL": "WARNING",
                "DO_NOT_TRACK": "1"})
    worker = start_local_worker(app, live_server)
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "examples" / "prefect_flow.py"), str(body_path)],
                              env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=420)
    finally:
        worker.stop()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ids = [line for line in proc.stdout.splitlines() if "'base'" in line]
    assert ids, proc.stdout
    jobs = requests.get(f"{live_server}/api/cloud/jobs", timeout=10).json()["jobs"]
    by_name = sorted(jobs, key=lambda j: j["created_at"])
    assert [j["status"] for j in by_name] == ["completed", "completed"]
    ft = by_name[1]["id"]
    log = requests.get(f"{live_server}/api/cloud/jobs/{ft}/logs", timeout=10).json()["text"]
    assert "initial LoRA weights from" in log  # the fine-tune started from the base's weights
    assert (by_name[1]["progress"] or {}).get("step") == 40
