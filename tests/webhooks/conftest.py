"""Fixtures for the webhook receiver: a running fake Replicate, an app pointed at it, job
rows created directly with the ORM (no dependency on the submit path), and a signer that
is independent of our code (the ``standardwebhooks`` package)."""
from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from stcloud import db
from stcloud.models import Job
from stcloud.providers import config as provider_config
from tests.fakes.replicate_fake import FakeReplicate

TOKEN = "r8_test_token"
RATE = 0.000975  # $/s recorded on the job


@pytest.fixture
def fake():
    with FakeReplicate(tokens=(TOKEN,)) as f:
        yield f


@pytest.fixture
def wh_app(make_app, fake, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    monkeypatch.setenv("REPLICATE_BASE_URL", fake.base_url)
    return make_app()


@pytest.fixture
def wh_client(wh_app):
    return wh_app.test_client()


def configure(app, **changes):
    with app.app_context():
        return provider_config.update_config("replicate", changes)


def make_job(app, prediction_id: str | None, *, status: str = "queued", rate: float | None = RATE) -> str:
    with app.app_context(), db.session() as s:
        job = Job(name=f"job-{prediction_id}", provider="replicate", provider_job_id=prediction_id,
                  status=status, rate_usd_per_second=rate, config={}, dataloader_config=[])
        s.add(job)
        s.flush()
        return job.id


def get_job(app, job_id: str) -> Job:
    with app.app_context(), db.session() as s:
        return s.get(Job, job_id)


def prediction(pid: str = "p" * 26, status: str = "processing", logs: str = "", **extra) -> dict:
    body = {"id": pid, "status": status, "logs": logs, "output": None, "error": None,
            "created_at": "2025-01-02T03:04:05.000000Z", "started_at": None, "completed_at": None,
            "urls": {}, "version": "v" * 64}
    body.update(extra)
    return body


def new_id() -> str:
    return "msg_" + secrets.token_hex(12)


def signed_headers(secret: str, body: bytes | str, *, msg_id: str | None = None,
                   timestamp: int | None = None) -> dict:
    """Headers signed by the independent ``standardwebhooks`` package."""
    data = body.decode() if isinstance(body, bytes) else body
    ts = int(time.time()) if timestamp is None else timestamp
    mid = msg_id or new_id()
    sig = Webhook(secret).sign(mid, datetime.fromtimestamp(ts, tz=UTC), data)
    return {"webhook-id": mid, "webhook-timestamp": str(ts), "webhook-signature": sig,
            "Content-Type": "application/json"}


def post(client, body, headers: dict, remote_addr: str = "127.0.0.1", **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post("/api/webhooks/replicate", data=data, headers=headers,
                       environ_base={"REMOTE_ADDR": remote_addr}, **kw)


def send(client, secret: str, body, remote_addr: str = "127.0.0.1", **hkw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return post(client, data, signed_headers(secret, data, **hkw), remote_addr=remote_addr)
