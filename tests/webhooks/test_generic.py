"""``POST /api/webhooks/<provider>``: a provider other than Replicate that declares webhooks gets
them through the same verification and update path, with no edit to stcloud — here a plugin
adapter registered for the test, signing with the independent ``standardwebhooks`` package."""
from __future__ import annotations

import json

import pytest

from stcloud import db
from stcloud.models import Job, WebhookDelivery
from stcloud.providers import registry
from stcloud.providers.base import CloudJobInfo, CloudJobStatus, CloudTrainerService
from tests.webhooks.conftest import signed_headers

SECRET = "whsec_" + "c2VjcmV0LWZvci1ob29reS1wcm92aWRlcg=="
STATES = {"running": CloudJobStatus.RUNNING, "done": CloudJobStatus.COMPLETED, "broke": CloudJobStatus.FAILED}


class Hooky(CloudTrainerService):
    """A plugin provider that posts signed job events: ``{"run": id, "state": ..., "job": our id}``."""

    provider_name = "hooky"
    supports_cost_tracking = True
    supports_live_logs = False

    def validate_credentials(self):
        return {}

    def list_jobs(self, limit=50):
        return []

    def run_job(self, request):
        raise NotImplementedError

    def cancel_job(self, provider_job_id):
        return True

    def get_job_logs(self, provider_job_id):
        return ""

    def get_job_status(self, provider_job_id):
        return CloudJobInfo(provider_job_id=provider_job_id, status=None)

    @property
    def supports_webhooks(self):
        return True

    def webhook_secret(self):
        return SECRET

    def parse_webhook(self, payload):
        return CloudJobInfo(provider_job_id=str(payload["run"]), status=STATES.get(payload["state"]),
                            raw_status=payload["state"], error=payload.get("error"), billed_seconds=payload.get("secs"))

    def webhook_job_id(self, payload):
        return payload.get("job")


class Quiet(Hooky):
    provider_name = "quiet"

    @property
    def supports_webhooks(self):
        return False


@pytest.fixture
def hooky(wh_app):
    with registry.override("hooky", Hooky), registry.override("quiet", Quiet):
        yield wh_app


def _job(app, provider="hooky", remote=None, status="queued") -> str:
    with app.app_context(), db.transaction() as s:
        job = Job(name="plugin job", provider=provider, provider_job_id=remote, status=status,
                  rate_usd_per_second=0.001, config={}, dataloader_config=[])
        s.add(job)
        s.flush()
        return job.id


def _status(app, job_id):
    with app.app_context(), db.session() as s:
        return s.get(Job, job_id).status


def _send(client, provider, body, secret=SECRET, **kw):
    data = json.dumps(body)
    return client.post(f"/api/webhooks/{provider}", data=data, headers=signed_headers(secret, data, **kw))


def test_a_plugin_providers_events_move_its_job_once(hooky):
    c = hooky.test_client()
    job_id = _job(hooky, remote="run-1")
    r = _send(c, "hooky", {"run": "run-1", "state": "running"}, msg_id="msg_one")
    assert r.status_code == 200 and r.get_json()["outcome"] == "applied", r.get_json()
    assert _status(hooky, job_id) == "running"
    again = _send(c, "hooky", {"run": "run-1", "state": "running"}, msg_id="msg_one")  # a redelivery
    assert again.get_json()["outcome"] == "duplicate"
    done = _send(c, "hooky", {"run": "run-1", "state": "done", "secs": 12.5})
    assert done.get_json()["outcome"] == "applied" and _status(hooky, job_id) == "completed"
    late = _send(c, "hooky", {"run": "run-1", "state": "running"})
    assert late.get_json()["outcome"] == "stale" and _status(hooky, job_id) == "completed"
    with hooky.app_context(), db.session() as s:
        rows = s.query(WebhookDelivery).filter(WebhookDelivery.provider == "hooky").all()
        assert len(rows) == 3 and all(r.webhook_id.startswith("hooky:") for r in rows)
        assert s.get(Job, job_id).billed_seconds == 12.5


def test_an_event_before_the_launch_returned_binds_to_the_job_it_names(hooky):
    c = hooky.test_client()
    job_id = _job(hooky, remote=None, status="uploading")
    r = _send(c, "hooky", {"run": "run-9", "state": "running", "job": job_id})
    assert r.get_json()["outcome"] == "applied"
    with hooky.app_context(), db.session() as s:
        job = s.get(Job, job_id)
        assert job.provider_job_id == "run-9" and job.status == "running"
    other = _send(c, "hooky", {"run": "run-10", "state": "running", "job": job_id})  # it has its run now
    assert other.get_json()["outcome"] == "ignored"


def test_unsigned_forged_and_unknown_receivers_are_refused_and_write_nothing(hooky):
    c = hooky.test_client()
    job_id = _job(hooky, remote="run-2")
    body = json.dumps({"run": "run-2", "state": "broke"})
    assert c.post("/api/webhooks/hooky", data=body, headers={"Content-Type": "application/json"}).status_code == 401
    forged = _send(c, "hooky", {"run": "run-2", "state": "broke"}, secret="whsec_" + "d3Jvbmctc2VjcmV0LXdyb25n")
    assert forged.status_code == 401 and forged.mimetype == "application/problem+json"
    assert _send(c, "quiet", {"run": "run-2", "state": "broke"}).status_code == 404  # takes no webhooks
    assert _send(c, "nosuch", {"run": "run-2", "state": "broke"}).status_code == 404
    assert _status(hooky, job_id) == "queued"
    with hooky.app_context(), db.session() as s:
        assert s.query(WebhookDelivery).filter(WebhookDelivery.provider.in_(("hooky", "quiet"))).count() == 0


def test_with_sign_in_on_the_receiver_needs_only_the_signature(make_app):
    app = make_app(STCLOUD_AUTH="on")
    with registry.override("hooky", Hooky):
        c = app.test_client()
        job_id = _job(app, remote="run-3")
        r = _send(c, "hooky", {"run": "run-3", "state": "running"})  # no session, no key, no CSRF token
        assert r.status_code == 200 and r.get_json()["outcome"] == "applied"
        assert _status(app, job_id) == "running"
        assert c.get("/api/cloud/jobs").status_code == 401  # the rest of the API still needs sign-in
