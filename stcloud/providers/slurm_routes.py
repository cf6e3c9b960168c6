"""Slurm provider settings (SPEC §13) and its scheduler job.

    GET    /api/cloud/providers/slurm         -> the settings (rest_token never returned: rest_token_set)
    PUT    /api/cloud/providers/slurm         {transport, partition, …, rest_token} -> the settings; 400 naming the field
    GET    /api/cloud/providers/slurm/validate -> {valid, …} (scontrol ping / slurmrestd ping)
    DELETE /api/cloud/providers/slurm/token   -> forget the stored rest_token
    POST   /providers/slurm/settings          the Providers-page form (same validation)

``stcloud.workers.agent_jobs`` reads Slurm's view of each job every few seconds in the scheduler
process.
"""
from __future__ import annotations

from flask import Blueprint, jsonify, make_response, render_template, request

from stcloud.api import validation
from stcloud.api.schemas import settings as schemas
from stcloud.api.spec import operation
from stcloud.errors import StcloudError
from stcloud.providers import slurm_factory, slurm_settings
from stcloud.providers.base import ProviderFailure
from stcloud.providers.routes import provider_view

api = Blueprint("slurm_settings_api", __name__, url_prefix="/api/cloud/providers/slurm")
pages = Blueprint("slurm_settings_pages", __name__)


@api.get("")
@operation(summary="The Slurm provider's settings", tags=["providers"], responses={200: schemas.SlurmSettings})
def get_settings():
    return jsonify(slurm_settings.view())


@api.put("")
@operation(body=schemas.SlurmSettingsBody, summary="Change the Slurm provider's settings", tags=["providers"],
           responses={200: schemas.SlurmSettings})
def put_settings():
    return jsonify(slurm_settings.update(validation.checked(schemas.SlurmSettingsBody)))


@api.get("/validate")
@operation(summary="Check the Slurm settings against the cluster", tags=["providers"], responses={200: schemas.SlurmCheck})
def validate():
    service = slurm_factory.create()
    reason = service.not_ready_reason()
    if reason:
        return jsonify({"valid": False, "error": reason})
    try:
        info = service.validate_credentials()
    except ProviderFailure as exc:
        return jsonify({"valid": False, "error": exc.message})
    return jsonify({"valid": True, **info})


@api.delete("/token")
@operation(summary="Forget the slurmrestd token", tags=["providers"], responses={200: schemas.SlurmSettings})
def delete_token():
    return jsonify(slurm_settings.delete_token())


@pages.post("/providers/slurm/settings")
def settings_form():
    """The generic settings form of the Providers page, validated like the API."""
    status, ctx = 200, {"saved": True}
    try:
        slurm_settings.update(slurm_settings.from_form(request.form, slurm_settings.stored()))
    except StcloudError as err:
        status, ctx = 422, {"error": err.detail, "field": err.extra.get("field")}
    resp = make_response(render_template("providers/_generic.html", p=provider_view("slurm"), **ctx), status)
    resp.headers.add("Vary", "HX-Request")
    return resp


def init_app(app):
    app.register_blueprint(api)
    app.register_blueprint(pages)
