"""Shell routes: login/logout (health checks are in ``stcloud.ops``)."""
from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, session, url_for

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


def init_app(app):
    app.register_blueprint(bp)
