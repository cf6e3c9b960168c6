"""End to end over loopback: the fake Replicate creates a prediction with our webhook URL
and sends real signed deliveries to a running server (``live_server``); stcloud fetches
the signing secret from the fake through the official client."""
from __future__ import annotations

import pytest
import requests

from stcloud import db
from stcloud.models import JobEvent, JobLogChunk, WebhookDelivery
from tests.webhooks.conftest import RATE, TOKEN, get_job, make_job


def _log(app, job_id):
    with app.app_context(), db.session() as s:
        return b"".join(c.data for c in s.query(JobLogChunk).filter_by(job_id=job_id)
                        .order_by(JobLogChunk.offset)).decode()


def _deliveries(app):
    with app.app_context(), db.session() as s:
        return [(d.event_status, d.outcome) for d in
                s.query(WebhookDelivery).order_by(WebhookDelivery.received_at)]


def _create(fake, live_server, events=("start", "output", "logs", "completed")):
    client = fake.client(TOKEN)
    return client.predictions.create(
        version=fake.latest_version_id(), input={"config_json": "{}"},
        webhook=f"{live_server}/api/webhooks/replicate", webhook_events_filter=list(events))


def test_start_logs_completed_then_duplicate(wh_app, live_server, fake):
    pred = _create(fake, live_server)
    job_id = make_job(wh_app, pred.id)

    d = fake.send_webhook(pred.id)  # "start": status starting -> queued (no change)
    assert d.ok, (d.status_code, d.response_text)

    fake.start(pred.id, logs="stage: training\nstep 1/10 loss=0.9\n")
    d = fake.send_webhook(pred.id, "logs")
    assert d.ok, d.response_text
    job = get_job(wh_app, job_id)
    assert job.status == "running"
    started = fake.get_prediction(pred.id)["started_at"]
    assert job.started_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ") == started

    fake.append_logs(pred.id, "step 5/10 loss=0.5\n")
    assert fake.send_webhook(pred.id, "logs").ok  # Replicate resends the whole log
    assert _log(wh_app, job_id) == "stage: training\nstep 1/10 loss=0.9\nstep 5/10 loss=0.5\n"
    assert get_job(wh_app, job_id).progress["step"] == 5

    fake.succeed(pred.id, output=["https://replicate.delivery/x/pytorch_lora_weights.safetensors"],
                 predict_time=1234.5, logs="step 10/10 loss=0.1\ndone\n")
    final = fake.send_webhook(pred.id, "completed")
    assert final.ok and final.response_text and '"applied"' in final.response_text
    job = get_job(wh_app, job_id)
    served = fake.get_prediction(pred.id)
    assert job.status == "completed"
    assert job.billed_seconds == 1234.5
    assert job.cost_usd == pytest.approx(1234.5 * RATE)
    assert job.completed_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ") == served["completed_at"]
    assert job.outputs and job.outputs[0]["url"].endswith("pytorch_lora_weights.safetensors")
    full_log = served["logs"]
    assert _log(wh_app, job_id) == full_log and job.log_size == len(full_log.encode())
    assert job.progress["step"] == 10

    # Replicate retries the final event with the same webhook-id: answered 200, no effect
    again = fake.redeliver(final)
    assert again.ok and '"duplicate"' in again.response_text
    after = get_job(wh_app, job_id)
    assert (after.log_size, after.cost_usd, after.completed_at, after.status) == \
        (job.log_size, job.cost_usd, job.completed_at, job.status)
    # four distinct deliveries stored; the duplicate is answered, not stored
    assert _deliveries(wh_app) == [("starting", "applied"), ("processing", "applied"),
                                   ("processing", "applied"), ("succeeded", "applied")]

    with wh_app.app_context(), db.session() as s:
        moves = [(e.from_status, e.to_status) for e in s.query(JobEvent).filter_by(job_id=job_id, accepted=True)
                 .order_by(JobEvent.id)]
    assert moves == [("queued", "running"), ("running", "completed")]
    # the secret was fetched once through the official client
    assert len(fake.requests_to("GET", r"/v1/webhooks/default/secret")) == 1


def test_automatic_deliveries_and_a_late_retry(wh_app, live_server, fake):
    fake.auto_webhooks = True
    pred = _create(fake, live_server, events=("start", "completed"))
    job_id = make_job(wh_app, pred.id)
    fake.flush_webhooks()
    fake.start(pred.id, logs="step 1/4\n")  # "logs" is filtered out: nothing sent
    fake.succeed(pred.id, predict_time=60.0, logs="step 4/4\n")
    fake.flush_webhooks()
    job = get_job(wh_app, job_id)
    assert job.status == "completed" and job.cost_usd == pytest.approx(60.0 * RATE)
    assert _log(wh_app, job_id) == "step 1/4\nstep 4/4\n"
    # an old "start" delivery re-sent late (new id) cannot move the job back
    late = [d for d in fake.deliveries if d.event == "start"][0]
    r = fake.redeliver(late)
    assert r.ok and ('"stale"' in r.response_text or '"duplicate"' in r.response_text)
    assert get_job(wh_app, job_id).status == "completed"


def test_forged_delivery_over_the_network(wh_app, live_server, fake):
    pred = _create(fake, live_server)
    job_id = make_job(wh_app, pred.id)
    fake.succeed(pred.id, predict_time=10.0)
    d = fake.send_webhook(pred.id, signature="v1,Zm9yZ2VkZm9yZ2VkZm9yZ2VkZm9yZ2VkZm9yZ2VkZm9yZ2Vk")
    assert d.status_code == 401
    d = fake.send_webhook(pred.id, timestamp=1)
    assert d.status_code == 401
    assert get_job(wh_app, job_id).status == "queued"


def test_chunked_body_over_the_limit_is_413(make_app, fake, monkeypatch):
    """No Content-Length: the limit is enforced while reading the stream."""
    import threading

    from werkzeug.serving import make_server

    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    monkeypatch.setenv("REPLICATE_BASE_URL", fake.base_url)
    app = make_app(STCLOUD_WEBHOOK_MAX_BYTES=1024 * 1024)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        def chunks():
            for _ in range(40):
                yield b"x" * 65536

        r = requests.post(f"http://127.0.0.1:{server.server_port}/api/webhooks/replicate", data=chunks(),
                          headers={"webhook-id": "msg_1", "webhook-timestamp": "1", "webhook-signature": "v1,x"},
                          timeout=10)
        assert r.status_code == 413
        assert r.headers["Content-Type"].startswith("application/problem+json")
    finally:
        server.shutdown()
        t.join(5)
