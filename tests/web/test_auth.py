"""Admin token on/off, login form, bearer, CSRF."""
from pathlib import Path

import pytest

from tests.conftest import csrf_of
from tests.jobs.factories import make_job

TOKEN = "s3cret-admin-token"


@pytest.fixture
def locked(make_app):
    return make_app(STCLOUD_ADMIN_TOKEN=TOKEN)


def _initial_password(app) -> str:
    return (Path(app.config["STCLOUD_HOME"]) / "initial-admin-password").read_text().strip()


def test_auth_off_everything_open(client):
    assert client.get("/api/cloud/jobs").status_code == 200
    assert client.get("/").status_code == 200


def test_api_needs_token(locked):
    c = locked.test_client()
    r = c.get("/api/cloud/jobs")
    assert r.status_code == 401 and r.mimetype == "application/problem+json"
    assert c.get("/api/cloud/jobs", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert c.get("/api/cloud/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_pages_redirect_to_login_then_session_works(locked):
    c = locked.test_client()
    r = c.get("/jobs?status=running")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    assert c.get("/healthz").status_code == 200  # load balancers need no token
    login = c.get("/login")
    assert login.status_code == 200
    csrf = csrf_of(c)
    bad = c.post("/login", data={"username": "admin", "password": "wrong", "csrf_token": csrf, "next": "/jobs"})
    assert bad.status_code == 401 and b"invalid username or password" in bad.data
    ok = c.post("/login", data={"username": "admin", "password": _initial_password(locked),
                                "csrf_token": csrf, "next": "/jobs"})
    assert ok.status_code == 302 and ok.headers["Location"].endswith("/jobs")
    assert c.get("/jobs").status_code == 200
    assert c.get("/api/cloud/jobs").status_code == 200  # the session works for the API too


def test_login_next_cannot_redirect_offsite(locked):
    c = locked.test_client()
    csrf = csrf_of(c)
    r = c.post("/login", data={"username": "admin", "password": _initial_password(locked), "csrf_token": csrf,
                               "next": "https://evil.example/"})
    assert r.headers["Location"] in ("/", "http://localhost/")


def test_form_post_without_csrf_refused(app, client):
    jid = make_job(app, "running")
    r = client.post(f"/jobs/{jid}/cancel", data={})
    assert r.status_code == 403 and b"CSRF" in r.data
    r = client.post(f"/jobs/{jid}/cancel", data={"csrf_token": "forged"})
    assert r.status_code == 403
    r = client.post(f"/jobs/{jid}/cancel", data={"csrf_token": csrf_of(client)})
    assert r.status_code == 302


def test_htmx_post_with_header_token(app, client):
    jid = make_job(app, "running")
    token = csrf_of(client)
    r = client.post(f"/jobs/{jid}/cancel", headers={"HX-Request": "true", "X-CSRF-Token": token})
    assert r.status_code == 200 and b"cancelled" in r.data
    r = client.post(f"/jobs/{jid}/cancel", headers={"HX-Request": "true"})
    assert r.status_code == 403


def test_api_form_encoded_post_needs_csrf_json_does_not(app, client):
    jid = make_job(app, "running")
    r = client.post(f"/api/cloud/jobs/{jid}/cancel", data={"x": "1"})
    assert r.status_code == 403 and r.mimetype == "application/problem+json"
    assert client.post(f"/api/cloud/jobs/{jid}/cancel", json={}).status_code == 200


def test_machine_blueprints_are_exempt(make_app):
    from flask import Blueprint

    from stcloud.web import auth

    app = make_app(STCLOUD_ADMIN_TOKEN=TOKEN)
    bp = auth.machine(Blueprint("test_machine", __name__))
    bp.add_url_rule("/api/test-machine", "hook", lambda: "ok", methods=["POST"])
    app.register_blueprint(bp)
    assert app.test_client().post("/api/test-machine", data={"a": 1}).status_code == 200
