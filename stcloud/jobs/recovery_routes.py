"""Interrupted submits and uploaded data (``jobs.reconcile``): ``GET|PUT
/api/cloud/settings/recovery`` (``{orphan_policy: adopt|cancel, keep_uploads: bool}``) and its
section of the Settings page."""
from __future__ import annotations

from flask import Blueprint, jsonify, make_response, render_template, request

from stcloud.api import validation
from stcloud.api.schemas import flows as schemas
from stcloud.api.spec import operation
from stcloud.errors import StcloudError
from stcloud.jobs import reconcile

api = Blueprint("recovery_api", __name__, url_prefix="/api/cloud/settings")
pages = Blueprint("recovery_pages", __name__)


@api.get("/recovery")
@operation(summary="The recovery settings", tags=["settings"], responses={200: schemas.RecoverySettings})
def get_recovery():
    return jsonify(reconcile.view())


@api.put("/recovery")
@operation(body=schemas.RecoveryBody, summary="Interrupted submits and uploaded data: the recovery settings (admin)",
           tags=["settings"], responses={200: schemas.RecoverySettings})
def put_recovery():
    return jsonify(reconcile.save(validation.checked(schemas.RecoveryBody)))


def _section(http_status: int = 200, **ctx):
    resp = make_response(render_template("settings/_recovery.html", **ctx), http_status)
    resp.headers.add("Vary", "HX-Request")
    return resp


@pages.get("/settings/recovery")
def recovery_section():
    return _section(recovery=reconcile.view())


@pages.post("/settings/recovery")
def recovery_form():
    body = {"orphan_policy": request.form.get("orphan_policy"),
            "keep_uploads": request.form.get("keep_uploads") in ("1", "on", "true")}
    try:
        view = reconcile.save(body)
    except StcloudError as err:
        return _section(422, recovery={**reconcile.view(), **body}, error=err.detail)
    return _section(recovery=view, saved=True)


def init_app(app):
    app.register_blueprint(api)
    app.register_blueprint(pages)
