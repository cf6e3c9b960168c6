"""The one transition function, updates from writers, logs by offset."""
from datetime import UTC, datetime

import pytest

from stcloud import db
from stcloud.jobs import logread, service
from stcloud.jobs.service import JobUpdate
from stcloud.models import Job, JobEvent
from tests.jobs.factories import make_job


def events(app, job_id):
    with app.app_context(), db.session() as s:
        return [(e.from_status, e.to_status, e.accepted, e.source)
                for e in s.query(JobEvent).filter_by(job_id=job_id).order_by(JobEvent.id)]


def status(app, job_id):
    with app.app_context(), db.session() as s:
        return s.get(Job, job_id).status


def test_events_recorded_for_each_accepted_change(app):
    jid = make_job(app, "completed")
    assert [(f, t) for f, t, ok, _ in events(app, jid)] == [
        ("pending", "queued"), ("queued", "running"), ("running", "completed")]


def test_late_update_never_moves_backwards_and_is_recorded_ignored(app):
    jid = make_job(app, "completed")
    with app.app_context():
        r = service.apply_update(jid, JobUpdate(status="running"), source="webhook")
    assert not r.moved and not r.accepted
    assert status(app, jid) == "completed"
    assert events(app, jid)[-1] == ("completed", "running", False, "webhook")


def test_duplicate_update_is_a_noop(app):
    jid = make_job(app, "running")
    before = events(app, jid)
    with app.app_context():
        r = service.apply_update(jid, JobUpdate(status="running"), source="poller")
    assert r.accepted and not r.moved
    assert events(app, jid) == before


def test_out_of_order_processing_after_succeeded(app):
    jid = make_job(app, "queued")
    with app.app_context():
        service.apply_update(jid, JobUpdate(status="running"), source="webhook")
        service.apply_update(jid, JobUpdate(status="completed"), source="webhook")
        service.apply_update(jid, JobUpdate(status="running"), source="webhook")  # late "processing"
        service.apply_update(jid, JobUpdate(status="queued"), source="poller")  # late "starting"
    assert status(app, jid) == "completed"
    assert [t for _, t, ok, _ in events(app, jid) if not ok] == ["running", "queued"]


def test_error_not_painted_on_completed_job(app):
    jid = make_job(app, "completed")
    with app.app_context():
        service.apply_update(jid, JobUpdate(status="failed", error="boom"), source="webhook")
        with db.session() as s:
            assert s.get(Job, jid).error is None


def test_cost_from_billed_seconds_and_recorded_rate(app):
    jid = make_job(app, "running", rate_usd_per_second=0.001)
    done = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with app.app_context():
        service.apply_update(jid, JobUpdate(status="completed", billed_seconds=125.0, completed_at=done),
                             source="poller")
        with db.session() as s:
            job = s.get(Job, jid)
            assert job.cost_usd == pytest.approx(0.125)
            assert job.completed_at == done


def test_logs_by_offset_and_full_log_tail(app):
    jid = make_job(app, "running")
    with app.app_context():
        service.apply_update(jid, JobUpdate(logs_full="line 1\n"), source="poller")
        service.apply_update(jid, JobUpdate(logs_full="line 1\nstep 5/10 loss=0.5\n"), source="webhook")
        service.apply_update(jid, JobUpdate(logs_full="line 1\nstep 5/10 loss=0.5\n"), source="webhook")  # dup
        service.apply_update(jid, JobUpdate(logs_append="héllo ✓\n"), source="worker")
        with db.session() as s:
            all_ = logread.read_log(jid, 0)
            assert all_["text"] == "line 1\nstep 5/10 loss=0.5\nhéllo ✓\n"
            assert all_["next_offset"] == len(all_["text"].encode())
            assert not all_["complete"]
            tail = logread.read_log(jid, len(b"line 1\n"))
            assert tail["text"] == "step 5/10 loss=0.5\nhéllo ✓\n"
            end = logread.read_log(jid, all_["next_offset"])
            assert end["text"] == "" and end["next_offset"] == all_["next_offset"]
            job = s.get(Job, jid)
            assert job.progress["step"] == 5 and job.progress["loss"] == 0.5


def test_log_read_limit_does_not_split_utf8(app):
    jid = make_job(app, "running")
    with app.app_context():
        service.apply_update(jid, JobUpdate(logs_append="ééééé"), source="worker")
        part = logread.read_log(jid, 0, limit=3)
        assert part["text"] == "é" and part["next_offset"] == 2
        rest = logread.read_log(jid, part["next_offset"])
        assert rest["text"] == "éééé"


def test_requeue_after_worker_loss_is_allowed(app):
    jid = make_job(app, "running", provider="worker")
    with app.app_context(), db.transaction() as s:
        job = s.get(Job, jid)
        assert service.transition(s, job, "queued", source="scheduler", detail="worker lost")
        assert job.started_at is None


def test_completed_while_queued_implies_running(app):
    jid = make_job(app, "queued", rate_usd_per_second=0.01)
    started = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    with app.app_context():
        r = service.apply_update(jid, JobUpdate(status="completed", started_at=started, billed_seconds=10),
                                 source="poller")
    assert r.accepted and r.moved and r.from_status == "queued" and r.status == "completed"
    assert [(f, t) for f, t, ok, _ in events(app, jid)][-2:] == [("queued", "running"), ("running", "completed")]
    # failed from queued is a direct move; cancelled after completed is refused
    with app.app_context():
        assert not service.apply_update(jid, JobUpdate(status="cancelled"), source="api").accepted
