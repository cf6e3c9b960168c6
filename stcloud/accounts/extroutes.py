"""External sign-in routes and the Settings page section.

    GET  /auth/oidc/login?next=     -> 302 to the OpenID provider (PKCE, state, nonce)
    GET  /auth/oidc/callback        -> signs in, 302 to next (or the dashboard); the login
                                       page with the reason when refused
    (both 302 to the login page while OIDC is not configured)
    POST /settings/auth/<ldap|oidc> (admin) -> the section's form, saved or with the error

LDAP has no route of its own: it answers the password form and ``POST /api/auth/login``
through ``accounts.service.login_password`` (local accounts keep their local password)."""
from __future__ import annotations

from flask import Blueprint, make_response, redirect, render_template, request, session, url_for

from stcloud.accounts import extconfig, extservice, guard
from stcloud.accounts import service as accounts
from stcloud.errors import Conflict, Forbidden, NotFound, StcloudError, Unauthorized
from stcloud.web import auth

bp = auth.public(Blueprint("external_auth", __name__))
settings_bp = Blueprint("external_auth_settings", __name__)


def _login_page(error: str, status: int):
    return render_template("login.html", next="/", error=error, username=""), status


@bp.get("/auth/oidc/login")
def oidc_login():
    nxt = auth.safe_next(request.args.get("next"))
    try:
        return redirect(extservice.begin_oidc(session, nxt))
    except NotFound:
        return redirect(url_for("web.login", next=nxt))
    except Unauthorized as exc:
        return _login_page(exc.detail, exc.status)


@bp.get("/auth/oidc/callback")
def oidc_callback():
    try:
        nxt = extservice.finish_oidc(session, request.args)
    except NotFound:
        return redirect(url_for("web.login"))
    except (Unauthorized, Forbidden, Conflict) as exc:
        return _login_page(exc.detail, exc.status)
    return redirect(auth.safe_next(nxt))


@settings_bp.post("/settings/auth/<any(ldap, oidc):name>")
def save_section(name: str):
    try:
        section = extconfig.save(name, request.form)
        saved, status, error = True, 200, None
    except StcloudError as exc:
        section = {**extconfig.view(name), "form": {k: v for k, v in request.form.items()
                                                      if k != extconfig.SECTIONS[name].secret_field}}
        saved, status, error = False, exc.status, exc.detail
    resp = make_response(render_template("accounts/_external_section.html", section=section, saved=saved,
                                         error=error), status)
    resp.headers.add("Vary", "HX-Request")
    return resp


def init_app(app) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(settings_bp)
    app.extensions.setdefault(accounts.PASSWORD_AUTHENTICATORS, []).append(extservice.ldap_authenticator)
    app.extensions.setdefault(guard.LOGIN_METHODS, []).append(extservice.login_method)
    app.jinja_env.globals["external_sign_in_sections"] = lambda: [extconfig.view(n) for n in extconfig.SECTIONS]
