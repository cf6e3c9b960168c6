"""Shell routes: index, login/logout, health."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, redirect, render_template, request, session, url_for
from sqlalchemy import text

from stcloud import __version__, db, scheduler
from stcloud.web import auth

bp = Blueprint("web", __name__)


@bp.get("/login")
def login():
    if not auth.admin_token():
        return redirect("/")
    return render_template("login.html", next=auth.safe_next(request.args.get("next")), error=None)


@bp.post("/login")
def login_post():
    nxt = auth.safe_next(request.form.get("next"))
    if auth.check_token(request.form.get("token", "")):
        session.clear()
        session["admin"] = True
        session.permanent = True
        return redirect(nxt)
    return render_template("login.html", next=nxt, error="That token is not right."), 401


@bp.post("/logout")
def logout():
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
