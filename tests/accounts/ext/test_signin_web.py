"""External sign-in through stcloud itself: LDAP behind ``POST /api/auth/login`` and the login
form (account created with the mapped role on first sign-in), OIDC through
``/auth/oidc/login`` → the provider → ``/auth/oidc/callback``, and the Settings section."""
from __future__ import annotations

import contextlib
import threading
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from werkzeug.serving import make_server

from stcloud.accounts import audit
from stcloud.accounts import service as accounts
from stcloud.accounts.oidc import STORE_KEY
from tests.accounts.ext.idp import sign_in
from tests.conftest import csrf_of

ROLE_MAP = "stcloud-admins=admin;stcloud-members=member"


def ldap_config(d, **kw) -> dict:
    cfg = {"STCLOUD_LDAP_URL": d.url, "STCLOUD_LDAP_BIND_DN": d.reader_dn,
           "STCLOUD_LDAP_BIND_PASSWORD": d.reader_password, "STCLOUD_LDAP_USER_BASE": d.people,
           "STCLOUD_LDAP_ROLE_MAP": ROLE_MAP}
    cfg.update(kw)
    return cfg


def oidc_config(idp, **kw) -> dict:
    cfg = {"STCLOUD_OIDC_ISSUER": idp.issuer, "STCLOUD_OIDC_CLIENT_ID": idp.client_id,
           "STCLOUD_OIDC_CLIENT_SECRET": idp.client_secret, "STCLOUD_OIDC_SCOPES": "openid profile email groups",
           "STCLOUD_OIDC_ROLE_MAP": ROLE_MAP, "STCLOUD_OIDC_NAME": "Test IdP"}
    cfg.update(kw)
    return cfg


def api_login(client, username: str, password: str):
    return client.post("/api/auth/login", json={"username": username, "password": password})


def me(client) -> dict:
    r = client.get("/api/cloud/me")
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()["user"]


def logins(app) -> list[tuple]:
    """(target, outcome, method, reason) of every auth.login record, oldest first."""
    with app.app_context():
        recs = audit.query(action="auth.login", limit=500)
    return [(r["target"], r["outcome"], (r["detail"] or {}).get("method"), (r["detail"] or {}).get("reason"))
            for r in reversed(recs)]


def user_row(app, username: str) -> dict:
    with app.app_context():
        return accounts.get_user(username)


# ---- LDAP ------------------------------------------------------------------------------

def test_ldap_login_api_creates_the_account_with_the_mapped_role(make_app, directory):
    app = make_app(STCLOUD_AUTH="on", **ldap_config(directory))
    c = app.test_client()
    r = api_login(c, "alice", directory.passwords["alice"])
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["user"]["username"] == "alice"
    u = me(c)
    assert (u["role"], u["source"], u["email"], u["display_name"]) == ("admin", "ldap", "alice@stcloud.test",
                                                                      "Alice Admin")
    c2 = app.test_client()
    assert api_login(c2, "bob", directory.passwords["bob"]).status_code == 200
    assert me(c2)["role"] == "member"
    assert user_row(app, "bob")["role"] == "member"

    # wrong password / unknown / empty: 401, nobody signed in, no account created
    for name, pw in (("bob", "nope"), ("nobody", "x"), ("carol", "")):
        c3 = app.test_client()
        r = c3.post("/api/auth/login", json={"username": name, "password": pw})
        assert r.status_code == 401, (name, r.get_data(as_text=True))
        assert c3.get("/api/cloud/me").status_code == 401
    users = [u["username"] for u in c.get("/api/cloud/users").get_json()["users"]]
    assert "nobody" not in users and "carol" not in users
    recorded = logins(app)
    assert recorded[:2] == [("alice", "ok", "ldap", None), ("bob", "ok", "ldap", None)]
    assert [(t, o) for t, o, _, _ in recorded[2:]] == [("bob", "denied"), ("nobody", "denied"), ("carol", "denied")]
    with app.app_context():
        created = audit.query(action="user.create")
    external = {(r["target"], r["detail"]["role"], r["detail"]["source"]) for r in created if "source" in r["detail"]}
    assert external == {("alice", "admin", "ldap"), ("bob", "member", "ldap")}


def test_ldap_login_form_and_no_group_refusal(make_app, directory):
    app = make_app(STCLOUD_AUTH="on", **ldap_config(directory, STCLOUD_LDAP_DEFAULT_ROLE="none"))
    c = app.test_client()
    csrf_of(c)
    r = c.post("/login", data={"username": "bob", "password": directory.passwords["bob"], "next": "/jobs"})
    assert r.status_code == 302 and r.headers["Location"].endswith("/jobs")
    assert me(c)["username"] == "bob" and me(c)["role"] == "member"

    c2 = app.test_client()
    csrf_of(c2)
    r = c2.post("/login", data={"username": "carol", "password": directory.passwords["carol"]})
    assert r.status_code == 403
    assert "no group" in r.get_data(as_text=True)
    with app.app_context():
        assert "carol" not in [u["username"] for u in accounts.list_users()]
    assert logins(app)[-1][:3] == ("carol", "denied", "ldap") and "no group" in logins(app)[-1][3]


def test_a_directory_name_that_cannot_be_a_username_is_refused_clearly(make_app, directory):
    app = make_app(STCLOUD_AUTH="on", **ldap_config(directory))
    c = app.test_client()
    csrf_of(c)
    r = c.post("/login", data={"username": "dave(x)", "password": directory.passwords["dave(x)"]})
    assert r.status_code == 403
    assert "cannot be an stcloud username" in r.get_data(as_text=True)
    assert logins(app)[-1][:3] == (None, "denied", "ldap")


def test_ldap_group_change_updates_the_role_at_next_login(make_app, directory):
    app = make_app(STCLOUD_AUTH="on", **ldap_config(directory))
    c = app.test_client()
    assert api_login(c, "bob", directory.passwords["bob"]).status_code == 200
    assert me(c)["role"] == "member"
    app.config["STCLOUD_LDAP_ROLE_MAP"] = "stcloud-members=viewer"
    c = app.test_client()
    assert api_login(c, "bob", directory.passwords["bob"]).status_code == 200
    assert me(c)["role"] == "viewer"


def test_local_accounts_keep_their_local_password(make_app, directory):
    app = make_app(STCLOUD_AUTH="on", **ldap_config(directory))
    with app.app_context():
        accounts.create_user("bob", "viewer", "local password 123")
    c = app.test_client()
    r = api_login(c, "bob", directory.passwords["bob"])
    assert r.status_code == 401  # the directory is not asked about a local account
    r = c.post("/api/auth/login", json={"username": "bob", "password": "local password 123"})
    assert r.status_code == 200 and me(c)["source"] == "local" and me(c)["role"] == "viewer"


def test_unreachable_directory_is_said_on_the_login_form(make_app, directory):
    app = make_app(STCLOUD_AUTH="on", **ldap_config(directory, STCLOUD_LDAP_URL="ldap://127.0.0.1:9",
                                                     STCLOUD_LDAP_CONNECT_TIMEOUT="2"))
    c = app.test_client()
    csrf_of(c)
    r = c.post("/login", data={"username": "alice", "password": "whatever"})
    assert r.status_code == 503
    assert "could not check this sign-in" in r.get_data(as_text=True)
    r = app.test_client().post("/api/auth/login", json={"username": "alice", "password": "whatever"})
    assert r.status_code == 503 and r.mimetype == "application/problem+json"


def test_disabled_ldap_account_is_refused(make_app, directory):
    app = make_app(STCLOUD_AUTH="on", **ldap_config(directory))
    c = app.test_client()
    assert api_login(c, "bob", directory.passwords["bob"]).status_code == 200
    with app.app_context():
        accounts.update_user("bob", {"disabled": True})
    r = app.test_client().post("/api/auth/login", json={"username": "bob", "password": directory.passwords["bob"]})
    assert r.status_code == 403


def test_settings_section_turns_ldap_on(make_app, directory):
    app = make_app(STCLOUD_AUTH="on")
    with app.app_context():
        accounts.create_user("root", "admin", "admin password 123")
    c = app.test_client()
    assert c.post("/api/auth/login", json={"username": "root", "password": "admin password 123"}).status_code == 200
    assert "LDAP directory" in c.get("/settings").get_data(as_text=True)
    token = csrf_of(c)
    form = {"csrf_token": token, "URL": directory.url, "USER_DN_TEMPLATE": f"uid={{username}},{directory.people}",
            "ROLE_MAP": ROLE_MAP, "DEFAULT_ROLE": "viewer"}
    r = c.post("/settings/auth/ldap", data={**form, "ROLE_MAP": "x=superuser"})
    assert r.status_code == 422 and "not one of" in r.get_data(as_text=True)
    r = c.post("/settings/auth/ldap", data=form)
    assert r.status_code == 200 and "Saved" in r.get_data(as_text=True)
    with app.app_context():
        saves = audit.query(action="settings.external_sign_in")
    assert [(r["target"], r["outcome"], r["actor"]) for r in reversed(saves)] == [
        ("ldap", "failed", "root"), ("ldap", "ok", "root")]
    assert directory.url not in str(saves[0]["detail"])  # field names only, never values
    r = app.test_client().post("/api/auth/login", json={"username": "alice", "password": directory.passwords["alice"]})
    assert r.status_code == 200

    # a member cannot change it
    with app.app_context():
        accounts.create_user("mem", "member", "member password 123")
    m = app.test_client()
    assert m.post("/api/auth/login", json={"username": "mem", "password": "member password 123"}).status_code == 200
    assert m.post("/settings/auth/ldap", data={**form, "csrf_token": csrf_of(m), "URL": ""}).status_code == 403
    assert "LDAP directory" not in m.get("/settings").get_data(as_text=True)


# ---- OIDC ------------------------------------------------------------------------------

@contextlib.contextmanager
def serve_on(app, port: int):
    """The app on the port registered as the provider's redirect URI."""
    server = make_server("127.0.0.1", port, app, threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)


@pytest.fixture
def oidc_app(make_app, idp):
    return make_app(STCLOUD_AUTH="on", STCLOUD_PUBLIC_URL=f"http://127.0.0.1:{idp.rp_port}", **oidc_config(idp))


def test_login_page_shows_the_oidc_button_only_when_configured(make_app, oidc_app):
    page = oidc_app.test_client().get("/login?next=/jobs").get_data(as_text=True)
    assert "Sign in with Test IdP" in page and "/auth/oidc/login?next=/jobs" in page.replace("%2F", "/")
    assert "Sign in with" not in make_app(STCLOUD_AUTH="on").test_client().get("/login").get_data(as_text=True)


def test_oidc_login_end_to_end_with_requests(oidc_app, idp):
    with serve_on(oidc_app, idp.rp_port) as base:
        s = requests.Session()
        r = s.get(base + "/auth/oidc/login?next=/jobs", allow_redirects=False)
        assert r.status_code == 302 and r.headers["Location"].startswith(idp.issuer + "/auth?")
        q = parse_qs(urlsplit(r.headers["Location"]).query)
        assert q["code_challenge_method"] == ["S256"]
        assert q["redirect_uri"] == [f"{base}/auth/oidc/callback"]
        args = sign_in(r.headers["Location"], "erin", idp.password("erin"), idp.redirect_uri, session=s)
        r = s.get(base + "/auth/oidc/callback", params=args, allow_redirects=False)
        assert r.status_code == 302 and r.headers["Location"].endswith("/jobs"), r.text[:500]
        u = s.get(base + "/api/cloud/me").json()["user"]
        assert (u["username"], u["role"], u["source"], u["email"]) == ("erin", "admin", "oidc", "erin@idp.test")

        # the same callback again: its state was used up
        r = s.get(base + "/auth/oidc/callback", params=args, allow_redirects=False)
        assert r.status_code == 403 and "state" in r.text


def test_oidc_tampered_state_is_refused_and_nobody_signs_in(oidc_app, idp):
    with serve_on(oidc_app, idp.rp_port) as base:
        s = requests.Session()
        r = s.get(base + "/auth/oidc/login", allow_redirects=False)
        args = sign_in(r.headers["Location"], "frank", idp.password("frank"), idp.redirect_uri, session=s)
        r = s.get(base + "/auth/oidc/callback", params={**args, "state": args["state"] + "x"}, allow_redirects=False)
        assert r.status_code == 403 and "state" in r.text
        assert s.get(base + "/api/cloud/me").status_code == 401
        # a callback delivered to another browser (no pending sign-in there) is refused too
        other = requests.Session()
        r = other.get(base + "/auth/oidc/callback", params=args, allow_redirects=False)
        assert r.status_code == 403
        assert other.get(base + "/api/cloud/me").status_code == 401
    assert [(o, m) for _, o, m, _ in logins(oidc_app)] == [("denied", "oidc"), ("denied", "oidc")]
    assert "state" in logins(oidc_app)[0][3]


def test_oidc_provider_error_is_shown(oidc_app, idp):
    c = oidc_app.test_client()
    r = c.get("/auth/oidc/login")
    with c.session_transaction() as sess:
        state = next(iter(sess[STORE_KEY]))
    assert state in r.headers["Location"]
    r = c.get("/auth/oidc/callback", query_string={"state": state, "error": "access_denied",
                                                    "error_description": "End-User aborted interaction"})
    assert r.status_code == 403 and "aborted" in r.get_data(as_text=True)


def test_oidc_off_sends_to_the_login_page(make_app):
    c = make_app(STCLOUD_AUTH="on").test_client()
    r = c.get("/auth/oidc/login?next=/jobs")
    assert r.status_code == 302 and r.headers["Location"].endswith("/login?next=/jobs")
    r = c.get("/auth/oidc/callback?state=x&code=y")
    assert r.status_code == 302 and r.headers["Location"].endswith("/login")


@pytest.mark.browser
def test_browser_oidc_login_to_dashboard(oidc_app, idp, page):
    with serve_on(oidc_app, idp.rp_port) as base:
        page.goto(base + "/jobs")
        page.wait_for_url("**/login**")
        page.click("text=Sign in with Test IdP")
        page.wait_for_url(idp.issuer + "/interaction/**")
        page.fill("#idp-username", "frank")
        page.fill("#idp-password", idp.password("frank"))
        page.click("#idp-submit")
        page.wait_for_url(base + "/jobs")
        assert "frank" in page.locator("body").inner_text()
        u = page.request.get(base + "/api/cloud/me").json()["user"]
        assert (u["username"], u["role"], u["source"]) == ("frank", "member", "oidc")
