"""Shell routes: index, login/logout, health."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, redirect, render_template, request, session, url_for
from flask_login import current_user
from sqlalchemy import text

from stcloud import __version__, db, scheduler
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
            auth.login_admin_token(request.form.get("token", ""))
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


@bp.get("/healthz")
def healthz():
    db_ok, db_error = True, None
    try:
        with db.session() as s:
            s.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        db_ok, db_error = False, str(exc).splitlines()[0]
    body = {
        "status": "ok" if db_ok else "error",
        "version": __version__,
        "database": {"ok": db_ok, "error": db_error},
        "scheduler": scheduler.status(current_app) if db_ok else {"alive": False},
    }
    return jsonify(body), (200 if db_ok else 503)


def init_app(app):
    app.register_blueprint(bp)
