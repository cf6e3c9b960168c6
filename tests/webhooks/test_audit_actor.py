"""A delivery that cancels a job (stopped on the provider's side) is audited as ``job.cancel``
by ``webhook``, for Replicate and for a plugin provider's receiver; the streamed log and
progress, other status changes, duplicates and late events write no audit record."""
from __future__ import annotations

from dataclasses import replace

import pytest

from stcloud import db
from stcloud.accounts import audit
from stcloud.models import Job
from stcloud.providers import registry
from stcloud.providers.base import CloudJobStatus
from tests.webhooks.conftest import get_job, make_job, prediction, send
from tests.webhooks.test_generic import STATES, Hooky, _send

PID = "cancelledbyreplicateuiabcd"


def _records(app, **filters):
    with app.app_context():
        return list(reversed(audit.query(limit=1000, **filters)))


def test_replicate_cancel_is_recorded_as_the_webhook(wh_app, wh_client, fake):
    job_id = make_job(wh_app, PID, status="queued")
    other = make_job(wh_app, "completedpredictionabcdefg", status="queued")
    assert send(wh_client, fake.webhook_secret, prediction(PID, "processing", logs="step 1/10 loss=0.5\n")).json[
        "outcome"] == "applied"
    assert send(wh_client, fake.webhook_secret, prediction(PID, "processing", logs="step 1/10 loss=0.5\nstep 2/10\n")
                ).json["outcome"] == "applied"
    assert send(wh_client, fake.webhook_secret, prediction("completedpredictionabcdefg", "succeeded")
                ).json["outcome"] == "applied"
    assert _records(wh_app) == []  # running, streamed logs, completed: nothing audited

    canceled = prediction(PID, "canceled", logs="step 1/10 loss=0.5\nstep 2/10\n")
    r = send(wh_client, fake.webhook_secret, canceled, remote_addr="127.0.0.1", msg_id="msg_cancel_1")
    assert r.json["outcome"] == "applied" and get_job(wh_app, job_id).status == "cancelled"
    assert "moved_from" not in r.json  # the receipt's answer is unchanged
    (rec,) = _records(wh_app)
    assert (rec["actor"], rec["action"], rec["target"], rec["outcome"]) == ("webhook", "job.cancel", job_id, "ok")
    assert rec["detail"] == {"source": "webhook", "provider": "replicate", "webhook_id": "msg_cancel_1",
                             "from": "running"}
    assert rec["client_addr"] == "127.0.0.1" and rec["key_id"] is None

    # a redelivery and a late copy change nothing and add nothing
    assert send(wh_client, fake.webhook_secret, canceled, msg_id="msg_cancel_1").json["outcome"] == "duplicate"
    assert send(wh_client, fake.webhook_secret, canceled).json["outcome"] == "applied"
    assert len(_records(wh_app)) == 1 and get_job(wh_app, other).status == "completed"
    with wh_app.app_context():
        assert audit.verify().ok


class Stoppable(Hooky):
    provider_name = "stoppable"

    def parse_webhook(self, payload):
        info = super().parse_webhook(payload)
        return replace(info, status=CloudJobStatus.CANCELLED) if payload["state"] == "stopped" else info


@pytest.fixture
def stoppable(wh_app):
    assert "stopped" not in STATES
    with registry.override("stoppable", Stoppable):
        yield wh_app


def test_a_plugin_providers_cancel_is_recorded_as_the_webhook(stoppable):
    c = stoppable.test_client()
    with stoppable.app_context(), db.transaction() as s:
        job = Job(name="plugin job", provider="stoppable", provider_job_id="run-9", status="running",
                  config={}, dataloader_config=[])
        s.add(job)
        s.flush()
        job_id = job.id
    r = _send(c, "stoppable", {"run": "run-9", "state": "stopped"}, msg_id="msg_stop")
    assert r.status_code == 200 and r.json["outcome"] == "applied", r.json
    (rec,) = _records(stoppable)
    assert (rec["actor"], rec["action"], rec["target"]) == ("webhook", "job.cancel", job_id)
    assert rec["detail"] == {"source": "webhook", "provider": "stoppable", "webhook_id": "stoppable:msg_stop",
                             "from": "running"}
