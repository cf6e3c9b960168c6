"""Notifications against real receivers on loopback: a Slack/Discord-style incoming-webhook
server, a real SMTP server (aiosmtpd) and a generic webhook verified with the
``standardwebhooks`` library. Nothing is sent inside the transaction that queues it."""
from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from standardwebhooks import Webhook, WebhookVerificationError

from stcloud import db
from stcloud.models import Job, Notification, utcnow
from stcloud.notify import sender
from stcloud.trainer.sample import ensure_sample
from tests.conftest import csrf_of, free_port
from tests.jobs.factories import make_job

URL = "/api/cloud/settings/notifications"


class Receiver:
    """Incoming-webhook receiver: records (path, headers, body); answers ``codes`` in turn
    (then 200)."""

    def __init__(self):
        self.requests: list[tuple[str, dict, bytes]] = []
        self.codes: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                code = outer.codes.pop(0) if outer.codes else 200
                outer.requests.append((self.path, dict(self.headers), body))
                self.send_response(code)
                self.end_headers()
                self.wfile.write(b"ok" if code == 200 else b"try later")

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, path):
        return [json.loads(b) for p, _h, b in self.requests if p == path]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd API
        self.messages.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def smtp():
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, box
    controller.stop()


def _configure(client, receiver, smtp_port, **extra):
    body = {"slack": {"enabled": True, "url": f"{receiver.url}/slack"},
            "discord": {"enabled": True, "url": f"{receiver.url}/discord"},
            "webhook": {"enabled": True, "url": f"{receiver.url}/hook"},
            "email": {"enabled": True, "host": "127.0.0.1", "port": smtp_port, "sender": "stcloud@example.com",
                      "to": ["ops@example.com"], "username": "", "password": "smtp-pass-xyz"}, **extra}
    r = client.put(URL, json=body)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()


def _rows(app):
    with app.app_context(), db.session() as s:
        return [(n.event, n.channel, n.status, n.attempts, n.last_error) for n in
                s.query(Notification).order_by(Notification.channel).all()]


def _send(app):
    with app.app_context():
        return sender.send_due()


def test_settings_api_never_returns_secrets(client, receiver):
    r = client.put(URL, json={"slack": {"enabled": True, "url": f"{receiver.url}/slack"},
                              "webhook": {"enabled": True, "url": f"{receiver.url}/hook"},
                              "email": {"password": "smtp-pass-xyz"}})
    assert r.status_code == 200, r.get_data(as_text=True)
    put = r.get_json()
    assert put["webhook_secret"].startswith("whsec_")  # minted by stcloud, shown once
    got = client.get(URL)
    text = got.get_data(as_text=True)
    assert receiver.url not in text and "smtp-pass-xyz" not in text and put["webhook_secret"] not in text
    body = got.get_json()
    assert body["slack"] == {"enabled": True, "url_set": True}
    assert body["webhook"]["secret_set"] is True and body["email"]["password_set"] is True
    assert "webhook_secret" not in client.put(URL, json={"events": ["job.failed"]}).get_json()
    assert client.get(URL).get_json()["events"] == ["job.failed"]


@pytest.mark.parametrize("body, field", [
    ({"slack": {"enabled": True}}, "slack.url"),
    ({"discord": {"url": "ftp://x"}}, "discord.url"),
    ({"events": ["job.exploded"]}, "events"),
    ({"email": {"enabled": True, "host": "h"}}, "email.sender"),
    ({"email": {"port": 70000}}, "email.port"),
    ({"webhook": {"secret": "plain"}}, "webhook.secret"),
    ({"pager": {}}, "pager"),
])
def test_settings_bad_input_400(client, body, field):
    r = client.put(URL, json=body)
    assert r.status_code == 400 and r.mimetype == "application/problem+json", r.get_data(as_text=True)
    assert r.get_json()["field"] == field


def test_job_end_notifies_every_channel_after_commit(app, client, receiver, smtp):
    controller, box = smtp
    secret = _configure(client, receiver, controller.port)["webhook_secret"]
    job_id = make_job(app, "failed", provider="worker", name="lr-sweep-3")
    with app.app_context(), db.transaction() as s:  # the error is written after the move
        s.get(Job, job_id).error = "CUDA out of memory\nTraceback ..."
    assert receiver.requests == [] and box.messages == []  # queued only, nothing sent yet
    assert sorted(r[1] for r in _rows(app)) == ["discord", "email", "slack", "webhook"]

    assert _send(app) == 4
    assert all(r[2] == "sent" and r[3] == 1 for r in _rows(app))
    slack = receiver.bodies("/slack")[0]["text"]
    assert "lr-sweep-3" in slack and "failed" in slack and "CUDA out of memory" in slack
    assert "lr-sweep-3" in receiver.bodies("/discord")[0]["content"]
    path, headers, raw = next(x for x in receiver.requests if x[0] == "/hook")
    payload = Webhook(secret).verify(raw, {k.lower(): v for k, v in headers.items()})
    assert payload["type"] == "job.failed" and payload["data"]["job"]["id"] == job_id
    assert payload["data"]["job"]["error"].startswith("CUDA out of memory")
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 32).verify(raw, {k.lower(): v for k, v in headers.items()})
    assert len(box.messages) == 1
    mail = box.messages[0]
    assert mail.mail_from == "stcloud@example.com" and mail.rcpt_tos == ["ops@example.com"]
    content = mail.content.decode()
    assert "Subject: stcloud: job lr-sweep-3 failed" in content and "CUDA out of memory" in content
    assert _send(app) == 0  # nothing twice


def test_failed_delivery_is_retried_then_given_up(app, client, receiver):
    client.put(URL, json={"slack": {"enabled": True, "url": f"{receiver.url}/slack"}, "events": ["job.completed"]})
    make_job(app, "cancelled", provider="worker")  # not subscribed: nothing queued
    assert _rows(app) == []
    make_job(app, "completed", provider="worker", name="ok-run")
    receiver.codes = [500]
    assert _send(app) == 0
    (event, channel, status, attempts, error), = _rows(app)
    assert (event, status, attempts) == ("job.completed", "pending", 1) and "HTTP 500" in error
    assert _send(app) == 0  # backoff: not due yet

    def make_due():
        with app.app_context(), db.transaction() as s:
            for n in s.query(Notification).all():
                n.next_attempt_at = utcnow() - timedelta(seconds=1)

    make_due()
    assert _send(app) == 1 and _rows(app)[0][2:4] == ("sent", 2)
    assert len(receiver.bodies("/slack")) == 2  # the failed try and the delivered one

    make_job(app, "completed", provider="worker", name="never-arrives")
    receiver.codes = [503] * sender.MAX_ATTEMPTS
    for _ in range(sender.MAX_ATTEMPTS):
        make_due()
        _send(app)
    failed = [r for r in _rows(app) if r[2] == "failed"]
    assert len(failed) == 1 and failed[0][3] == sender.MAX_ATTEMPTS and "HTTP 503" in failed[0][4]
    log = client.get("/api/cloud/notifications").get_json()["deliveries"]
    assert {d["status"] for d in log} == {"sent", "failed"} and "payload" not in log[0]


def test_spend_block_notifies(app, client, receiver):
    client.put(URL, json={"slack": {"enabled": True, "url": f"{receiver.url}/slack"}})
    assert client.put("/api/cloud/rates", json={"provider": "worker", "usd_per_hour": 36}).status_code == 200
    r = client.put("/api/cloud/cost-limits/worker",
                   json={"enabled": True, "amount_usd": 0.0001, "period": "monthly", "action": "block"})
    assert r.status_code == 200, r.get_data(as_text=True)
    sample = ensure_sample(app.config["STCLOUD_HOME"])
    body = {"provider": "worker", "config": json.loads(open(sample["config_path"]).read()),
            "dataloader_config": json.loads(open(sample["dataloader_path"]).read())}
    r = client.post("/api/cloud/jobs/submit", json=body)
    assert r.status_code == 402, r.get_data(as_text=True)
    assert [x[0] for x in _rows(app)] == ["spend.block"]
    assert _send(app) == 1
    assert "refused" in receiver.bodies("/slack")[0]["text"] and "worker" in receiver.bodies("/slack")[0]["text"]


def test_settings_page_section(app, client, receiver):
    html = client.get("/settings").get_data(as_text=True)
    assert "/settings/notifications" in html
    section = client.get("/settings/notifications").get_data(as_text=True)
    assert 'id="notify-form"' in section and "Nothing sent yet" in section
    token = csrf_of(client)
    r = client.post("/settings/notifications", headers={"HX-Request": "true", "X-CSRF-Token": token},
                    data={"events": ["job.completed"], "slack_enabled": "1", "slack_url": f"{receiver.url}/slack"})
    assert r.status_code == 200 and "saved" in r.get_data(as_text=True)
    assert receiver.url not in r.get_data(as_text=True)
    r = client.post("/settings/notifications", headers={"HX-Request": "true", "X-CSRF-Token": token},
                    data={"discord_enabled": "1"})
    assert r.status_code == 422 and "discord.url is required" in r.get_data(as_text=True)
    assert client.get(URL).get_json()["slack"]["enabled"] is True
