"""A user's own notification preferences: ``GET|PUT /api/cloud/me/notifications`` and the
page ``/account/notifications``."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from stcloud.api import validation
from stcloud.api.schemas import flows as schemas
from stcloud.api.spec import operation
from stcloud.errors import StcloudError
from stcloud.notify import prefs
from stcloud.web.htmx import render

api = Blueprint("notify_prefs_api", __name__, url_prefix="/api/cloud/me")
pages = Blueprint("notify_prefs_pages", __name__)


@api.get("/notifications")
@operation(summary="My notification preferences", tags=["notifications"], responses={200: schemas.NotificationPrefs})
def get_mine():
    return jsonify(prefs.get_mine())


@api.put("/notifications")
@operation(body=schemas.NotificationPrefsBody, summary="My notification preferences (events, e-mail)",
           tags=["notifications"], responses={200: schemas.NotificationPrefs})
def put_mine():
    return jsonify(prefs.put_mine(validation.checked(schemas.NotificationPrefsBody)))


def _page(status: int = 200, **ctx):
    return render("notify/preferences.html", block="prefs_body", status=status, nav="account", **ctx)


@pages.get("/account/notifications")
def prefs_page():
    try:
        view = prefs.get_mine()
    except StcloudError as err:  # the admin token or auth off: no account; the page says so
        return _page(view=None, notice=err.detail)
    return _page(view=view)


@pages.post("/account/notifications")
def save_page():
    body = {"events": request.form.getlist("events"), "email": request.form.get("email", "")}
    try:
        view = prefs.put_mine(body)
    except StcloudError as err:  # a bad field (the form again, 422) or no account (404)
        if err.status != 400:
            return _page(err.status, view=None, error=err.detail)
        return _page(422, view=prefs.get_mine(), error=err.detail)
    return _page(view=view, saved=True)


def init_app(app):
    app.register_blueprint(api)
    app.register_blueprint(pages)
