"""POST /api/webhooks/replicate through the Flask test client, with the fake Replicate
serving the signing secret over loopback."""
from __future__ import annotations

import json
import time

import pytest

from stcloud import db
from stcloud.models import JobEvent, JobLogChunk, WebhookDelivery
from tests.webhooks.conftest import RATE, configure, get_job, make_job, post, prediction, send, signed_headers

PID = "abcdefghijklmnopqrstuvwxyz"


def deliveries(app):
    with app.app_context(), db.session() as s:
        return {d.webhook_id: (d.outcome, d.job_id, d.event_status, d.source_ip)
                for d in s.query(WebhookDelivery).all()}


def events(app, job_id):
    with app.app_context(), db.session() as s:
        return [(e.from_status, e.to_status, e.accepted, e.source)
                for e in s.query(JobEvent).filter_by(job_id=job_id).order_by(JobEvent.id)]


def log_text(app, job_id):
    with app.app_context(), db.session() as s:
        return b"".join(c.data for c in s.query(JobLogChunk).filter_by(job_id=job_id)
                        .order_by(JobLogChunk.offset)).decode()


def assert_problem(resp, status):
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert body["status"] == status and body["detail"]
    return body


# ---- signatures ---------------------------------------------------------------------------

def test_independent_signer_accepted_and_applied(wh_app, wh_client, fake):
    job_id = make_job(wh_app, PID)
    r = send(wh_client, fake.webhook_secret, prediction(PID, "processing", logs="step 1/10 loss=0.5\n",
                                                        started_at="2025-01-02T03:05:00.000000Z"))
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["outcome"] == "applied"
    job = get_job(wh_app, job_id)
    assert job.status == "running"
    assert job.started_at.isoformat().startswith("2025-01-02T03:05:00")  # provider time, not arrival
    assert log_text(wh_app, job_id) == "step 1/10 loss=0.5\n"
    assert job.progress["step"] == 1
    assert events(wh_app, job_id) == [("queued", "running", True, "webhook")]


def test_admin_token_not_needed_and_no_csrf(make_app, fake, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_test_token")
    monkeypatch.setenv("REPLICATE_BASE_URL", fake.base_url)
    app = make_app(STCLOUD_ADMIN_TOKEN="admin-secret")
    make_job(app, PID)
    r = send(app.test_client(), fake.webhook_secret, prediction(PID, "processing"))
    assert r.status_code == 200, r.get_data(as_text=True)
    # the admin routes are still protected
    assert app.test_client().get("/api/cloud/webhooks/deliveries").status_code == 401


def _bad_cases(secret, body):
    good = signed_headers(secret, body)
    altered = body[:-2] + ("9" if body[-2] != "9" else "8") + body[-1]
    yield "bad signature", {**good, "webhook-signature": "v1," + "A" * 43 + "="}, body
    yield "wrong secret", signed_headers("whsec_" + "QUJD" * 8, body), body
    # computed when each case is sent (the generator is lazy), with a margin over the ±300 s
    # tolerance so a slow machine cannot drift a case back inside the window
    yield "stale", signed_headers(secret, body, timestamp=int(time.time()) - 310), body
    yield "future", signed_headers(secret, body, timestamp=int(time.time()) + 310), body
    yield "altered by one byte", good, altered
    yield "no comma", {**good, "webhook-signature": good["webhook-signature"].replace(",", "")}, body
    yield "bad timestamp", {**good, "webhook-timestamp": "yesterday"}, body
    yield "binary garbage signature", {**good, "webhook-signature": "v1,\x7f\x7f"}, body
    for h in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        yield f"missing {h}", {k: v for k, v in good.items() if k != h}, body
    yield "no headers", {"Content-Type": "application/json"}, body


def test_refused_deliveries_are_401_never_500(wh_app, wh_client, fake):
    job_id = make_job(wh_app, PID)
    body = json.dumps(prediction(PID, "succeeded", metrics={"predict_time": 100.0}))
    for name, headers, data in _bad_cases(fake.webhook_secret, body):
        r = post(wh_client, data, headers)
        problem = assert_problem(r, 401)
        assert problem["code"], name
    # nothing happened and nothing was recorded
    assert get_job(wh_app, job_id).status == "queued"
    assert deliveries(wh_app) == {}
    # fetched once, re-fetched once on the first mismatch: forgeries do not hammer Replicate
    assert len(fake.requests_to("GET", r"/v1/webhooks/default/secret")) == 2


def test_unsigned_delivery_refused_by_default(wh_client):
    # the seeds' troubleshooting command: curl -X POST .../api/webhooks/replicate -d '{}'
    r = wh_client.post("/api/webhooks/replicate", data="{}",
                       content_type="application/x-www-form-urlencoded")
    assert_problem(r, 401)


def test_signature_not_required_when_switched_off(wh_app, wh_client):
    configure(wh_app, webhook_require_signature=False)
    job_id = make_job(wh_app, PID)
    body = json.dumps(prediction(PID, "processing"))
    r1 = post(wh_client, body, {"Content-Type": "application/json"})
    r2 = post(wh_client, body, {"Content-Type": "application/json"})
    assert r1.get_json()["outcome"] == "applied" and r2.get_json()["outcome"] == "duplicate"
    assert get_job(wh_app, job_id).status == "running"


def test_authentic_but_not_json_is_400(wh_client, fake):
    for body in ("not json", "[1, 2]", "[" * 100_000):
        assert_problem(send(wh_client, fake.webhook_secret, body), 400)


# ---- dedupe, order, unknown ids ---------------------------------------------------------

def test_replay_of_same_webhook_id_has_no_second_effect(wh_app, wh_client, fake):
    job_id = make_job(wh_app, PID)
    body = json.dumps(prediction(PID, "processing", logs="line 1\n"))
    headers = signed_headers(fake.webhook_secret, body)
    first = post(wh_client, body, headers)
    assert first.get_json()["outcome"] == "applied"
    size_after_first = get_job(wh_app, job_id).log_size
    # Replicate retries with the same webhook-id (re-signed with a fresh timestamp)
    again = signed_headers(fake.webhook_secret, body, msg_id=headers["webhook-id"])
    for h in (headers, again):
        r = post(wh_client, body, h)
        assert r.status_code == 200 and r.get_json()["outcome"] == "duplicate"
    job = get_job(wh_app, job_id)
    assert job.log_size == size_after_first and log_text(wh_app, job_id) == "line 1\n"
    assert len(events(wh_app, job_id)) == 1
    assert list(deliveries(wh_app).values()) == [("applied", job_id, "processing", "127.0.0.1")]


def test_events_out_of_order_change_nothing(wh_app, wh_client, fake):
    job_id = make_job(wh_app, PID)
    done = prediction(PID, "succeeded", logs="a\nb\nc\n", output=["https://x.invalid/lora.safetensors"],
                      started_at="2025-01-02T03:05:00.000000Z", completed_at="2025-01-02T04:05:00.000000Z",
                      metrics={"predict_time": 3600.0})
    assert send(wh_client, fake.webhook_secret, done).get_json()["outcome"] == "applied"
    before = get_job(wh_app, job_id)
    late = prediction(PID, "processing", logs="a\n", started_at="2025-01-02T03:05:00.000000Z")
    r = send(wh_client, fake.webhook_secret, late)
    assert r.status_code == 200 and r.get_json()["outcome"] == "stale"
    late_start = prediction(PID, "starting")
    assert send(wh_client, fake.webhook_secret, late_start).get_json()["outcome"] == "stale"
    after = get_job(wh_app, job_id)
    assert after.status == "completed"
    assert (after.log_size, after.cost_usd, after.completed_at, after.outputs) == \
        (before.log_size, before.cost_usd, before.completed_at, before.outputs)
    assert log_text(wh_app, job_id) == "a\nb\nc\n"
    # "succeeded" for a queued job implies it ran: queued -> running -> completed
    accepted = [e for e in events(wh_app, job_id) if e[2]]
    assert accepted == [("queued", "running", True, "webhook"), ("running", "completed", True, "webhook")]
    refused = [e[:2] for e in events(wh_app, job_id) if not e[2]]
    assert refused == [("completed", "running"), ("completed", "queued")]
    assert after.cost_usd == pytest.approx(3600.0 * RATE)
    assert after.started_at.isoformat().startswith("2025-01-02T03:05:00")
    assert after.completed_at.isoformat().startswith("2025-01-02T04:05:00")


def test_unknown_prediction_is_ignored_with_200(wh_app, wh_client, fake):
    r = send(wh_client, fake.webhook_secret, prediction("zzzzzzzzzzzzzzzzzzzzzzzzzz", "succeeded"))
    assert r.status_code == 200 and r.get_json()["outcome"] == "ignored"
    r = send(wh_client, fake.webhook_secret, {"status": "succeeded"})
    assert r.status_code == 200 and r.get_json()["outcome"] == "ignored"
    assert sorted(o for o, *_ in deliveries(wh_app).values()) == ["ignored", "ignored"]


def test_other_providers_jobs_are_not_touched(wh_app, wh_client, fake):
    with wh_app.app_context(), db.session() as s:
        from stcloud.models import Job
        s.add(Job(name="w", provider="worker", provider_job_id=PID, status="queued", config={},
                  dataloader_config=[]))
    assert send(wh_client, fake.webhook_secret, prediction(PID, "processing")).get_json()["outcome"] == "ignored"


# ---- secret: rotation, unavailability -----------------------------------------------------

def test_secret_rotation(wh_app, wh_client, fake):
    job_id = make_job(wh_app, PID)
    old = fake.webhook_secret
    assert send(wh_client, old, prediction(PID, "starting")).status_code == 200
    new = fake.rotate_secret()
    # signed with the new secret: mismatch against the cached one -> one re-fetch -> accepted
    r = send(wh_client, new, prediction(PID, "processing"))
    assert r.status_code == 200 and r.get_json()["outcome"] == "applied"
    assert len(fake.requests_to("GET", r"/v1/webhooks/default/secret")) == 2
    # the old secret no longer verifies
    assert_problem(send(wh_client, old, prediction(PID, "succeeded")), 401)
    assert get_job(wh_app, job_id).status == "running"
    assert send(wh_client, new, prediction(PID, "succeeded")).status_code == 200
    assert get_job(wh_app, job_id).status == "completed"


def test_forged_signatures_refetch_at_most_once_per_interval(wh_app, wh_client, fake):
    make_job(wh_app, PID)
    assert send(wh_client, fake.webhook_secret, prediction(PID, "starting")).status_code == 200
    forger = "whsec_" + "Zm9yZ2Vk" * 4
    for _ in range(5):
        assert_problem(send(wh_client, forger, prediction(PID, "succeeded")), 401)
    # the first mismatch re-fetches (it could be a rotation); the others are throttled
    assert len(fake.requests_to("GET", r"/v1/webhooks/default/secret")) == 2


def test_rotation_refetch_after_interval(wh_app, wh_client, fake):
    from stcloud.webhooks import service

    make_job(wh_app, PID)
    with wh_app.app_context():
        cache = service.secret_cache()
    now = [1000.0]
    cache._clock = lambda: now[0]
    assert send(wh_client, fake.webhook_secret, prediction(PID, "starting")).status_code == 200
    forger = "whsec_" + "Zm9yZ2Vk" * 4
    assert_problem(send(wh_client, forger, prediction(PID, "processing")), 401)  # re-fetch 1
    now[0] += cache.min_refresh_seconds - 1
    assert_problem(send(wh_client, forger, prediction(PID, "processing")), 401)  # throttled
    assert len(fake.requests_to("GET", r"/v1/webhooks/default/secret")) == 2
    now[0] += 2
    assert_problem(send(wh_client, forger, prediction(PID, "processing")), 401)  # re-fetch 2
    assert len(fake.requests_to("GET", r"/v1/webhooks/default/secret")) == 3


@pytest.mark.parametrize("fault", ["503", "500", "drop", "429"])
def test_secret_unreachable_is_503(wh_app, wh_client, fake, fault):
    make_job(wh_app, PID)
    fake.inject("GET", r"/v1/webhooks/default/secret", fault, times=None, retry_after=7)
    started = time.monotonic()
    r = send(wh_client, fake.webhook_secret, prediction(PID, "processing"))
    assert time.monotonic() - started < 5  # no client-side retry loop inside the request
    assert_problem(r, 503)
    assert r.headers.get("Retry-After")
    assert deliveries(wh_app) == {}
    fake.clear_faults()
    assert send(wh_client, fake.webhook_secret, prediction(PID, "processing")).status_code == 200


def test_secret_unreachable_when_replicate_down(wh_app, wh_client, monkeypatch):
    from tests.conftest import free_port

    monkeypatch.setenv("REPLICATE_BASE_URL", f"http://127.0.0.1:{free_port()}")
    body = prediction(PID, "processing")
    r = send(wh_client, "whsec_" + "QUJD" * 8, body)
    assert_problem(r, 503)


def test_no_token_is_503_with_the_seeds_wording(wh_client, monkeypatch, fake):
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    r = send(wh_client, fake.webhook_secret, prediction(PID, "processing"))
    assert "REPLICATE_API_TOKEN not set" in assert_problem(r, 503)["detail"]


def test_token_rejected_is_503(wh_client, monkeypatch, fake):
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_wrong")
    assert "REPLICATE_API_TOKEN" in assert_problem(send(wh_client, fake.webhook_secret,
                                                        prediction(PID)), 503)["detail"]


# ---- allowlist ----------------------------------------------------------------------------

SEEDS = ["34.82.0.0/16", "35.185.0.0/16"]


def test_allowlist_peer_inside_and_outside(wh_app, wh_client, fake):
    configure(wh_app, webhook_allowed_ips=SEEDS)
    make_job(wh_app, PID)
    for peer in ("34.82.10.20", "35.185.255.1"):
        assert send(wh_client, fake.webhook_secret, prediction(PID), remote_addr=peer).status_code == 200
    for peer in ("34.83.0.1", "127.0.0.1", "10.0.0.5"):
        body = assert_problem(send(wh_client, fake.webhook_secret, prediction(PID), remote_addr=peer), 403)
        assert peer in body["detail"]
    # the source address is recorded
    assert {ip for *_, ip in deliveries(wh_app).values()} == {"34.82.10.20", "35.185.255.1"}


def test_allowlist_checked_before_the_body_or_the_secret(wh_app, wh_client, fake):
    configure(wh_app, webhook_allowed_ips=SEEDS)
    r = post(wh_client, "x" * 100, {}, remote_addr="203.0.113.1")
    assert_problem(r, 403)
    assert fake.requests_to("GET", r"/v1/webhooks/default/secret") == []


def test_allowlist_ipv6(wh_app, wh_client, fake):
    configure(wh_app, webhook_allowed_ips=["2001:db8:1::/48", "34.82.0.0/16"])
    make_job(wh_app, PID)
    assert send(wh_client, fake.webhook_secret, prediction(PID), remote_addr="2001:db8:1::99").status_code == 200
    assert send(wh_client, fake.webhook_secret, prediction(PID), remote_addr="2001:db8:2::1").status_code == 403
    # an IPv4 client seen through a dual-stack socket
    assert send(wh_client, fake.webhook_secret, prediction(PID), remote_addr="::ffff:34.82.0.9").status_code == 200


def _xff(client, secret, peer, xff):
    data = json.dumps(prediction(PID))
    return post(client, data, {**signed_headers(secret, data), "X-Forwarded-For": xff}, remote_addr=peer)


def test_xff_from_trusted_proxy(wh_app, wh_client, fake):
    configure(wh_app, webhook_allowed_ips=SEEDS, trusted_proxies=["127.0.0.1/32"])
    make_job(wh_app, PID)
    assert _xff(wh_client, fake.webhook_secret, "127.0.0.1", "34.82.1.1").status_code == 200
    # proxy appended the real (outside) client after a forged Replicate address
    assert _xff(wh_client, fake.webhook_secret, "127.0.0.1", "34.82.1.1, 198.51.100.2").status_code == 403
    # trusted proxy but no header: the proxy itself is the client, not allowlisted
    assert send(wh_client, fake.webhook_secret, prediction(PID), remote_addr="127.0.0.1").status_code == 403


def test_xff_from_untrusted_peer_is_ignored(wh_app, wh_client, fake):
    configure(wh_app, webhook_allowed_ips=SEEDS, trusted_proxies=["127.0.0.1/32"])
    make_job(wh_app, PID)
    r = _xff(wh_client, fake.webhook_secret, "198.51.100.2", "34.82.1.1")
    assert "198.51.100.2" in assert_problem(r, 403)["detail"]
    # and with no trusted proxies at all (the default), even loopback's header is ignored
    configure(wh_app, trusted_proxies=[])
    assert _xff(wh_client, fake.webhook_secret, "127.0.0.1", "34.82.1.1").status_code == 403


# ---- body size ------------------------------------------------------------------------------

def test_ten_mib_log_body_accepted(wh_app, wh_client, fake):
    job_id = make_job(wh_app, PID)
    line = "step 5/100 loss=0.25 " + "x" * 100 + "\n"
    logs = line * (10 * 1024 * 1024 // len(line) + 1)
    body = json.dumps(prediction(PID, "processing", logs=logs))
    assert len(body) > 10 * 1024 * 1024
    r = send(wh_client, fake.webhook_secret, body)
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    assert get_job(wh_app, job_id).log_size == len(logs.encode())


def test_over_limit_body_is_413(wh_app, wh_client, fake):
    from stcloud.webhooks.service import DEFAULT_MAX_BODY_BYTES

    body = b'{"logs": "' + b"x" * DEFAULT_MAX_BODY_BYTES + b'"}'
    r = post(wh_client, body, signed_headers(fake.webhook_secret, body))
    assert_problem(r, 413)
    assert deliveries(wh_app) == {}


def test_limit_boundary_exact_and_one_over(make_app, fake, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_test_token")
    monkeypatch.setenv("REPLICATE_BASE_URL", fake.base_url)
    limit = 4096
    client = make_app(STCLOUD_WEBHOOK_MAX_BYTES=limit).test_client()
    base = json.dumps({"id": "nope", "status": "processing", "logs": ""})
    exact = base[:-2] + "x" * (limit - len(base)) + base[-2:]
    assert len(exact) == limit
    assert send(client, fake.webhook_secret, exact).get_json()["outcome"] == "ignored"
    over = exact[:-2] + "x" + exact[-2:]
    r = send(client, fake.webhook_secret, over)
    assert_problem(r, 413)
    assert r.get_json()["limit_bytes"] == limit


def test_start_before_the_submit_path_stored_the_prediction_id(wh_app, wh_client, fake):
    # the submit path puts our job id into the prediction input; "start" may arrive before
    # the prediction id is recorded on the job
    job_id = make_job(wh_app, None)
    r = send(wh_client, fake.webhook_secret, prediction(PID, "processing", input={"stcloud_job_id": job_id}))
    assert r.get_json()["outcome"] == "applied" and r.get_json()["job_id"] == job_id
    job = get_job(wh_app, job_id)
    assert job.provider_job_id == PID and job.status == "running"
    # a job already bound to another prediction is never rebound
    other = make_job(wh_app, "x" * 26)
    r = send(wh_client, fake.webhook_secret, prediction("y" * 26, "succeeded", input={"stcloud_job_id": other}))
    assert r.get_json()["outcome"] == "ignored"
    assert get_job(wh_app, other).provider_job_id == "x" * 26


def test_a_settings_change_applies_to_the_next_delivery(wh_app, wh_client, fake):
    """The receiver checks a delivery under its cached settings and re-reads their version
    inside the delivery's transaction: a change made since is seen before anything is written,
    on the streaming fast path and on the ORM path (a status change) alike."""
    make_job(wh_app, PID)
    assert send(wh_client, fake.webhook_secret, prediction(PID)).status_code == 200  # settings cached
    stored = len(deliveries(wh_app))
    configure(wh_app, webhook_allowed_ips=SEEDS)
    for body in (prediction(PID, logs="step 1/2 loss=0.5\n"), prediction(PID, "succeeded", output=[])):
        assert_problem(send(wh_client, fake.webhook_secret, body), 403)
    assert len(deliveries(wh_app)) == stored
    configure(wh_app, webhook_allowed_ips=[])
    r = send(wh_client, fake.webhook_secret, prediction(PID, logs="step 1/2 loss=0.5\n"))
    assert r.status_code == 200 and r.get_json()["outcome"] == "applied"
    configure(wh_app, webhook_require_signature=False)
    r = post(wh_client, json.dumps(prediction(PID, logs="step 1/2 loss=0.5\nstep 2/2 loss=0.4\n")),
             {"webhook-id": "msg_unsigned_after_change"})
    assert r.status_code == 200 and r.get_json()["outcome"] == "applied"
