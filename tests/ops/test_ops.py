"""``/healthz``, ``/readyz`` and ``/metrics``."""
from __future__ import annotations

from datetime import timedelta

import boto3
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stcloud import db, scheduler
from stcloud.models import Job, WebhookDelivery, Worker, utcnow
from stcloud.ops import metrics
from tests.conftest import serve_in_thread

ADMIN = "ops-admin-token"


def samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_healthz_answers_while_the_process_runs(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.json["status"] == "ok" and resp.json["database"]["ok"]


def test_readyz_needs_the_database_and_the_scheduler(app, client):
    resp = client.get("/readyz")
    assert resp.status_code == 503 and "scheduler" in resp.json["problems"][0]
    with app.app_context():
        scheduler.beat()
    resp = client.get("/readyz")
    assert resp.status_code == 200 and resp.json["status"] == "ready"


def test_readyz_is_503_when_the_database_is_gone(make_app, tmp_path):
    app = make_app(STCLOUD_DATABASE_URL=f"sqlite:///{tmp_path}/missing-dir/x.db")
    c = app.test_client()
    assert c.get("/healthz").status_code == 200
    assert c.get("/healthz", headers={"X-Forwarded-Proto": "https"}).status_code == 200
    resp = c.get("/readyz")
    assert resp.status_code == 503 and resp.json["problems"] == ["database unreachable", resp.json["problems"][1]]


@pytest.mark.parametrize("remote, forwarded, trusted, bearer, allowed", [
    ("127.0.0.1", None, [], None, True),                       # loopback, direct
    ("::1", None, [], None, True),
    ("10.9.8.7", None, [], None, False),                       # anyone else needs the key
    ("10.9.8.7", None, [], ADMIN, True),
    ("10.9.8.7", None, ["10.9.8.0/24"], None, True),           # a trusted proxy's own request
    ("127.0.0.1", "203.0.113.9", ["127.0.0.1/32"], None, False),  # relayed for an outside client
    ("127.0.0.1", "203.0.113.9", [], None, False),             # relayed by a proxy nobody declared
    ("127.0.0.1", "203.0.113.9", [], ADMIN, True),
    ("203.0.113.9", "127.0.0.1", [], None, False),             # a forged header means nothing
    ("10.9.8.7", None, [], "wrong", False),
])
def test_who_may_read_metrics(make_app, remote, forwarded, trusted, bearer, allowed):
    app = make_app(STCLOUD_ADMIN_TOKEN=ADMIN)
    c = app.test_client()
    if trusted:
        c.put("/api/cloud/providers/replicate", json={"trusted_proxies": trusted},
              headers={"Authorization": f"Bearer {ADMIN}"})
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    resp = c.get("/metrics", headers=headers, environ_base={"REMOTE_ADDR": remote})
    if allowed:
        assert resp.status_code == 200 and resp.mimetype == "text/plain"
        assert "stcloud_jobs" in resp.text
    else:
        assert resp.status_code in (401, 403) and resp.mimetype == "application/problem+json"


def test_metrics_from_the_database(app, client):
    now = utcnow()
    with app.app_context():
        with db.transaction() as s:
            s.add_all([
                Job(name="a", provider="replicate", status="completed", cost_usd=1.25, completed_at=now),
                Job(name="b", provider="replicate", status="completed", cost_usd=0.75, completed_at=now),
                Job(name="old", provider="replicate", status="completed", cost_usd=9.0,
                    completed_at=now - timedelta(days=400)),
                Job(name="c", provider="replicate", status="running", next_poll_at=now - timedelta(seconds=30)),
                Job(name="d", provider="worker", status="queued"),
                WebhookDelivery(webhook_id="w1", outcome="applied"),
                WebhookDelivery(webhook_id="w2", outcome="applied"),
                WebhookDelivery(webhook_id="w3", outcome="ignored"),
                Worker(name="gpu-1", token_hash="x", last_heartbeat_at=now),
                Worker(name="gpu-2", token_hash="y", last_heartbeat_at=now - timedelta(hours=2)),
                Worker(name="new", token_hash="z"),
            ])
        scheduler.beat()
    got = samples(client.get("/metrics").text)
    assert got[("stcloud_jobs", (("provider", "replicate"), ("status", "completed")))] == 3
    assert got[("stcloud_jobs", (("provider", "replicate"), ("status", "running")))] == 1
    assert got[("stcloud_jobs", (("provider", "worker"), ("status", "queued")))] == 1
    for period in ("daily", "weekly", "monthly"):
        assert got[("stcloud_spend_usd", (("period", period), ("provider", "replicate")))] == pytest.approx(2.0)
    assert got[("stcloud_webhook_deliveries", (("outcome", "applied"), ("provider", "replicate")))] == 2
    assert got[("stcloud_webhook_deliveries", (("outcome", "ignored"), ("provider", "replicate")))] == 1
    assert 29 <= got[("stcloud_poll_latency_seconds", ())] < 120
    assert got[("stcloud_workers", (("state", "alive"),))] == 1
    assert got[("stcloud_workers", (("state", "dead"),))] == 2
    assert got[("stcloud_scheduler_up", ())] == 1


def test_s3_bytes_in_and_out_are_counted(app):
    from stcloud.storage import credentials

    with app.app_context():
        keys = credentials.mint(bucket="*", ttl_seconds=600)
    body = b"x" * (3 * 1024 * 1024 + 17)
    before_in, before_out = metrics.S3_BYTES_IN._value.get(), metrics.S3_BYTES_OUT._value.get()
    with serve_in_thread(app) as url:
        s3 = boto3.client("s3", endpoint_url=f"{url}/api/cloud/storage", region_name="us-east-1",
                          aws_access_key_id=keys["access_key_id"], aws_secret_access_key=keys["secret_access_key"])
        s3.create_bucket(Bucket="counted")
        s3.put_object(Bucket="counted", Key="blob", Body=body)
        assert s3.get_object(Bucket="counted", Key="blob")["Body"].read() == body
        got = samples(app.test_client().get("/metrics").text)
    received = got[("stcloud_s3_received_bytes_total", ())] - before_in
    sent = got[("stcloud_s3_sent_bytes_total", ())] - before_out
    assert len(body) <= received < len(body) + 64 * 1024  # the body (+ chunk framing, bucket XML)
    assert len(body) <= sent < len(body) + 64 * 1024
