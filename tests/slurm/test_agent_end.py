"""The agent in one-job mode (the runtime of every Slurm batch job) after its job ended: its
per-job credential dies with the job, so a heartbeat that races the end report is refused.
That refusal is the end it reported, not a fault: the agent must still exit 0 for a completed
job, or Slurm records the batch job as FAILED (seen under load in the sample-job test).
A real stcloud app served over HTTP on loopback; the agent's own heartbeat loop."""
from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

from stcloud.workers import service
from stcloud.workers.agent import Agent
from tests.workers.helpers import queue_job

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def served(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def one_job_agent(app, url, tmp_path, job_id) -> Agent:
    with app.app_context():
        token = service.mint_job_token(job_id, 1)
    agent = Agent(url, token, job_id=job_id, work_dir=tmp_path / "work")
    agent.register()
    assert agent.api.request("POST", "/api/workers/claim", timeout=10).json()["job"]["id"] == job_id
    return agent


def beat_once_more(agent: Agent) -> None:
    """The heartbeat thread, beating fast, until it stops by itself."""
    agent.heartbeat_interval = 0.05
    beat = threading.Thread(target=agent._heartbeat_loop, daemon=True)
    beat.start()
    beat.join(10)
    assert not beat.is_alive(), "the heartbeat loop did not stop on the refused credential"


def test_a_heartbeat_after_the_reported_end_is_no_fault(app, served, tmp_path):
    job_id = queue_job(app, provider="slurm", name="ends")
    agent = one_job_agent(app, served, tmp_path, job_id)
    # the job's end is reported (as _finish does: outcome first, then the report)
    agent.outcome = "completed"
    agent.api.call("POST", f"/api/workers/jobs/{job_id}/complete", json_body={"status": "completed", "exit_code": 0})
    beat_once_more(agent)
    assert agent.fatal is None and not agent.stop.is_set()


def test_a_refused_credential_before_any_end_is_still_fatal(app, client, served, tmp_path):
    job_id = queue_job(app, provider="slurm", name="cut-off")
    agent = one_job_agent(app, served, tmp_path, job_id)
    assert client.post(f"/api/cloud/jobs/{job_id}/cancel", json={}).status_code == 200  # ended on the server
    beat_once_more(agent)
    assert agent.fatal and agent.fatal.startswith("token refused") and agent.stop.is_set()
