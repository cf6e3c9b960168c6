"""The Slurm adapter against a real slurmctld/slurmd/slurmrestd: both transports submit,
read state and reason, cancel and see requeues. The batch jobs here run the real agent
pointed at a port nobody listens on, so they stay RUNNING (the agent keeps retrying) until
the test acts on them."""
from __future__ import annotations

import sys
import time

import pytest

from stcloud.providers.base import CloudJobStatus, ProviderFailure, RunRequest
from stcloud.providers.slurm import SlurmConfig, SlurmService
from stcloud.providers.slurm_cli import CliTransport, parse_scontrol
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(120)

def mint(job_id: str, submission: int = 1) -> str:
    return f"stj_{submission}.{job_id}-secret"


def make_service(cluster, tmp_path, **overrides) -> SlurmService:
    cfg = {"server_url": f"http://127.0.0.1:{free_port()}", "output_dir": str(tmp_path / "out"),
           "partition": cluster.partition, "gpus_per_job": 0, "cpus_per_job": 1, "time_limit": 5,
           "agent_python": sys.executable, "slurm_conf": str(cluster.conf), "gpu_hour_usd": 3.6}
    cfg.update(overrides)
    if cfg.get("transport") == "rest":
        cfg.setdefault("rest_url", cluster.rest_url)
        cfg.setdefault("rest_user", "root")
        cfg.setdefault("rest_token", cluster.token())
    return SlurmService(SlurmConfig(**cfg), mint_job_token=mint)


def request(job_id: str, slurm: dict | None = None, **inputs) -> RunRequest:
    return RunRequest(job_id=job_id, name=f"test {job_id}", config={}, dataloader_config=[], inputs=inputs,
                      options=slurm or {})


def wait_for(service, slurm_id, predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    info = None
    while time.monotonic() < deadline:
        info = service.get_job_status(slurm_id)
        if predicate(info):
            return info
        time.sleep(0.3)
    raise AssertionError(f"Slurm job {slurm_id} never got there; last: {info}")


@pytest.mark.parametrize("transport", ["cli", "rest"])
def test_submit_runs_the_agent_reports_running_then_cancel(slurm_cluster, tmp_path, transport):
    svc = make_service(slurm_cluster, tmp_path, transport=transport, gpus_per_job=1)
    info = svc.run_job(request(f"job_{transport}run"))
    slurm_id = info.provider_job_id
    assert slurm_id.isdigit() and info.status == CloudJobStatus.QUEUED
    assert info.extra["slurm"]["job_name"] == f"stcloud-job_{transport}run"
    assert info.extra["slurm"]["rate_usd_per_second"] == pytest.approx(3.6 / 3600)

    running = wait_for(svc, slurm_id, lambda i: i.raw_status == "RUNNING")
    assert running.status == CloudJobStatus.RUNNING and running.extra["nodes"] == "stnode1"
    assert running.extra["name"] == f"stcloud-job_{transport}run"
    assert running.extra["gpus"] == 1  # the GPU Slurm allocated is what the cost counts
    assert running.started_at is not None and running.extra["cost_usd"] >= 0

    # the job Slurm stores: our name, partition, output directory; the credential is not in it
    show = slurm_cluster.run("scontrol", "show", "job", "-o", slurm_id).stdout
    assert f"JobName=stcloud-job_{transport}run" in show and "Partition=debug" in show
    assert f"StdOut={tmp_path / 'out'}/stcloud-{slurm_id}.out" in show
    script = slurm_cluster.run("scontrol", "write", "batch_script", slurm_id, "-").stdout
    assert "--job job_" + transport + "run --once" in script and "stcloud.workers.agent" in script
    assert "stj_" not in script and "STCLOUD_JOB_TOKEN=" not in script
    if transport == "cli":
        deadline = time.monotonic() + 15
        while "[stcloud] Slurm job" not in svc.get_job_logs(slurm_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert f"[stcloud] Slurm job {slurm_id} (restart 0) on " in svc.get_job_logs(slurm_id)
    else:
        assert "streamed" in svc.get_job_logs(slurm_id)
    listed = {i.provider_job_id: i for i in svc.list_jobs()}
    assert listed[slurm_id].raw_status == "RUNNING"

    assert svc.cancel_job(slurm_id) is True
    done = wait_for(svc, slurm_id, lambda i: i.raw_status == "CANCELLED")
    assert done.status == CloudJobStatus.CANCELLED and done.completed_at is not None
    assert done.error.startswith("Slurm: CANCELLED")
    # cost stops with the job: read again later, the same number
    time.sleep(1.2)
    assert svc.get_job_status(slurm_id).extra["cost_usd"] == done.extra["cost_usd"]


@pytest.mark.parametrize("transport", ["cli", "rest"])
def test_pending_job_carries_slurms_reason(slurm_cluster, tmp_path, transport):
    svc = make_service(slurm_cluster, tmp_path, transport=transport)
    # a per-job override sends it to the partition that is DOWN: it waits with a reason
    info = svc.run_job(request(f"job_{transport}held", slurm={"partition": "held", "time_limit": 3}))
    try:
        pending = wait_for(svc, info.provider_job_id, lambda i: i.extra.get("reason") == "PartitionDown")
        assert pending.status == CloudJobStatus.QUEUED and pending.raw_status == "PENDING"
        assert pending.started_at is None and pending.extra["partition"] == "held"
        assert "TimeLimit=00:03:00" in slurm_cluster.run("scontrol", "show", "job", "-o",
                                                         info.provider_job_id).stdout
    finally:
        svc.cancel_job(info.provider_job_id)


def test_failed_job_reports_exit_code_and_reason(slurm_cluster, tmp_path):
    svc = make_service(slurm_cluster, tmp_path, agent_python="/bin/false")
    info = svc.run_job(request("job_exitone"))
    done = wait_for(svc, info.provider_job_id, lambda i: i.status is not None and i.status.value == "failed")
    assert done.raw_status == "FAILED" and done.extra["exit_code"] == 1
    assert done.error == "Slurm: FAILED — the job failed (exit code 1, reason NonZeroExitCode)"
    # a finished job read by scontrol says the same as squeue --json
    via_scontrol = parse_scontrol(slurm_cluster.run("scontrol", "show", "job", "-o", info.provider_job_id).stdout)
    assert (via_scontrol.state, via_scontrol.exit_code, via_scontrol.reason) == ("FAILED", 1, "NonZeroExitCode")
    assert svc.get_job_status(info.provider_job_id).extra["source"] == "squeue"


@pytest.mark.parametrize("transport", ["cli", "rest"])
def test_requeue_shows_pending_again_with_a_restart(slurm_cluster, tmp_path, transport):
    svc = make_service(slurm_cluster, tmp_path, transport=transport)
    info = svc.run_job(request(f"job_{transport}requeue"))
    slurm_id = info.provider_job_id
    try:
        wait_for(svc, slurm_id, lambda i: i.raw_status == "RUNNING")
        slurm_cluster.run("scontrol", "requeue", slurm_id)
        again = wait_for(svc, slurm_id, lambda i: i.extra.get("restarts") == 1)
        assert again.raw_status in ("COMPLETING", "PENDING", "CONFIGURING", "RUNNING")  # requeue on its way
        assert again.status in (CloudJobStatus.QUEUED, CloudJobStatus.RUNNING)
    finally:
        svc.cancel_job(slurm_id)


def test_unknown_job_and_bad_credentials(slurm_cluster, tmp_path):
    cli = make_service(slurm_cluster, tmp_path)
    gone = cli.get_job_status("987654")
    assert gone.status is None and gone.raw_status == "UNKNOWN"
    rest = make_service(slurm_cluster, tmp_path, transport="rest")
    assert rest.get_job_status("987654").raw_status == "UNKNOWN"
    assert rest.validate_credentials()["version"].startswith("22.05")
    assert cli.validate_credentials()["version"] == "slurm-wlm 22.05.8" or \
        cli.validate_credentials()["version"].startswith("slurm")
    bad = make_service(slurm_cluster, tmp_path, transport="rest", rest_token="a.b.c")
    with pytest.raises(ProviderFailure, match="refused the token|rejected|Authentication|slurmrestd"):
        bad.run_job(request("job_badtoken"))
    with pytest.raises(ProviderFailure, match="partition"):
        cli.run_job(request("job_nopart", slurm={"partition": "nosuchpartition"}))
    missing = SlurmService(SlurmConfig(server_url="http://x", output_dir=str(tmp_path), bin_dir=str(tmp_path)),
                           mint_job_token=mint)
    with pytest.raises(ProviderFailure, match="sbatch not found"):
        missing.run_job(request("job_nobin"))


def test_the_credential_travels_in_the_environment_only(slurm_cluster, tmp_path):
    """The batch script the agent runs gets STCLOUD_JOB_TOKEN in its environment; sbatch's
    command line and the stored script never carry it."""
    svc = make_service(slurm_cluster, tmp_path)
    batch = svc.batch_job(request("job_envonly"))
    assert batch.environment["STCLOUD_JOB_TOKEN"] == mint("job_envonly")
    assert mint("job_envonly") not in batch.script
    (tmp_path / "out").mkdir()
    probe = batch.script.replace("exec ", "echo TOKEN=$STCLOUD_JOB_TOKEN; exit 0; exec ", 1)
    job_id = CliTransport(slurm_conf=str(slurm_cluster.conf)).submit(
        type(batch)(**{**batch.__dict__, "script": probe}))
    out = tmp_path / "out" / f"stcloud-{job_id}.out"
    deadline = time.monotonic() + 20
    while (not out.exists() or "TOKEN=" not in out.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"TOKEN={mint('job_envonly')}" in out.read_text()


@pytest.mark.parametrize("transport", ["cli", "rest"])
def test_extra_sbatch_options_reach_slurm_through_both_transports(slurm_cluster, tmp_path, transport):
    extra = ("--comment=extra-options-reach-slurm", "--nice=7", "--hold")
    svc = make_service(slurm_cluster, tmp_path, transport=transport, extra_sbatch=extra)
    info = svc.run_job(request(f"job_{transport}extra"))
    try:
        held = wait_for(svc, info.provider_job_id, lambda i: i.raw_status == "PENDING" and i.extra.get("reason"))
        assert held.extra["reason"] in ("JobHeldUser", "JobHeldAdmin")
        shown = slurm_cluster.run("scontrol", "show", "job", "-o", info.provider_job_id).stdout
        assert "Comment=extra-options-reach-slurm" in shown and "Nice=7" in shown
    finally:
        svc.cancel_job(info.provider_job_id)


def test_rest_transport_refuses_an_option_it_cannot_send(slurm_cluster, tmp_path):
    svc = make_service(slurm_cluster, tmp_path, transport="rest", extra_sbatch=("--nodelist=node1",))
    with pytest.raises(ProviderFailure, match="--nodelist has no slurmrestd"):
        svc.run_job(request("job_restbadopt"))

def test_placement_offer_counts_idle_nodes(slurm_cluster, tmp_path):
    """provider "auto" asks the seam: an idle partition is offered; once a job holds the
    node it is not idle any more. The REST transport makes no offer."""
    svc = make_service(slurm_cluster, tmp_path, transport="cli")
    deadline = time.monotonic() + 60
    offer = svc.placement_offer(None)
    while not offer.available and time.monotonic() < deadline:  # earlier tests' jobs ending
        time.sleep(0.5)
        offer = svc.placement_offer(None)
    assert offer.available and offer.wait_seconds == 0 and "1 idle node" in offer.note
    slurm_id = svc.run_job(request("job_placed")).provider_job_id
    try:
        wait_for(svc, slurm_id, lambda i: i.raw_status == "RUNNING")
        busy = svc.placement_offer(None)
        assert not busy.available and "0 idle node" in busy.note
    finally:
        svc.cancel_job(slurm_id)
    assert make_service(slurm_cluster, tmp_path, transport="rest").placement_offer(None) is None
