"""Per-user notification preferences (``GET|PUT /api/cloud/me/notifications`` and the page):
each user receives by e-mail only the events they chose, about what is theirs — their own jobs
and submits; approval requests go to admins — delivered by a real SMTP server (aiosmtpd)."""
from __future__ import annotations

import pytest

from stcloud import db
from stcloud.models import Notification
from stcloud.notify import sender
from tests.accounts.helpers import login, team
from tests.conftest import csrf_of
from tests.jobs.factories import make_job
from tests.notify.test_notify import smtp  # noqa: F401 - fixture

ME = "/api/cloud/me/notifications"
SETTINGS = "/api/cloud/settings/notifications"


@pytest.fixture
def secure(make_app):
    return make_app(STCLOUD_AUTH="on")


@pytest.fixture
def crew(secure):
    return team(secure)


def _smtp_for_users(c, admin, port, **email):
    """SMTP host and sender set; the instance's own e-mail list stays off unless asked."""
    body = {"email": {"host": "127.0.0.1", "port": port, "sender": "stcloud@example.com", **email}}
    r = c.put(SETTINGS, json=body, headers=admin.headers)
    assert r.status_code == 200, r.get_data(as_text=True)


def _personal_rows(app):
    with app.app_context(), db.session() as s:
        return sorted((n.event, n.recipient) for n in s.query(Notification).all() if n.recipient)


def test_preferences_api_per_role(secure, crew):
    c = secure.test_client()
    admin, member, viewer = crew["admin"], crew["member"], crew["viewer"]
    got = c.get(ME, headers=member.headers).json
    assert got["events"] == [] and got["email"] is None and got["smtp_configured"] is False
    assert "approval.requested" not in [e["event"] for e in got["available_events"]]
    assert "approval.requested" in [e["event"] for e in c.get(ME, headers=admin.headers).json["available_events"]]

    for body, field in (({"events": ["job.exploded"]}, "events"), ({"events": ["approval.requested"]}, "events"),
                        ({"events": "job.failed"}, "events"), ({"email": "not-an-address"}, "email"),
                        ({"email": 7}, "email"), ({"phone": "123"}, "phone")):
        r = c.put(ME, json=body, headers=member.headers)
        assert r.status_code == 400 and r.mimetype == "application/problem+json", (body, r.json)
        assert r.json["field"] == field, (body, r.json)
    assert c.get(ME, headers=member.headers).json["events"] == []  # nothing stored on a refusal

    r = c.put(ME, json={"events": ["job.failed", "job.completed"], "email": "mia@example.com"}, headers=member.headers)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.json["events"] == ["job.completed", "job.failed"] and r.json["email"] == "mia@example.com"
    again = c.put(ME, json=r.json, headers=member.headers)  # a GET answer can be PUT back
    assert again.status_code == 200 and again.json == r.json
    # every signed-in user keeps their own: a viewer too
    assert c.put(ME, json={"events": ["job.failed"]}, headers=viewer.headers).status_code == 200
    assert c.get(ME, headers=admin.headers).json["events"] == []
    assert c.get(ME).status_code == 401
    audit = c.get("/api/cloud/audit?action=user.notifications", headers=admin.headers).json["records"]
    assert {a["actor"] for a in audit if a["outcome"] == "ok"} == {"mia", "vic"}


def test_without_an_account_the_api_is_404_and_the_page_says_why(client):
    r = client.get(ME)  # auth off (or the admin token): no account to keep preferences on
    assert r.status_code == 404 and "user account" in r.json["detail"]
    assert client.put(ME, json={"events": []}).status_code == 404
    page = client.get("/account/notifications")
    assert page.status_code == 200 and 'id="prefs-no-account"' in page.get_data(as_text=True)


def test_each_user_gets_only_their_events_by_email(secure, crew, smtp, tmp_path):  # noqa: F811
    controller, box = smtp
    c = secure.test_client()
    admin, mia, max_ = crew["admin"], crew["member"], crew["member2"]
    _smtp_for_users(c, admin, controller.port)
    assert c.put(ME, json={"events": ["job.failed"], "email": "mia@example.com"}, headers=mia.headers).status_code == 200
    assert c.put(ME, json={"events": ["job.completed"], "email": "max@example.com"},
                 headers=max_.headers).status_code == 200
    assert c.put(ME, json={"events": ["approval.requested"], "email": "ada@example.com"},
                 headers=admin.headers).status_code == 200

    make_job(secure, "failed", provider="worker", name="mia-fails", owner_id=mia.user_id)
    make_job(secure, "failed", provider="worker", name="max-fails", owner_id=max_.user_id)  # max did not ask
    make_job(secure, "completed", provider="worker", name="mia-done", owner_id=mia.user_id)  # mia did not ask
    make_job(secure, "completed", provider="worker", name="max-done", owner_id=max_.user_id)
    assert _personal_rows(secure) == [("job.completed", "max@example.com"), ("job.failed", "mia@example.com")]

    # an approval request reaches the admin who asked for it
    assert c.put("/api/cloud/settings/approval", json={"threshold_usd": 0}, headers=admin.headers).status_code == 200
    assert c.put("/api/cloud/rates", json={"provider": "worker", "usd_per_hour": 36},
                 headers=admin.headers).status_code == 200
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "a.txt").write_text("caption\n")
    (ds / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a dataset needs images
    r = c.post("/api/cloud/jobs/submit", headers=mia.headers,
               json={"provider": "worker", "name": "big", "config": {"max_train_steps": 500},
                     "dataloader_config": [{"id": "d", "type": "local", "instance_data_dir": str(ds)}]})
    assert r.status_code == 201 and r.json["job"]["status"] == "pending_approval", r.get_data(as_text=True)
    assert ("approval.requested", "ada@example.com") in _personal_rows(secure)

    with secure.app_context():
        assert sender.send_due() == 3
    got = sorted((tuple(m.rcpt_tos), m.content.decode()) for m in box.messages)
    assert [to for to, _ in got] == [("ada@example.com",), ("max@example.com",), ("mia@example.com",)]
    assert "Subject: stcloud: approval needed for job big" in got[0][1] and "mia" in got[0][1]
    assert "Subject: stcloud: job max-done completed" in got[1][1]
    assert "Subject: stcloud: job mia-fails failed" in got[2][1]
    log = c.get("/api/cloud/notifications", headers=admin.headers).json["deliveries"]
    assert {d["recipient"] for d in log} == {"ada@example.com", "max@example.com", "mia@example.com"}


def test_no_user_mail_without_smtp_and_no_duplicates_with_the_instance_list(secure, crew, smtp):  # noqa: F811
    controller, box = smtp
    c = secure.test_client()
    admin, mia = crew["admin"], crew["member"]
    assert c.put(ME, json={"events": ["job.failed"], "email": "mia@example.com"}, headers=mia.headers).status_code == 200
    make_job(secure, "failed", provider="worker", owner_id=mia.user_id)
    assert _personal_rows(secure) == []  # SMTP not set up: nothing queued for users
    # mia is on the instance's own list for job.failed: one message, from that list
    _smtp_for_users(c, admin, controller.port, enabled=True, to=["mia@example.com"])
    make_job(secure, "failed", provider="worker", name="once", owner_id=mia.user_id)
    assert _personal_rows(secure) == []
    with secure.app_context():
        assert sender.send_due() == 1
    assert [m.rcpt_tos for m in box.messages] == [["mia@example.com"]]


def test_preferences_page(secure, crew):
    c = secure.test_client()
    login(c, "mia")
    page = c.get("/account").get_data(as_text=True)
    assert 'id="notify-prefs-link"' in page
    html = c.get("/account/notifications").get_data(as_text=True)
    assert 'id="prefs-form"' in html and 'id="smtp-missing"' in html and "approval.requested" not in html
    token = csrf_of(c)
    r = c.post("/account/notifications", headers={"HX-Request": "true", "X-CSRF-Token": token},
               data={"events": ["job.failed", "spend.block"], "email": "mia@example.com"})
    assert r.status_code == 200 and "Saved." in r.get_data(as_text=True)
    assert c.get(ME).json["events"] == ["job.failed", "spend.block"]
    r = c.post("/account/notifications", headers={"HX-Request": "true", "X-CSRF-Token": token},
               data={"events": ["job.failed"], "email": "nope"})
    assert r.status_code == 422 and "is not an e-mail address" in r.get_data(as_text=True)
    assert c.get(ME).json["email"] == "mia@example.com"
