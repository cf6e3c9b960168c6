"""Accounts: sign-in API, users, API keys, the audit log — JSON API and pages.

    POST   /api/auth/login                 {username, password} -> 200 {user} + session cookie
    POST   /api/auth/logout                -> 204
    GET    /api/cloud/me                   -> {user, via}
    POST   /api/cloud/me/password          {current_password, new_password} -> 204
    GET    /api/cloud/users                (admin) -> {users}
    POST   /api/cloud/users                (admin) {username, password?, role, display_name?, email?}
                                           -> 201 {user, password?}  (generated password shown once)
    GET    /api/cloud/users/<username>     (admin) -> {user}
    PATCH  /api/cloud/users/<username>     (admin) {role?, disabled?, display_name?, email?, password?}
    DELETE /api/cloud/users/<username>     (admin) -> 204
    POST   /api/cloud/tokens               {name, expires_in_days?} -> 201 {id, token, key}
    GET    /api/cloud/tokens               -> {tokens}   (the caller's own keys)
    DELETE /api/cloud/tokens/<id>          -> 204
    GET    /api/cloud/audit                (admin) ?actor=&action=&since=&limit=&format=jsonl

Pages: /login/link/<token> (one-time sign-in), /account, /users (admin), /audit (admin).
"""
from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    current_app,
    jsonify,
    redirect,
    request,
    stream_with_context,
    url_for,
)

from stcloud.accounts import audit, guard, ownership, scope
from stcloud.accounts import service as accounts
from stcloud.api import validation
from stcloud.api.schemas import accounts as schemas
from stcloud.api.spec import operation
from stcloud.errors import BadRequest, StcloudError
from stcloud.timeutil import parse_iso
from stcloud.web import auth
from stcloud.web.htmx import is_fragment_request, render
from stcloud.web.params import int_arg

api = Blueprint("accounts_api", __name__)
pages = Blueprint("accounts_pages", __name__)


def _home():
    return current_app.config["STCLOUD_HOME"]


def _me() -> scope.Actor:
    actor = guard.current_actor()
    if actor is None:  # the guard lets no anonymous request reach these routes
        raise BadRequest("not signed in")
    return actor


def _my_user_id() -> str:
    actor = _me()
    if actor.user_id is None:
        raise BadRequest(f"{actor.name} is not an account (bootstrap admin token or auth off); "
                         "sign in as a user to manage your password and API keys")
    return actor.user_id


def _me_dict(actor: scope.Actor) -> dict:
    user = accounts.get_user_by_id(actor.user_id) if actor.user_id else None
    if user is not None:
        return accounts.user_to_dict(user)
    return {"id": None, "username": actor.name, "display_name": None, "email": None, "role": actor.role,
            "disabled": False, "source": "token" if actor.key_id else "auth-off"}


def _via(actor: scope.Actor) -> str:
    if not auth.auth_enabled():
        return "auth_off"
    if actor.key_id == guard.ADMIN_TOKEN_ACTOR.key_id:
        return "admin_token"
    return "api_key" if actor.key_id else "session"


def _since():
    raw = request.args.get("since")
    if not raw:
        return None
    when = parse_iso(raw)
    if when is None:
        raise BadRequest(f"since must be an ISO-8601 time like 2026-01-31T00:00:00Z, got {raw!r}")
    return when


# ---- API: sign-in ---------------------------------------------------------------------------

@api.post("/api/auth/login")
@operation(body=schemas.LoginBody, public=True, summary="Sign in: a session cookie", tags=["accounts"],
           responses={200: schemas.UserAnswer})
def login():
    body = validation.checked(schemas.LoginBody, status=schemas.STATUS)
    user = accounts.login_password(body.get("username"), body.get("password"))
    return jsonify({"user": accounts.user_to_dict(user)})


@api.post("/api/auth/logout")
@operation(summary="Sign out", tags=["accounts"], responses={204: None})
def logout():
    accounts.logout()
    return "", 204


@api.get("/api/cloud/me")
@operation(summary="Who am I", tags=["accounts"], responses={200: schemas.MeAnswer})
def me():
    actor = _me()
    return jsonify({"user": _me_dict(actor), "via": _via(actor)})


@api.post("/api/cloud/me/password")
@operation(body=schemas.PasswordBody, summary="Change my password", tags=["accounts"], responses={204: None})
def change_password():
    body = validation.checked(schemas.PasswordBody, status=schemas.STATUS)
    accounts.change_own_password(_my_user_id(), body.get("current_password"), body.get("new_password"),
                                 home=_home())
    return "", 204


# ---- API: users (admin) ------------------------------------------------------------------

@api.get("/api/cloud/users")
@operation(summary="Every user (admin)", tags=["accounts"], responses={200: schemas.UserList})
def list_users():
    return jsonify({"users": accounts.list_users()})


@api.post("/api/cloud/users")
@operation(body=schemas.UserCreateBody, summary="Create a local user (admin)", tags=["accounts"],
           responses={201: schemas.UserCreated},
           links={201: {name: (endpoint, method, {"username": "$response.body#/user/username"})
                        for name, endpoint, method in (("GetUser", "accounts_api.get_user", "get"),
                                                       ("UpdateUser", "accounts_api.update_user", "patch"),
                                                       ("DeleteUser", "accounts_api.delete_user", "delete"))}})
def create_user():
    body = validation.checked(schemas.UserCreateBody, status=schemas.STATUS)
    user, generated = accounts.create_user(body.get("username"), body.get("role", "member"),
                                           body.get("password"), body.get("display_name"), body.get("email"))
    out = {"user": user}
    if generated:
        out["password"] = generated
    return jsonify(out), 201


@api.get("/api/cloud/users/<username>")
@operation(summary="One user (admin)", tags=["accounts"], responses={200: schemas.UserAnswer})
def get_user(username):
    return jsonify({"user": accounts.get_user(username)})


@api.patch("/api/cloud/users/<username>")
@operation(body=schemas.UserPatchBody, summary="Change a user (admin)", tags=["accounts"],
           responses={200: schemas.UserAnswer})
def update_user(username):
    changes = validation.checked(schemas.UserPatchBody, status=schemas.STATUS)
    return jsonify({"user": accounts.update_user(username, changes, home=_home())})


@api.delete("/api/cloud/users/<username>")
@operation(summary="Delete a user (admin)", tags=["accounts"], responses={204: None})
def delete_user(username):
    accounts.delete_user(username)
    return "", 204


# ---- API: API keys ---------------------------------------------------------------------------

@api.post("/api/cloud/tokens")
@operation(body=schemas.TokenCreateBody, summary="Create an API key (shown once)", tags=["accounts"],
           responses={201: schemas.KeyCreated},
           links={201: {"RevokeToken": ("accounts_api.revoke_token", "delete", {"key_id": "$response.body#/id"})}})
def create_token():
    body = validation.checked(schemas.TokenCreateBody, status=schemas.STATUS)
    key, token = accounts.create_key(_my_user_id(), body.get("name"), body.get("expires_in_days"))
    return jsonify({"id": key["id"], "token": token, "key": key}), 201


@api.get("/api/cloud/tokens")
@operation(summary="My API keys", tags=["accounts"], responses={200: schemas.KeyList})
def list_tokens():
    return jsonify({"tokens": accounts.list_keys(_my_user_id())})


@api.delete("/api/cloud/tokens/<key_id>")
@operation(summary="Revoke one of my API keys", tags=["accounts"], responses={204: None})
def revoke_token(key_id):
    accounts.revoke_key(_my_user_id(), key_id)
    return "", 204


# ---- API: audit (admin) -------------------------------------------------------------------

@api.get("/api/cloud/audit")
@operation(query=schemas.AuditQuery, summary="The audit log (admin)", tags=["accounts"],
           responses={200: {"application/json": schemas.AuditLog, "application/x-ndjson": None}})
def audit_log():
    validation.query(schemas.AuditQuery)
    actor, action, since = request.args.get("actor") or None, request.args.get("action") or None, _since()
    if request.args.get("format") == "jsonl":
        lines = audit.export_lines(actor=actor, action=action, since=since)
        return Response(stream_with_context(lines), mimetype="application/x-ndjson",
                        headers={"Content-Disposition": "attachment; filename=stcloud-audit.jsonl"})
    limit = int_arg("limit", 100, 1, audit.MAX_LIMIT)
    return jsonify({"records": audit.query(actor=actor, action=action, since=since, limit=limit)})


# ---- pages -----------------------------------------------------------------------------------

@pages.get("/login/link/<token>")
def login_link(token):
    accounts.login_with_link(token)
    return redirect(url_for("accounts_pages.account_page", welcome=1))


def _account(status: int = 200, **extra):
    actor = _me()
    keys = accounts.list_keys(actor.user_id) if actor.user_id else []
    ctx = {"me": _me_dict(actor), "keys": keys, "nav": "account", "secret": None, "message": None,
           "error": None, "welcome": request.args.get("welcome") == "1", **extra}
    return render("accounts/account.html", block="account_body", status=status, **ctx)


@pages.get("/account")
def account_page():
    return _account()


@pages.post("/account/password")
def change_password_page():
    f = request.form
    if f.get("new_password") != f.get("confirm_password"):
        return _account(422, error="The two new passwords differ.")
    try:
        accounts.change_own_password(_my_user_id(), f.get("current_password"), f.get("new_password"), home=_home())
    except StcloudError as exc:
        return _account(exc.status if exc.status != 401 else 422, error=exc.detail)
    return _account(message="Password changed. Other sessions were signed out.")


@pages.post("/account/tokens")
def create_token_page():
    days = (request.form.get("expires_in_days") or "").strip()
    try:
        if days and not days.isdigit():
            raise BadRequest("expires in (days) must be a whole number")
        key, token = accounts.create_key(_my_user_id(), request.form.get("name"), int(days) if days else None)
    except StcloudError as exc:
        return _account(422, error=exc.detail)
    return _account(secret={"key": key, "token": token})


@pages.post("/account/tokens/<key_id>/revoke")
def revoke_token_page(key_id):
    accounts.revoke_key(_my_user_id(), key_id)
    return _account(message="API key revoked.")


def _users(status: int = 200, **extra):
    ctx = {"users": accounts.list_users(), "roles": scope.ROLES, "nav": "users", "secret": None,
           "error": None, **extra}
    return render("accounts/users.html", block="users_body", status=status, **ctx)


@pages.get("/users")
def users_page():
    return _users()


@pages.post("/users")
def invite_page():
    f = request.form
    try:
        user, generated = accounts.create_user(f.get("username"), f.get("role") or "member", None,
                                               f.get("display_name"), f.get("email"))
    except StcloudError as exc:
        return _users(422, error=exc.detail)
    return _users(secret={"user": user, "password": generated})


@pages.post("/users/<username>")
def update_user_page(username):
    f = request.form
    changes: dict = {}
    if "role" in f:
        changes["role"] = f["role"]
    if "disabled" in f:
        changes["disabled"] = f["disabled"] == "true"
    try:
        changes.update(_limit_fields(f))
        accounts.update_user(username, changes, home=_home())
    except StcloudError as exc:
        return _users(exc.status if exc.status in (404, 409) else 422, error=exc.detail)
    return _users()


def _limit_fields(form) -> dict:
    """The limits form: blank = no limit; numbers parsed here, ranges checked by the service."""
    out: dict = {}
    for key, kind in (("max_concurrent_jobs", int), ("spend_limit_usd", float), ("approval_threshold_usd", float)):
        if key in form:
            raw = form[key].strip()
            try:
                out[key] = kind(raw) if raw else None
            except ValueError:
                raise BadRequest(f"{key.replace('_', ' ')} must be a number or empty") from None
    for key in ("spend_period", "spend_action"):
        if key in form:
            out[key] = form[key]
    return out


@pages.post("/users/<username>/delete")
def delete_user_page(username):
    try:
        accounts.delete_user(username)
    except StcloudError as exc:
        return _users(exc.status if exc.status in (404, 409) else 422, error=exc.detail)
    if is_fragment_request():
        return _users()
    return redirect(url_for("accounts_pages.users_page"))


@pages.get("/audit")
def audit_page():
    actor, action = request.args.get("actor") or None, request.args.get("action") or None
    since = _since()
    limit = int_arg("limit", 200, 1, audit.MAX_LIMIT)
    records = audit.query(actor=actor, action=action, since=since, limit=limit)
    return render("accounts/audit.html", block="audit_table", records=records, nav="audit",
                  filters={"actor": actor or "", "action": action or "", "since": request.args.get("since", "")},
                  limit=limit, verification=audit.verify() if request.args.get("verify") else None)


def init_app(app):
    ownership.install()
    app.register_blueprint(api)
    app.register_blueprint(pages)
    guard.limit_logins(app)
