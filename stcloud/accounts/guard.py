"""The request guard (SPEC §1, §13 Auth): who is calling, what their role allows, CSRF, and
the audit hook. Built on the web floor (``stcloud.web.auth``: machine/public routes, bearer,
client address).

- Secure by default: every page and ``/api`` route needs a signed-in user (Flask-Login
  session) or ``Authorization: Bearer <key>`` — a user's API key (``stc_…``) or the bootstrap
  ``STCLOUD_ADMIN_TOKEN``. ``STCLOUD_AUTH=off`` turns this off (loopback clients only).
- Roles come from one table, ``stcloud.accounts.policy``; members see only their own jobs
  through ``stcloud.accounts.scope`` (bound here for each request).
- CSRF: requests that a browser cannot send cross-site without a CORS preflight (which we
  never grant) need no token: PUT/PATCH/DELETE, JSON bodies, and requests with an explicit
  ``Authorization`` header. Browser POSTs carry the session token.
- Audit: every state-changing request outside the machine routes is recorded once, after the
  response is known (``_audit``), keyed on its endpoint; the accounts service records its own
  actions (sign-in, users, keys) with the detail only it knows.
"""
from __future__ import annotations

import hmac
import logging

import flask_login
from flask import Flask, g, make_response, redirect, request, session, url_for
from flask_limiter import Limiter

from stcloud.accounts import audit, policy, scope
from stcloud.accounts import service as accounts
from stcloud.errors import Forbidden, StcloudError, Unauthorized
from stcloud.web import auth

log = logging.getLogger(__name__)

LOGIN_ENDPOINTS = ("web.login_post", "accounts_api.login")
LOGIN_METHODS = "stcloud.login_methods"  # app.extensions key
# The accounts service audits these itself (it knows the user, target and detail); the
# hook adds only their refusals.
SELF_AUDITED_PREFIX = "accounts_"
SELF_AUDITED = {"web.login_post", "web.logout"}

ADMIN_TOKEN_ACTOR = scope.Actor(name="admin-token", role=scope.ADMIN, key_id="admin-token")
AUTH_OFF_ACTOR = scope.Actor(name="local", role=scope.ADMIN)


def resolve_actor() -> scope.Actor | None:
    """The signed-in actor of this request without enforcing anything (machine routes use
    it to honour a dashboard session). Raises Unauthorized for a bad bearer credential."""
    if not auth.auth_enabled():
        return AUTH_OFF_ACTOR
    tok = auth.bearer()
    if tok is not None:
        if tok.startswith(accounts.KEY_PREFIX):
            user, key_id = accounts.resolve_key(tok)
            return accounts.actor_of(user, key_id)
        if auth.check_token(tok):
            return ADMIN_TOKEN_ACTOR
        raise Unauthorized("invalid API key or token")
    user = flask_login.current_user
    if user is not None and user.is_authenticated:
        return accounts.actor_of(user)
    if session.get("admin") and auth.admin_token():
        return ADMIN_TOKEN_ACTOR
    return None


def login_admin_token(candidate: str) -> None:
    """Sign the browser session in with ``STCLOUD_ADMIN_TOKEN`` (SPEC §1). Raises Unauthorized."""
    if not auth.check_token(candidate):
        audit.record("auth.login", outcome="denied", actor="anonymous", detail={"method": "admin token"})
        raise Unauthorized("That token is not right.")
    flask_login.logout_user()
    session.clear()
    session["admin"] = True
    session.permanent = True
    audit.record("auth.login", target=ADMIN_TOKEN_ACTOR.name, actor=ADMIN_TOKEN_ACTOR,
                 detail={"method": "admin token"})


def stored_access(job_id: str | None) -> str:
    """May this request's signed-in user read a stored object through the dashboard (the
    S3 endpoint's unsigned GETs)? ``"yes"``; ``"no"`` (anonymous, bad credential, a member
    listing); ``"hidden"`` (another member's job: for this member it does not exist).
    Admins and viewers read everything, members their own jobs' files."""
    try:
        actor = resolve_actor()
    except StcloudError:
        return "no"
    if actor is None:
        return "no"
    if actor.role != scope.MEMBER:
        return "yes"
    if not job_id:
        return "no"
    return "yes" if accounts.job_owner(job_id) == actor.user_id else "hidden"


def current_actor() -> scope.Actor | None:
    return g.get("actor")


def _refuse_anonymous():
    if request.path.startswith("/api/") or request.method not in policy.SAFE_METHODS:
        raise Unauthorized("sign in first: log in, or send Authorization: Bearer <API key>")
    target = url_for("web.login", next=request.full_path.rstrip("?"))
    if request.headers.get("HX-Request"):  # a poll after the session ended: htmx loads the login page
        return make_response("sign in again", 401, {"HX-Redirect": target})
    return redirect(target)


def _guard():
    g.via_bearer = auth.bearer() is not None
    g.actor = None
    scope.bind(None)
    scope.bind_client(None)
    if auth.is_machine_request() or request.endpoint == "static":
        return None
    scope.bind_client(auth.client_addr())
    if not auth.auth_enabled():
        if not auth.is_loopback_addr(request.remote_addr):
            raise Forbidden("authentication is off (STCLOUD_AUTH=off): only clients on this machine are served")
        g.actor = AUTH_OFF_ACTOR
    elif auth.is_public_endpoint(request.endpoint):
        try:
            g.actor = resolve_actor()  # known if signed in (logout audits who left)
        except StcloudError:
            g.actor = None
    else:
        g.actor = resolve_actor()
        if g.actor is None:
            return _refuse_anonymous()
        needed = policy.required_role(request.endpoint, request.method)
        if not g.actor.at_least(needed):
            raise Forbidden(f"your role ({g.actor.role}) cannot do this; it needs {needed}")
    scope.bind(g.actor)
    # The sign-in forms predate the session they would be checked against (as before).
    if request.method in auth.CSRF_METHODS and not g.via_bearer and not auth.is_json_request() \
            and request.endpoint not in LOGIN_ENDPOINTS:
        sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
        expected = session.get("csrf", "")
        if not expected or not sent or not hmac.compare_digest(sent, expected):
            raise Forbidden("CSRF token missing or invalid; reload the page and try again")
    return None


# ---- the audit hook -------------------------------------------------------------------------

# Endpoint -> action name; an unlisted state-changing endpoint is recorded under its own name.
ACTIONS = {
    "web.login_post": "auth.login", "accounts_api.login": "auth.login",
    "web.logout": "auth.logout", "accounts_api.logout": "auth.logout",
    "accounts_api.create_user": "user.create", "accounts_pages.invite_page": "user.create",
    "accounts_api.update_user": "user.update", "accounts_pages.update_user_page": "user.update",
    "accounts_api.delete_user": "user.delete", "accounts_pages.delete_user_page": "user.delete",
    "accounts_api.change_password": "user.password", "accounts_pages.change_password_page": "user.password",
    "accounts_api.create_token": "token.create", "accounts_pages.create_token_page": "token.create",
    "accounts_api.revoke_token": "token.revoke", "accounts_pages.revoke_token_page": "token.revoke",
    "submit_api.submit_job": "job.submit", "submit_pages.submit_form": "job.submit",
    "jobs_api.cancel_job": "job.cancel", "jobs_pages.cancel_page": "job.cancel",
    "jobs_api.delete_job": "job.delete", "jobs_pages.delete_page": "job.delete",
    "rerun_api.api_rerun": "job.rerun", "rerun_pages.rerun_page": "job.rerun",
    "submit_api.refresh_job": "job.refresh", "submit_pages.refresh_page": "job.refresh",
    "providers_api.put_provider": "provider.settings", "providers_pages.settings_form": "provider.settings",
    "providers_pages.declared_settings_form": "provider.settings",
    "providers_api.put_token": "provider.token.set", "providers_pages.token_form": "provider.token.set",
    "providers_api.del_token": "provider.token.delete", "providers_pages.token_delete_form": "provider.token.delete",
    "costs_api.put_limit": "limit.update", "costs_pages.save_limit_form": "limit.update",
    "costs_api.put_rates": "rates.update", "costs_pages.save_rate_form": "rates.update",
    "settings_api.put_consent": "consent.update", "settings_pages.consent_form": "consent.update",
    "settings_api.put_public_url": "settings.public_url", "settings_pages.public_url_form": "settings.public_url",
    "storage_api.mint_key": "s3.credential.mint", "storage_pages.mint_key": "s3.credential.mint",
    "storage_api.revoke_key": "s3.credential.revoke", "storage_pages.revoke_key": "s3.credential.revoke",
    "workers_admin_api.create": "worker.create", "workers_pages.create_page": "worker.create",
    "workers_admin_api.rotate": "worker.rotate", "workers_pages.rotate_page": "worker.rotate",
    "workers_admin_api.drain": "worker.drain", "workers_pages.drain_page": "worker.drain",
    "workers_admin_api.resume": "worker.resume", "workers_pages.resume_page": "worker.resume",
    "workers_admin_api.delete": "worker.delete", "workers_pages.delete_page": "worker.delete",
    "external_auth_settings.save_section": "settings.external_sign_in",
    "recovery_api.put_recovery": "settings.recovery", "recovery_pages.recovery_form": "settings.recovery",
    "approval_api.approve_job": "job.approve", "approval_pages.approve_page": "job.approve",
    "approval_api.reject_job": "job.reject", "approval_pages.reject_page": "job.reject",
    "approval_api.put_settings": "settings.approval", "approval_pages.save_settings": "settings.approval",
    "notify_prefs_api.put_mine": "user.notifications", "notify_prefs_pages.save_page": "user.notifications",
    "checkpoints_api.resume_job": "job.resume", "checkpoints_pages.resume_submit": "job.resume",
    "checkpoints_api.continue_job": "job.continue",
    "pipelines_api.submit_pipeline": "pipeline.submit",
    "pipelines_api.cancel_pipeline": "pipeline.cancel", "pipelines_pages.cancel_page": "pipeline.cancel",
}
# Body fields whose values are worth keeping (never secrets); other fields are named only.
DETAIL_VALUES = {"role", "disabled", "provider", "hardware", "enabled", "amount_usd", "period", "action",
                 "consent", "value", "name", "bucket", "read_only", "status", "reason", "force"}
NOT_AUDITED = {"submit_api.data_preview", "submit_pages.submit_preview", "costs_api.cost_estimate",
               "config_api.validate_config"}


def _target(resp) -> str | None:
    if request.view_args:
        return ",".join(str(v) for v in request.view_args.values())
    if resp.is_json and resp.status_code < 400:
        body = resp.get_json(silent=True) or {}
        for key in ("job", "user", "worker", "credential"):
            if isinstance(body.get(key), dict):
                inner = body[key]
                return str(inner.get("id") or inner.get("username") or inner.get("access_key_id") or "") or None
        for key in ("id", "job_id", "worker_id", "access_key_id", "username"):
            if body.get(key):
                return str(body[key])
    return None


def _detail() -> dict | None:
    body = request.get_json(silent=True) if auth.is_json_request() else None
    if isinstance(body, dict):
        fields = body
    elif request.form:
        fields = {k: v for k, v in request.form.items() if k != "csrf_token"}
    else:
        return None
    kept = {k: v for k, v in fields.items() if k in DETAIL_VALUES and isinstance(v, (str, int, float, bool))}
    others = sorted(k for k in fields if k not in kept)
    out: dict = dict(kept)
    if others:
        out["fields"] = others[:30]
    return out or None


def _outcome(status: int) -> str:
    return "ok" if status < 400 else "denied" if status in (401, 403, 429) else "failed"


def _audit(resp):
    endpoint = request.endpoint
    if request.method in policy.SAFE_METHODS or endpoint is None or auth.is_machine_request() or endpoint in NOT_AUDITED:
        return resp
    self_audited = endpoint.startswith(SELF_AUDITED_PREFIX) or endpoint in SELF_AUDITED
    if self_audited and resp.status_code < 400:
        return resp
    if endpoint in LOGIN_ENDPOINTS and resp.status_code in (401, 403):
        return resp  # the service recorded the refused sign-in with the attempted name
    try:
        audit.record(ACTIONS.get(endpoint, endpoint), target=_target(resp), outcome=_outcome(resp.status_code),
                     actor=g.get("actor") or "anonymous",
                     detail={**(_detail() or {}), **({"status": resp.status_code} if resp.status_code >= 400 else {})}
                     or None)
    except Exception:  # noqa: BLE001 - never turn a done action into an error page
        log.exception("audit record failed for %s %s", request.method, request.path)
    return resp


def _unbind(_exc):
    scope.bind(None)
    scope.bind_client(None)


# ---- wiring ---------------------------------------------------------------------------------

def _limit_key() -> str:
    return auth.client_addr() or request.remote_addr or "unknown"


def limit_logins(app: Flask) -> None:
    """Rate-limit the sign-in endpoints per client address (429 problem+json). Called once
    the views exist (``stcloud.accounts.routes.init_app``)."""
    limiter: Limiter = app.extensions["stcloud.limiter"]
    rule = app.config.get("STCLOUD_LOGIN_RATE_LIMIT") or "10 per minute"
    for endpoint in LOGIN_ENDPOINTS:
        if endpoint in app.view_functions:
            app.view_functions[endpoint] = limiter.limit(
                rule, methods=["POST"],
                error_message=f"too many sign-in attempts from this address (limit: {rule}); wait and try again",
            )(app.view_functions[endpoint])


def init_app(app: Flask) -> None:
    app.jinja_env.globals["current_actor"] = current_actor
    app.jinja_env.globals["owner_name"] = accounts.owner_name
    # Other sign-in methods (OIDC...) append {"label", "url"}, or a callable returning one or
    # None (settings that change at run time): buttons under the password form.
    app.extensions.setdefault(LOGIN_METHODS, [])
    app.jinja_env.globals["login_methods"] = lambda: [
        m for m in (f() if callable(f) else f for f in app.extensions[LOGIN_METHODS]) if m]

    login_manager = flask_login.LoginManager()
    login_manager.user_loader(accounts.load_session_user)
    if auth.auth_enabled(app):
        login_manager.init_app(app)
    else:
        # No remember-cookie hook: it reads the session on every response, which adds
        # ``Vary: Cookie`` to pages that (auth off) do not depend on who asks.
        app.login_manager = login_manager
    app.extensions["stcloud.limiter"] = Limiter(
        key_func=_limit_key, app=app, storage_uri=app.config.get("STCLOUD_RATE_LIMIT_STORAGE") or "memory://",
        headers_enabled=True)
    app.before_request(_guard)
    app.after_request(_audit)
    app.teardown_request(_unbind)
