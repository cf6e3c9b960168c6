"""Notification settings: ``GET|PUT /api/cloud/settings/notifications``, the delivery log
``GET /api/cloud/notifications`` and the section of the Settings page."""
from __future__ import annotations

from flask import Blueprint, jsonify, make_response, render_template, request

from stcloud.api import validation
from stcloud.api.schemas import settings as schemas
from stcloud.api.spec import operation
from stcloud.errors import StcloudError
from stcloud.notify import config, sender

api = Blueprint("notify_api", __name__, url_prefix="/api/cloud")
pages = Blueprint("notify_pages", __name__)


@api.get("/settings/notifications")
@operation(summary="The notification settings", tags=["notifications"],
           responses={200: schemas.NotificationSettings})
def get_notifications():
    return jsonify(config.view())


@api.put("/settings/notifications")
@operation(body=schemas.NotificationsBody, summary="Change the notification settings", tags=["notifications"],
           responses={200: schemas.NotificationSettings})
def put_notifications():
    return jsonify(config.update(validation.checked(schemas.NotificationsBody)))


@api.get("/notifications")
@operation(summary="The notification delivery log", tags=["notifications"], responses={200: schemas.DeliveryLog})
def delivery_log():
    return jsonify({"deliveries": sender.recent()})


def _section(status: int = 200, **ctx):
    resp = make_response(render_template("notify/_settings.html", cfg=config.view(),
                                         deliveries=sender.recent(20), **ctx), status)
    resp.headers.add("Vary", "HX-Request")
    return resp


@pages.get("/settings/notifications")
def notifications_section():
    return _section()


def _form_body(form) -> dict:
    def on(name):
        return form.get(name) in ("1", "on", "true")

    body: dict = {"events": form.getlist("events")}
    for ch in ("slack", "discord", "webhook"):
        part: dict = {"enabled": on(f"{ch}_enabled")}
        if form.get(f"{ch}_url", "").strip():  # blank keeps the stored URL
            part["url"] = form[f"{ch}_url"].strip()
        if on(f"{ch}_clear"):
            part["url"], part["enabled"] = None, False
        body[ch] = part
    email: dict = {"enabled": on("email_enabled"), "starttls": on("email_starttls")}
    for key in ("host", "port", "sender", "to", "username"):
        if form.get(f"email_{key}", "").strip():
            email[key] = form[f"email_{key}"].strip()
    if form.get("email_password"):
        email["password"] = form["email_password"]
    body["email"] = email
    return body


@pages.post("/settings/notifications")
def notifications_form():
    try:
        out = config.update(_form_body(request.form))
    except StcloudError as err:
        return _section(422, error=err.detail)
    return _section(saved=True, new_secret=out.get("webhook_secret"))


def init_app(app):
    app.register_blueprint(api)
    app.register_blueprint(pages)
