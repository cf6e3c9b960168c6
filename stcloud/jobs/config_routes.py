"""The config form's schema: ``GET /api/cloud/config/fields`` (fields, JSON schema, presets per
model family) and ``POST /api/cloud/config/validate {"config": {...}}`` → ``{valid, errors}``
(the same check the submit API applies)."""
from __future__ import annotations

from flask import Blueprint, jsonify

from stcloud.api import validation
from stcloud.api.schemas import flows as schemas
from stcloud.api.spec import operation
from stcloud.errors import BadRequest
from stcloud.jobs import config_fields

api = Blueprint("config_api", __name__, url_prefix="/api/cloud/config")


@api.get("/fields")
@operation(summary="The config form: fields, presets per model family, JSON schema", tags=["jobs"],
           responses={200: schemas.ConfigForm})
def config_schema():
    return jsonify({"fields": config_fields.form_fields(), "presets": config_fields.PRESETS,
                    "schema": config_fields.form_schema()})


@api.post("/validate")
@operation(body=schemas.ConfigValidateBody, summary="Check a training config against the form's field schema",
           tags=["jobs"], responses={200: schemas.ConfigCheck})
def validate_config():
    body = validation.checked(schemas.ConfigValidateBody)
    if "config" not in body:
        raise BadRequest("config is required (the training config, a JSON object)", extra={"field": "config"})
    if not isinstance(body["config"], dict):
        raise BadRequest("config must be a JSON object", extra={"field": "config"})
    errors = config_fields.errors_of(body["config"])
    return jsonify({"valid": not errors, "errors": errors})


def init_app(app):
    app.jinja_env.globals["config_form_fields"] = config_fields.form_fields
    app.jinja_env.globals["config_presets"] = config_fields.PRESETS
    app.register_blueprint(api)
