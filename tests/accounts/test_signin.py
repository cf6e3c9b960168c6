"""Secure by default: first-start admin, sign-in API and pages, sessions, login links, rate
limit, the bootstrap admin token, STCLOUD_AUTH=off."""
import os
import stat
from datetime import timedelta
from pathlib import Path

import flask_login
import pytest

from stcloud import db
from stcloud.accounts import bootstrap, service
from stcloud.accounts.external import ExternalIdentity
from stcloud.errors import Conflict, Forbidden, StcloudError
from stcloud.models import LoginLink, User
from tests.accounts.helpers import PASSWORD, add_user, initial_password, login
from tests.conftest import csrf_of


def test_first_start_creates_admin_with_a_0600_password_file(secure_app, home):
    path = home / "initial-admin-password"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    password = path.read_text().strip()
    assert len(password) >= 16
    with secure_app.app_context(), db.session() as s:
        users = s.query(User).all()
        assert [(u.username, u.role) for u in users] == [("admin", "admin")]
        assert users[0].password_hash.startswith("$argon2id$") and password not in users[0].password_hash
    # a second start with an account does nothing
    assert bootstrap.ensure_admin(secure_app) is None
    assert path.read_text().strip() == password


def test_initial_password_file_removed_when_admin_sets_a_password(secure_app, home):
    c = secure_app.test_client()
    login(c, "admin", initial_password(secure_app))
    r = c.post("/api/cloud/me/password", json={"current_password": "wrong", "new_password": "a-new-password"})
    assert r.status_code == 401 and (home / "initial-admin-password").exists()
    r = c.post("/api/cloud/me/password", json={"current_password": initial_password(secure_app),
                                               "new_password": "short"})
    assert r.status_code == 422 and r.json["field"] == "password"
    r = c.post("/api/cloud/me/password", json={"current_password": initial_password(secure_app),
                                               "new_password": "a-new-password"})
    assert r.status_code == 204
    assert not (home / "initial-admin-password").exists()
    assert c.get("/api/cloud/me").status_code == 200  # this session carries on
    login(secure_app.test_client(), "admin", "a-new-password")


def test_no_first_admin_with_auth_off(make_app, home):
    make_app()  # the suite's default: STCLOUD_AUTH=off
    assert not (home / "initial-admin-password").exists()


def test_everything_needs_sign_in(secure_app):
    c = secure_app.test_client()
    r = c.get("/api/cloud/jobs")
    assert r.status_code == 401 and r.mimetype == "application/problem+json"
    r = c.get("/jobs?status=running")
    assert r.status_code == 302 and "/login?next=/jobs?status%3Drunning" in r.headers["Location"]
    r = c.get("/jobs", headers={"HX-Request": "true"})
    assert r.status_code == 401 and r.headers["HX-Redirect"].startswith("/login")
    assert c.get("/login").status_code == 200
    assert c.get("/healthz").status_code == 200


def test_login_api_sets_session_cookie_and_logout_ends_it(secure_app):
    add_user(secure_app, "alice", "member")
    c = secure_app.test_client()
    r = c.post("/api/auth/login", json={"username": "Alice", "password": PASSWORD})
    assert r.status_code == 200 and r.json["user"]["username"] == "alice" and r.json["user"]["role"] == "member"
    assert "session=" in r.headers["Set-Cookie"] and "HttpOnly" in r.headers["Set-Cookie"]
    me = c.get("/api/cloud/me").json
    assert me["user"]["username"] == "alice" and me["via"] == "session"
    assert c.post("/api/auth/logout").status_code == 403  # CSRF: a form post cannot sign you out
    assert c.post("/api/auth/logout", json={}).status_code == 204
    assert c.get("/api/cloud/me").status_code == 401


@pytest.mark.parametrize("username,password", [("alice", "wrong password"), ("nobody", PASSWORD), ("", "")])
def test_bad_credentials_one_answer(secure_app, username, password):
    add_user(secure_app, "alice", "member")
    r = secure_app.test_client().post("/api/auth/login", json={"username": username, "password": password})
    assert r.status_code == 401 and r.json["detail"] == "invalid username or password"


def test_login_body_must_be_json(secure_app):
    r = secure_app.test_client().post("/api/auth/login", data="nope", content_type="application/json")
    assert r.status_code == 400 and r.mimetype == "application/problem+json"


def test_disabled_user_cannot_sign_in_and_sessions_end(secure_app):
    alice = add_user(secure_app, "alice", "member")
    c = secure_app.test_client()
    login(c, "alice")
    with secure_app.app_context():
        service.update_user("alice", {"disabled": True})
    assert c.get("/api/cloud/me").status_code == 401  # the session ended
    r = secure_app.test_client().post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 403 and "disabled" in r.json["detail"]
    r = secure_app.test_client().get("/api/cloud/me", headers=alice.headers)
    assert r.status_code == 401  # and so do its API keys


def test_password_change_ends_other_sessions(secure_app):
    add_user(secure_app, "alice", "member")
    first, second = secure_app.test_client(), secure_app.test_client()
    login(first, "alice")
    login(second, "alice")
    r = first.post("/api/cloud/me/password", json={"current_password": PASSWORD, "new_password": "another-one-1"})
    assert r.status_code == 204
    assert first.get("/api/cloud/me").status_code == 200
    assert second.get("/api/cloud/me").status_code == 401


def test_login_page_form(secure_app):
    add_user(secure_app, "alice", "viewer")
    c = secure_app.test_client()
    csrf = csrf_of(c)
    bad = c.post("/login", data={"username": "alice", "password": "nope", "csrf_token": csrf, "next": "/spend"})
    assert bad.status_code == 401 and b"invalid username or password" in bad.data and b'value="alice"' in bad.data
    ok = c.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": csrf, "next": "/spend"})
    assert ok.status_code == 302 and ok.headers["Location"].endswith("/spend")
    page = c.get("/jobs")
    assert page.status_code == 200 and b"alice (viewer)" in page.data and b"Log out" in page.data
    assert b"/users" not in page.data  # the admin links are for admins
    r = c.post("/logout", data={"csrf_token": csrf_of(c)})
    assert r.status_code == 302 and c.get("/jobs").status_code == 302


def test_login_rate_limit_is_problem_json(make_app):
    app = make_app(STCLOUD_AUTH="on", STCLOUD_LOGIN_RATE_LIMIT="3 per minute")
    c = app.test_client()
    for _ in range(3):
        assert c.post("/api/auth/login", json={"username": "x", "password": "y"}).status_code == 401
    r = c.post("/api/auth/login", json={"username": "admin", "password": initial_password(app)})
    assert r.status_code == 429 and r.mimetype == "application/problem+json"
    assert "too many sign-in attempts" in r.json["detail"] and r.headers.get("Retry-After")
    # per client address: another address still gets in
    other = app.test_client()
    r = other.post("/api/auth/login", json={"username": "admin", "password": initial_password(app)},
                   environ_base={"REMOTE_ADDR": "127.0.0.2"})
    assert r.status_code == 200


def test_admin_token_is_a_bootstrap_admin_key(make_app):
    app = make_app(STCLOUD_AUTH="on", STCLOUD_ADMIN_TOKEN="boot-token")
    c = app.test_client()
    r = c.get("/api/cloud/me", headers={"Authorization": "Bearer boot-token"})
    assert r.status_code == 200 and r.json["via"] == "admin_token" and r.json["user"]["role"] == "admin"
    r = c.post("/api/cloud/users", json={"username": "bob", "role": "viewer"},
               headers={"Authorization": "Bearer boot-token"})
    assert r.status_code == 201 and r.json["password"]
    r = c.post("/api/cloud/tokens", json={"name": "x"}, headers={"Authorization": "Bearer boot-token"})
    assert r.status_code == 400 and "not an account" in r.json["detail"]
    assert c.get("/api/cloud/me", headers={"Authorization": "Bearer not-it"}).status_code == 401


def test_login_link_is_single_use_and_expires(secure_app):
    base = "http://127.0.0.1:8080"
    url = bootstrap.login_link_url(secure_app, base)
    path = url[len(base):]
    c = secure_app.test_client()
    r = c.get(path)
    assert r.status_code == 302 and "/account" in r.headers["Location"]
    assert c.get("/api/cloud/me").json["user"]["username"] == "admin"
    again = secure_app.test_client().get(path)
    assert again.status_code == 401
    url2 = bootstrap.login_link_url(secure_app, base)
    with secure_app.app_context(), db.transaction() as s:
        for link in s.query(LoginLink).all():
            link.expires_at = link.created_at - timedelta(seconds=1)
    assert secure_app.test_client().get(url2[len(base):]).status_code == 401


def test_auth_off_serves_loopback_clients_only(make_app):
    app = make_app(STCLOUD_AUTH="off")
    c = app.test_client()
    assert c.get("/api/cloud/jobs").status_code == 200
    r = c.get("/api/cloud/jobs", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert r.status_code == 403 and "STCLOUD_AUTH=off" in r.json["detail"]


def test_bad_auth_mode_is_refused(make_app):
    with pytest.raises(StcloudError, match="STCLOUD_AUTH must be 'on' or 'off'"):
        make_app(STCLOUD_AUTH="maybe")


def test_login_external_creates_updates_and_refuses(secure_app):
    ident = ExternalIdentity(username="Eve", email="eve@example.com", display_name="Eve E.",
                             groups=("ml",), source="oidc")
    with secure_app.test_request_context("/"):
        user = service.login_external(ident, "member")
        assert (user.username, user.role, user.source, user.email) == ("eve", "member", "oidc", "eve@example.com")
        assert flask_login.current_user.username == "eve"
    with secure_app.test_request_context("/"):
        user = service.login_external(
            ExternalIdentity("eve", "eve@new.example", None, (), "oidc"), "viewer")
        assert (user.role, user.email, user.display_name) == ("viewer", "eve@new.example", "Eve E.")
    with secure_app.app_context():
        service.update_user("eve", {"disabled": True})
    with secure_app.test_request_context("/"), pytest.raises(Forbidden):
        service.login_external(ident, "member")
    add_user(secure_app, "carol", "member")
    with secure_app.test_request_context("/"), pytest.raises(Conflict):
        service.login_external(ExternalIdentity("carol", None, None, (), "ldap"), "admin")


def test_password_authenticators_hook(secure_app):
    """The password form tries registered external authenticators (LDAP plugs in here)."""
    seen = []

    def directory(username, password):
        seen.append(username)
        if (username, password) == ("dora", "ldap-pass"):
            return ExternalIdentity("dora", None, "Dora", ("staff",), "ldap"), "viewer"
        return None

    secure_app.extensions[service.PASSWORD_AUTHENTICATORS] = [directory]
    c = secure_app.test_client()
    assert c.post("/api/auth/login", json={"username": "dora", "password": "bad"}).status_code == 401
    r = c.post("/api/auth/login", json={"username": "dora", "password": "ldap-pass"})
    assert r.status_code == 200 and r.json["user"]["source"] == "ldap" and r.json["user"]["role"] == "viewer"
    assert seen == ["dora", "dora"]
    login(secure_app.test_client(), "admin", initial_password(secure_app))  # local accounts skip the hook
    assert seen == ["dora", "dora"]


def test_initial_password_file_not_world_readable_even_with_umask(make_app, home):
    old = os.umask(0)
    try:
        make_app(STCLOUD_AUTH="on")
    finally:
        os.umask(old)
    assert stat.S_IMODE(Path(home / "initial-admin-password").stat().st_mode) == 0o600
