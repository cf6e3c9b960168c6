"""The API's own description: ``GET /api/openapi.json`` (OpenAPI 3.1, built by
``stcloud.api.openapi`` from the validating models) and ``GET /api/docs``, the reference page
rendered from the same document. Both are public: the document holds no data."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template

from stcloud.api import openapi
from stcloud.api.schemas.common import OpenApiDocument
from stcloud.api.spec import operation
from stcloud.web import auth

bp = auth.public(Blueprint("api_docs", __name__))
EXCLUDED_BLUEPRINTS = ("s3",)  # the S3 endpoint speaks S3 (XML, SigV4), not this API
DOC_KEY = "stcloud.openapi"


def _classify(endpoint: str) -> str:
    if auth.is_public_endpoint(endpoint):
        return "public"
    return "machine" if auth.is_machine_endpoint(endpoint) else "user"


def document() -> dict:
    """The document (built once per app: the URL map does not change after start-up)."""
    doc = current_app.extensions.get(DOC_KEY)
    if doc is None:
        doc = openapi.build(current_app, _classify,
                            exclude=lambda endpoint: endpoint.split(".")[0] in EXCLUDED_BLUEPRINTS)
        current_app.extensions[DOC_KEY] = doc
    return doc


@bp.get("/api/openapi.json")
@operation(summary="This document (OpenAPI 3.1)", tags=["api"], responses={200: OpenApiDocument})
def openapi_json():
    return jsonify(document())


@bp.get("/api/docs")
@operation(summary="The API reference page, rendered from this document", tags=["api"],
           responses={200: "text/html"})
def api_docs():
    doc = document()
    return render_template("api/docs.html", doc=doc, title="API reference", nav="api",
                           operations=openapi.operations(doc),
                           schema_fields=lambda schema: openapi.fields(doc, schema))


def init_app(app):
    app.register_blueprint(bp)
