"""The Slurm sync (``workers/agent_jobs``) with batch jobs that ended in ways their agent never
reports, each on a real Slurm cluster of its own (started for the test in about half a second,
stopped by PID): a completion the agent did not report, a job Slurm forgot (past
``MinJobAge``), preemption and node failure (resubmitted, or failed after ``max_attempts``).

The stcloud side is an in-process app; the jobs are seeded through the transition function and
synced with ``agent_jobs.sync_job`` against the cluster, as the scheduler job does."""
from __future__ import annotations

import json
import secrets
import sys
from contextlib import ExitStack

import pytest

from stcloud import db
from stcloud.models import Job
from stcloud.providers.slurm import SlurmConfig, SlurmService
from stcloud.workers import agent_jobs
from tests.conftest import free_port
from tests.jobs.factories import make_job
from tests.slurm.cluster import NODE, SlurmCluster, running
from tests.slurm.test_adapter import mint, request, wait_for

pytestmark = pytest.mark.timeout(180)

# Two partitions over the one node: a job in ``high`` preempts (cancels) one in ``low``.
PREEMPT_CONF = f"""\
PreemptType=preempt/partition_prio
PreemptMode=CANCEL
PartitionName=low Nodes={NODE} PriorityTier=1 MaxTime=INFINITE State=UP OverSubscribe=NO
PartitionName=high Nodes={NODE} PriorityTier=10 MaxTime=INFINITE State=UP OverSubscribe=NO
"""


@pytest.fixture
def own_cluster():
    """``own_cluster(**kwargs)`` -> a started SlurmCluster for this test only."""
    with ExitStack() as stack:
        yield lambda **kwargs: stack.enter_context(running(**kwargs))


def service_for(cluster: SlurmCluster, tmp_path, **overrides) -> SlurmService:
    """The adapter on ``cluster``; the agents point at a port nobody listens on (they retry)."""
    cfg = {"server_url": f"http://127.0.0.1:{free_port()}", "output_dir": str(tmp_path / "out"),
           "gpus_per_job": 0, "cpus_per_job": 1, "time_limit": 5, "agent_python": sys.executable,
           "slurm_conf": str(cluster.conf), "gpu_hour_usd": 3.6}
    cfg.update(overrides)
    return SlurmService(SlurmConfig(**cfg), mint_job_token=mint)


def track(app, svc: SlurmService, status: str = "running", slurm: dict | None = None, **fields) -> tuple[str, str]:
    """A stcloud job of provider ``slurm`` in ``status`` and its batch job on the cluster (as
    submit leaves them: ``provider_job_id`` and ``provider_data.slurm``)."""
    job_id = f"job_{secrets.token_hex(6)}"
    info = svc.run_job(request(job_id, slurm))
    make_job(app, status, provider="slurm", id=job_id, provider_job_id=info.provider_job_id,
             provider_data=dict(info.extra), **fields)
    return job_id, info.provider_job_id


def sync(app, svc: SlurmService, job_id: str) -> dict:
    with app.app_context():
        agent_jobs.sync_job(job_id, svc)
    return app.test_client().get(f"/api/cloud/jobs/{job_id}").get_json()["job"]


def job_log(app, job_id: str) -> str:
    return app.test_client().get(f"/api/cloud/jobs/{job_id}/logs").get_json()["text"]


def accepted_moves(app, job_id: str) -> list[str]:
    events = app.test_client().get(f"/api/cloud/jobs/{job_id}/events").get_json()["events"]
    return [e["to"] for e in events if e["accepted"]]


def cancel_all(cluster: SlurmCluster) -> None:
    cluster.run("scancel", "--user=root", check=False)


def test_a_silent_completion_closes_and_a_forgotten_job_fails(own_cluster, app, tmp_path):
    """The batch script ends at once (``agent_python=/bin/true``): Slurm says COMPLETED, the
    agent never reports. One job is synced while Slurm still shows it; the other only after
    Slurm forgot it (``MinJobAge=2``): ``squeue`` no longer shows it, so the CLI transport asks
    ``scontrol show job``, which does not know it either — nothing will ever say more."""
    cluster = own_cluster(min_job_age=2)
    svc = service_for(cluster, tmp_path, agent_python="/bin/true")
    silent, silent_slurm = track(app, svc)
    forgotten, forgotten_slurm = track(app, svc)

    done = wait_for(svc, silent_slurm, lambda i: i.raw_status == "COMPLETED")
    assert done.extra["source"] == "squeue" and done.extra["exit_code"] == 0
    closed = sync(app, svc, silent)
    assert closed["status"] == "completed" and closed["cost_usd"] is not None
    assert accepted_moves(app, silent)[-1] == "completed"
    assert f"Slurm job {silent_slurm}: COMPLETED" in job_log(app, silent)
    events = app.test_client().get(f"/api/cloud/jobs/{silent}/events").get_json()["events"]
    assert "without a report from the agent" in events[-1]["detail"]

    # slurmctld purges ended jobs past MinJobAge (it checks every few seconds)
    gone = wait_for(svc, forgotten_slurm, lambda i: i.raw_status == "UNKNOWN", timeout=90)
    assert gone.status is None
    listed = json.loads(cluster.run("squeue", "--json").stdout)["jobs"]
    assert forgotten_slurm not in [str(j["job_id"]) for j in listed]
    shown = cluster.run("scontrol", "show", "job", forgotten_slurm, check=False)
    assert shown.returncode != 0 and "Invalid job id" in shown.stderr

    failed = sync(app, svc, forgotten)
    assert failed["status"] == "failed", failed
    assert failed["error"] == f"Slurm no longer knows job {forgotten_slurm} (past MinJobAge)"
    assert accepted_moves(app, forgotten)[-1] == "failed" and failed["cost_usd"] is not None
    assert sync(app, svc, forgotten)["status"] == "failed"  # a later round changes nothing


def slurm_job(cluster: SlurmCluster, slurm_id: str) -> dict:
    return next(j for j in json.loads(cluster.run("squeue", "--json").stdout)["jobs"] if str(j["job_id"]) == slurm_id)


def batch_jobs_of(cluster: SlurmCluster, job_id: str) -> list[dict]:
    return [j for j in json.loads(cluster.run("squeue", "--json").stdout)["jobs"] if j["name"] == f"stcloud-{job_id}"]


def stored(app, job_id: str) -> Job:
    with app.app_context(), db.session() as s:
        job = s.get(Job, job_id)
        s.expunge(job)
        return job


def test_preemption_submits_again_until_max_attempts_then_fails(own_cluster, app, tmp_path):
    """A real preemption on one node: the stcloud jobs run in partition ``low`` (a per-job
    override); a job in ``high`` that needs both CPUs makes Slurm cancel them (``PREEMPTED``).
    The job at attempt 1 of 3 is submitted again as a new batch job — in the same partition,
    with the next credential — and the one already at attempt 3 of 3 fails with Slurm's reason."""
    cluster = own_cluster(extra_conf=PREEMPT_CONF)
    svc = service_for(cluster, tmp_path, partition=cluster.partition)
    again, first_id = track(app, svc, slurm={"partition": "low"})
    last, last_id = track(app, svc, slurm={"partition": "low"}, attempt=3)
    assert stored(app, last).max_attempts == 3
    for slurm_id in (first_id, last_id):
        running = wait_for(svc, slurm_id, lambda i: i.raw_status == "RUNNING")
        assert running.extra["partition"] == "low"
    cluster.run("sbatch", "--parsable", "--partition=high", "--cpus-per-task=2", "--output=/dev/null",
                "--wrap", "sleep 3")
    for slurm_id in (first_id, last_id):
        ended = wait_for(svc, slurm_id, lambda i: i.raw_status == "PREEMPTED")
        assert ended.extra["retryable"] and ended.error.startswith("Slurm: PREEMPTED — the job was preempted")

    moved = sync(app, svc, again)
    assert moved["status"] == "queued" and moved["attempt"] == 2, moved
    new_id = moved["provider_job_id"]
    assert new_id not in (None, first_id)
    resubmitted = slurm_job(cluster, new_id)
    assert resubmitted["name"] == f"stcloud-{again}" and resubmitted["partition"] == "low"
    script = cluster.run("scontrol", "write", "batch_script", new_id, "-").stdout
    assert "submission 2." in script  # the per-job credential of the new batch job is number 2
    assert stored(app, again).provider_data["job_token_submission"] == 2
    log = job_log(app, again)
    assert f"Slurm job {first_id}: PREEMPTED" in log
    assert f"submitted again as Slurm job {new_id} (attempt 2/3, resuming from its last checkpoint)" in log
    assert moved["provider_state"]["state"] == "PENDING" and moved["provider_state"]["job_id"] == new_id

    capped = sync(app, svc, last)
    assert capped["status"] == "failed" and capped["attempt"] == 3, capped
    assert capped["error"].startswith("Slurm: PREEMPTED — the job was preempted"), capped["error"]
    assert capped["provider_job_id"] == last_id
    assert [j["job_id"] for j in batch_jobs_of(cluster, last)] == [int(last_id)]  # not submitted again
    assert accepted_moves(app, last)[-1] == "failed"
    cancel_all(cluster)


def test_node_failure_beyond_max_attempts_fails_with_the_reason(own_cluster, app, tmp_path):
    """``--no-requeue``: the node going DOWN ends the batch job in NODE_FAIL. At attempt 3 of 3
    there is no new batch job: the job fails with Slurm's reason."""
    cluster = own_cluster()
    svc = service_for(cluster, tmp_path, partition=cluster.partition, extra_sbatch=("--no-requeue",))
    job_id, slurm_id = track(app, svc, attempt=3)
    wait_for(svc, slurm_id, lambda i: i.raw_status == "RUNNING")
    cluster.run("scontrol", "update", f"NodeName={NODE}", "State=DOWN", "Reason=stcloud-test")
    wait_for(svc, slurm_id, lambda i: i.raw_status == "NODE_FAIL")
    failed = sync(app, svc, job_id)
    assert failed["status"] == "failed" and failed["attempt"] == 3, failed
    assert failed["error"].startswith("Slurm: NODE_FAIL — a node of the job failed"), failed["error"]
    assert [j["job_id"] for j in batch_jobs_of(cluster, job_id)] == [int(slurm_id)]
    assert f"Slurm job {slurm_id}: NODE_FAIL" in job_log(app, job_id)
