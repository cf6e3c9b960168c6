"""Scheduler wiring: jobs declared as data, started once per process, max_instances=1."""
import pytest

from stcloud import scheduler


@pytest.mark.parametrize("job_id,path,seconds", scheduler.PERIODIC)
def test_every_periodic_job_resolves(job_id, path, seconds):
    assert callable(scheduler.resolve(path)) and seconds > 0


def test_start_once_per_process(app, monkeypatch):
    monkeypatch.setattr(scheduler, "PERIODIC", [("scheduler_heartbeat", "stcloud.scheduler:beat", 3600)])
    monkeypatch.setattr(scheduler, "_started_pid", None)
    monkeypatch.setitem(app.extensions, "stcloud.schedule_hooks", [])  # only the declared jobs
    sched = scheduler.start(app)
    try:
        jobs = sched.get_jobs()
        assert [j.id for j in jobs] == ["scheduler_heartbeat"]
        assert jobs[0].max_instances == 1 and jobs[0].coalesce is True
        with pytest.raises(RuntimeError):
            scheduler.start(app)
    finally:
        sched.shutdown(wait=False)


def test_schedule_hooks_add_period_boundary_jobs(app, monkeypatch):
    monkeypatch.setattr(scheduler, "_started_pid", None)
    sched = scheduler.start(app)
    try:
        ids = {j.id for j in sched.get_jobs()}
        assert {i for i, _, _ in scheduler.PERIODIC} <= ids and len(ids) > len(scheduler.PERIODIC)
        assert all(j.max_instances == 1 and j.coalesce for j in sched.get_jobs())
    finally:
        sched.shutdown(wait=False)


def test_create_app_never_starts_scheduler(app):
    assert "stcloud.scheduler" not in app.extensions


def test_serve_process_runs_scheduler(serve_process):
    import time

    import requests

    srv = serve_process()
    deadline = time.time() + 20
    while time.time() < deadline:
        body = requests.get(srv.url + "/healthz", timeout=2).json()
        if body["scheduler"]["alive"]:
            break
        time.sleep(0.5)
    assert body["scheduler"]["alive"] and body["scheduler"]["pid"] == srv.proc.pid
