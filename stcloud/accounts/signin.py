"""The sign-in pages: login/logout (health checks are in ``stcloud.ops``). The blueprint keeps
its first name, ``web``: templates, the role policy and clients know ``web.login``."""
from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, session, url_for
from flask_login import current_user

from stcloud.accounts import guard
from stcloud.accounts import service as accounts
from stcloud.errors import Forbidden, Unauthorized
from stcloud.web import auth

bp = Blueprint("web", __name__)


@bp.get("/login")
def login():
    nxt = auth.safe_next(request.args.get("next"))
    if not auth.auth_enabled() or current_user.is_authenticated:
        return redirect(nxt)
    return render_template("login.html", next=nxt, error=None, username="")


@bp.post("/login")
def login_post():
    nxt = auth.safe_next(request.form.get("next"))
    username = request.form.get("username", "")
    try:
        if "token" in request.form and not username:  # SPEC §1: the bootstrap admin token
            guard.login_admin_token(request.form.get("token", ""))
        else:
            accounts.login_password(username, request.form.get("password", ""))
    except (Unauthorized, Forbidden) as exc:
        return render_template("login.html", next=nxt, error=exc.detail, username=username), exc.status
    return redirect(nxt)


@bp.post("/logout")
def logout():
    accounts.logout()
    session.clear()
    return redirect(url_for("web.login"))


def init_app(app):
    app.register_blueprint(bp)
