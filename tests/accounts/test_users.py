"""Users API and pages (admin): create with a generated password, change roles, disable,
delete; the last enabled admin cannot be removed; /api/cloud/me."""
import pytest

from tests.accounts.helpers import PASSWORD, add_user, initial_password, login
from tests.conftest import csrf_of


@pytest.fixture
def admin(secure_app):
    return add_user(secure_app, "ada", "admin")


def test_users_api(secure_app, admin):
    c, h = secure_app.test_client(), admin.headers
    r = c.post("/api/cloud/users", json={"username": "Bob", "role": "viewer", "email": "bob@example.com"}, headers=h)
    assert r.status_code == 201 and r.json["user"]["username"] == "bob" and len(r.json["password"]) >= 16
    login(secure_app.test_client(), "bob", r.json["password"])
    r = c.post("/api/cloud/users", json={"username": "carl", "role": "member", "password": "given-password"}, headers=h)
    assert r.status_code == 201 and "password" not in r.json
    assert c.post("/api/cloud/users", json={"username": "bob", "role": "viewer"}, headers=h).status_code == 409
    for bad in ({"username": "", "role": "member"}, {"username": "x y", "role": "member"},
                {"username": "dan", "role": "root"}, {"username": "dan", "password": "short"},
                {"username": "dan", "email": "not-an-email"}):
        r = c.post("/api/cloud/users", json=bad, headers=h)
        assert r.status_code == 422 and r.mimetype == "application/problem+json", bad
    names = [u["username"] for u in c.get("/api/cloud/users", headers=h).json["users"]]
    assert names == ["ada", "admin", "bob", "carl"]
    assert all("password_hash" not in u for u in c.get("/api/cloud/users", headers=h).json["users"])

    r = c.patch("/api/cloud/users/bob", json={"role": "member", "display_name": "Bob B."}, headers=h)
    assert r.status_code == 200 and r.json["user"]["role"] == "member" and r.json["user"]["display_name"] == "Bob B."
    assert c.patch("/api/cloud/users/bob", json={"shoe_size": 9}, headers=h).status_code == 422
    assert c.patch("/api/cloud/users/bob", json={"disabled": "yes"}, headers=h).status_code == 422
    assert c.patch("/api/cloud/users/nobody", json={"role": "viewer"}, headers=h).status_code == 404
    r = c.patch("/api/cloud/users/carl", json={"password": "reset-by-admin"}, headers=h)
    assert r.status_code == 200
    login(secure_app.test_client(), "carl", "reset-by-admin")
    assert c.get("/api/cloud/users/carl", headers=h).json["user"]["last_login_at"]
    assert c.delete("/api/cloud/users/carl", headers=h).status_code == 204
    assert c.get("/api/cloud/users/carl", headers=h).status_code == 404


def test_the_last_admin_stays(secure_app):
    c = secure_app.test_client()
    login(c, "admin", initial_password(secure_app))
    for change in ({"role": "member"}, {"disabled": True}):
        r = c.patch("/api/cloud/users/admin", json=change)
        assert r.status_code == 409 and "last enabled admin" in r.json["detail"]
    assert c.delete("/api/cloud/users/admin").status_code == 409
    assert c.get("/api/cloud/users/admin").json["user"]["role"] == "admin"
    add_user(secure_app, "ada", "admin")
    assert c.patch("/api/cloud/users/admin", json={"role": "viewer"}).status_code == 200
    assert c.get("/api/cloud/users").status_code == 403  # the new role applies at once


def test_me(secure_app):
    mia = add_user(secure_app, "mia", "member")
    me = secure_app.test_client().get("/api/cloud/me", headers=mia.headers).json
    assert me["via"] == "api_key" and me["user"]["username"] == "mia" and me["user"]["role"] == "member"


def test_users_page_invite_role_disable_delete(secure_app):
    c = secure_app.test_client()
    login(c, "admin", initial_password(secure_app))
    csrf = csrf_of(c)
    page = c.get("/users").get_data(as_text=True)
    assert 'id="user-admin"' in page and "Invite someone" in page
    r = c.post("/users", data={"username": "eve", "role": "viewer", "csrf_token": csrf})
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and 'id="new-user-password"' in html and 'id="user-eve"' in html
    password = html.split('id="new-user-password">')[1].split("<")[0]
    login(secure_app.test_client(), "eve", password)
    r = c.post("/users/eve", data={"role": "member", "csrf_token": csrf}, headers={"HX-Request": "true"})
    text = r.get_data(as_text=True)
    assert r.status_code == 200 and 'data-role="member"' in text and "<html" not in text
    r = c.post("/users/eve", data={"disabled": "true", "csrf_token": csrf})
    assert 'data-disabled="true"' in r.get_data(as_text=True)
    r = c.post("/users", data={"username": "eve", "role": "viewer", "csrf_token": csrf})
    assert r.status_code == 422 and "already exists" in r.get_data(as_text=True)
    r = c.post("/users/admin", data={"disabled": "true", "csrf_token": csrf})
    assert r.status_code == 409 and "last enabled admin" in r.get_data(as_text=True)
    r = c.post("/users/eve/delete", data={"csrf_token": csrf})
    assert r.status_code == 302 and 'id="user-eve"' not in c.get("/users").get_data(as_text=True)


def test_account_page_password_and_keys(secure_app):
    add_user(secure_app, "mia", "member")
    c = secure_app.test_client()
    login(c, "mia")
    csrf = csrf_of(c)
    page = c.get("/account").get_data(as_text=True)
    assert 'id="me-username">mia<' in page and "Change password" in page
    r = c.post("/account/tokens", data={"name": "laptop", "expires_in_days": "30", "csrf_token": csrf})
    html = r.get_data(as_text=True)
    token = html.split('id="new-api-key">')[1].split("<")[0]
    assert token.startswith("stc_")
    assert secure_app.test_client().get("/api/cloud/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert c.post("/account/tokens", data={"name": "x", "expires_in_days": "soon", "csrf_token": csrf}).status_code == 422
    key_id = html.split('id="key-')[1].split('"')[0]
    r = c.post(f"/account/tokens/{key_id}/revoke", data={"csrf_token": csrf})
    assert 'data-state="revoked"' in r.get_data(as_text=True)
    r = c.post("/account/password", data={"current_password": PASSWORD, "new_password": "new-password-1",
                                          "confirm_password": "different", "csrf_token": csrf})
    assert r.status_code == 422 and "differ" in r.get_data(as_text=True)
    r = c.post("/account/password", data={"current_password": "wrong", "new_password": "new-password-1",
                                          "confirm_password": "new-password-1", "csrf_token": csrf})
    assert r.status_code == 422 and "not right" in r.get_data(as_text=True)
    r = c.post("/account/password", data={"current_password": PASSWORD, "new_password": "new-password-1",
                                          "confirm_password": "new-password-1", "csrf_token": csrf})
    assert r.status_code == 200 and "Password changed" in r.get_data(as_text=True)
    login(secure_app.test_client(), "mia", "new-password-1")


def test_users_page_sets_limits(secure_app):
    add_user(secure_app, "mia", "member")
    c = secure_app.test_client()
    login(c, "admin", initial_password(secure_app))
    csrf = csrf_of(c)
    r = c.post("/users/mia", data={"max_concurrent_jobs": "3", "spend_limit_usd": "25.5", "spend_period": "weekly",
                                   "spend_action": "warn", "approval_threshold_usd": "40", "csrf_token": csrf})
    assert r.status_code == 200
    limits = c.get("/api/cloud/users/mia").json["user"]["limits"]
    assert limits == {"max_concurrent_jobs": 3, "spend_limit_usd": 25.5, "spend_period": "weekly",
                      "spend_action": "warn", "approval_threshold_usd": 40.0}
    r = c.post("/users/mia", data={"max_concurrent_jobs": "", "spend_limit_usd": "lots", "csrf_token": csrf})
    assert r.status_code == 422 and "spend limit usd must be a number" in r.get_data(as_text=True)
    r = c.post("/users/mia", data={"max_concurrent_jobs": "", "spend_limit_usd": "", "csrf_token": csrf})
    assert c.get("/api/cloud/users/mia").json["user"]["limits"]["max_concurrent_jobs"] is None
