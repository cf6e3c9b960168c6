"""The Replicate poller: due jobs only, cadence by status, backoff on errors, Retry-After on
429, reconciliation while webhooks are configured."""
from __future__ import annotations

from datetime import timedelta

import pytest

from stcloud import db
from stcloud.jobs import poller
from stcloud.models import Job, utcnow
from tests.providers.fixtures import job_of, set_consent, submit_body

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def submitted(rapp, rclient, fake, dataset):
    set_consent(rclient, "allow")
    r = rclient.post("/api/cloud/jobs/submit", json=submit_body(dataset))
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.get_json()["job"]


def row(app, job_id) -> Job:
    with app.app_context(), db.session() as s:
        return s.get(Job, job_id)


def test_only_due_jobs_are_polled(rapp, fake, submitted):
    gets = lambda: len(fake.requests_to("GET", r"^/v1/predictions/"))  # noqa: E731
    with rapp.app_context():
        assert poller.poll_due() == 0  # next poll is a few seconds away
        assert gets() == 0
        assert poller.poll_due(now=utcnow() + timedelta(seconds=6)) == 1
        assert gets() == 1


def test_cadence_fast_while_queued_slower_while_running(rapp, fake, submitted):
    now = utcnow() + timedelta(minutes=1)
    with rapp.app_context():
        poller.poll_due(now=now)
        assert row(rapp, submitted["id"]).next_poll_at == now + timedelta(seconds=5)
        fake.start(submitted["provider_job_id"])
        poller.poll_due(now=now + timedelta(seconds=5))
        assert row(rapp, submitted["id"]).next_poll_at == now + timedelta(seconds=20)


def test_reconciliation_polls_continue_with_webhooks(rapp, rclient, fake, submitted):
    rclient.put("/api/cloud/providers/replicate", json={"webhook_url": "https://hooks.example.com"})
    fake.start(submitted["provider_job_id"])
    now = utcnow() + timedelta(minutes=1)
    with rapp.app_context():
        assert poller.poll_due(now=now) == 1
        job = row(rapp, submitted["id"])
        assert job.status == "running"
        assert job.next_poll_at == now + timedelta(seconds=60)  # slower, but still polling


def test_errors_back_off_exponentially_then_recover(rapp, fake, submitted):
    pid = submitted["provider_job_id"]
    fake.inject("GET", rf"^/v1/predictions/{pid}$", "500", times=2)
    now = utcnow() + timedelta(minutes=1)
    with rapp.app_context():
        out = poller.poll_job(submitted["id"], now=now)
        assert not out.ok and "HTTP 500" in out.error
        job = row(rapp, submitted["id"])
        assert job.poll_failures == 1 and job.next_poll_at == now + timedelta(seconds=10)
        poller.poll_job(submitted["id"], now=now)
        job = row(rapp, submitted["id"])
        assert job.poll_failures == 2 and job.next_poll_at == now + timedelta(seconds=20)
        assert poller.poll_job(submitted["id"], now=now).ok
        assert row(rapp, submitted["id"]).poll_failures == 0


def test_429_retry_after_is_honoured_and_stops_the_round(rapp, rclient, fake, dataset, submitted):
    second = rclient.post("/api/cloud/jobs/submit", json=submit_body(dataset)).get_json()["job"]
    fake.inject("GET", r"^/v1/predictions/", "429", times=None, retry_after=120)
    now = utcnow() + timedelta(minutes=1)
    with rapp.app_context():
        assert poller.poll_due(now=now) == 1  # the round stops at the first 429
    polled = [j for j in (row(rapp, submitted["id"]), row(rapp, second["id"])) if j.poll_failures]
    assert len(polled) == 1 and polled[0].next_poll_at == now + timedelta(seconds=120)


def test_no_token_means_idle_not_crash(rapp, submitted, monkeypatch):
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    with rapp.app_context():
        assert poller.poll_due(now=utcnow() + timedelta(minutes=5)) == 0


def test_late_provider_status_never_moves_a_cancelled_job(rapp, rclient, fake, submitted):
    from stcloud.jobs import service as jobs_service

    with rapp.app_context():
        jobs_service.apply_update(submitted["id"], jobs_service.JobUpdate(status="cancelled"), source="test")
        # the prediction is still "starting" on Replicate: a poll must not resurrect the job
        out = poller.poll_job(submitted["id"])
    assert out.ok and out.status == "cancelled"
    assert job_of(rclient, submitted["id"])["status"] == "cancelled"


def test_interrupted_submit_is_reconciled_after_silence_when_its_owner_is_unknown(rapp, fake):
    """The poller leaves submits alone; the reconciler (``jobs.reconcile``) settles one whose
    process it cannot check once it has been silent long enough (the kill -9 cases with a
    known owner are in tests/jobs/test_crash_submit.py)."""
    from stcloud import settings
    from stcloud.jobs import reconcile
    from stcloud.providers.replicate import ReplicateService

    # a submit died after creating the prediction but before recording it
    with rapp.app_context(), db.transaction() as s:
        job = Job(name="crashed", provider="replicate", status="uploading", provider_data={})
        s.add(job)
        s.flush()
        job_id = job.id
    svc = ReplicateService("r8_test_token", base_url=fake.base_url)
    pid = svc.create_prediction(job_id=job_id, input={}).prediction["id"]
    with rapp.app_context():
        settings.put("orphan_policy", "cancel")
        assert poller.poll_due(now=utcnow() + timedelta(minutes=20)) == 0
        assert reconcile.run(now=utcnow() + timedelta(minutes=5))["reconciled"] == 0
        assert row(rapp, job_id).status == "uploading"  # may still be running somewhere
        assert reconcile.run(now=utcnow() + timedelta(minutes=20))["reconciled"] == 1
    job = row(rapp, job_id)
    assert job.status == "cancelled" and job.provider_job_id == pid
    assert fake.get_prediction(pid)["status"] == "canceled"
