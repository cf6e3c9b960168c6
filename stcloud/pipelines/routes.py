"""Pipelines: ``POST|GET /api/cloud/pipelines``, ``GET /api/cloud/pipelines/<id>``,
``POST /api/cloud/pipelines/<id>/cancel``; the page ``/pipelines/<id>`` with its graph."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, redirect, request, url_for
from markupsafe import Markup

from stcloud.api import validation
from stcloud.api.schemas import flows as schemas
from stcloud.api.spec import operation
from stcloud.jobs import waiting
from stcloud.pipelines import graph, service
from stcloud.web.htmx import render
from stcloud.web.params import int_arg

api = Blueprint("pipelines_api", __name__, url_prefix="/api/cloud/pipelines")
pages = Blueprint("pipelines_pages", __name__)

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")


def _document():
    if request.mimetype in YAML_TYPES:
        return request.get_data(as_text=True)  # checked by the pipeline parser (pipelines/spec.py)
    return validation.checked(schemas.PipelineBody)


@api.post("")
@operation(body=schemas.PipelineBody, summary="Submit a pipeline of jobs (JSON, or the same document as YAML)",
           tags=["pipelines"], responses={201: schemas.PipelineAnswer})
def submit_pipeline():
    return jsonify({"pipeline": service.submit_pipeline(_document())}), 201


@api.get("")
@operation(summary="Pipelines, newest first", tags=["pipelines"], responses={200: schemas.PipelineList})
def list_pipelines():
    return jsonify({"pipelines": service.list_pipelines(int_arg("limit", 50, 1, 500))})


@api.get("/<pipeline_id>")
@operation(summary="One pipeline and its steps", tags=["pipelines"], responses={200: schemas.PipelineAnswer})
def get_pipeline(pipeline_id):
    return jsonify({"pipeline": service.get_pipeline(pipeline_id)})


@api.post("/<pipeline_id>/cancel")
@operation(summary="Cancel every step that has not finished", tags=["pipelines"],
           responses={200: schemas.PipelineAnswer})
def cancel_pipeline(pipeline_id):
    return jsonify({"pipeline": service.cancel_pipeline(pipeline_id)})


def _svg(info: dict) -> str:
    return graph.svg(info["steps"], link=lambda job_id: url_for("jobs_pages.job_page", job_id=job_id))


@pages.get("/pipelines/<pipeline_id>")
def pipeline_page(pipeline_id):
    info = service.get_pipeline(pipeline_id)
    return render("pipelines/detail.html", block="pipeline_panel", pipeline=info,
                  graph_svg=Markup(_svg(info)), nav="jobs")


@pages.get("/pipelines/<pipeline_id>/graph.svg")
def pipeline_graph(pipeline_id):
    return Response(_svg(service.get_pipeline(pipeline_id)), mimetype="image/svg+xml")


@pages.post("/pipelines/<pipeline_id>/cancel")
def cancel_page(pipeline_id):
    service.cancel_pipeline(pipeline_id)
    return redirect(url_for("pipelines_pages.pipeline_page", pipeline_id=pipeline_id), 303)


def init_app(app):
    app.register_blueprint(api)
    app.register_blueprint(pages)
    app.extensions[waiting.HOOK] = service.submit_waiting
    app.jinja_env.globals.update(pipeline_link=service.job_link)
