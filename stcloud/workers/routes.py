"""Workers: the admin API (``/api/cloud/workers``) and the Workers page (``/workers``).

    POST   /api/cloud/workers                  {name, labels} -> 201 {worker_id, token, command, worker}
    GET    /api/cloud/workers                  -> {workers: [...], timeout_seconds}
    GET    /api/cloud/workers/<id>             -> {worker}
    POST   /api/cloud/workers/<id>/rotate-token -> {worker_id, token, command, worker}
    POST   /api/cloud/workers/<id>/drain       -> {worker}
    POST   /api/cloud/workers/<id>/resume      -> {worker}   (undo a drain)
    DELETE /api/cloud/workers/<id>[?force=true] -> 204 (409 while it runs a job)
    GET|PUT /api/cloud/workers/settings        {timeout_seconds}
"""
from __future__ import annotations

import shlex

from flask import Blueprint, current_app, jsonify, redirect, request, url_for

from stcloud import settings
from stcloud.api import validation
from stcloud.api.schemas import workers as schemas
from stcloud.api.schemas.settings import ForceQuery
from stcloud.api.spec import operation
from stcloud.errors import Conflict
from stcloud.providers.base import JOB_TOKEN_MINTER
from stcloud.web.htmx import is_fragment_request, render
from stcloud.workers import agent_jobs, service

api = Blueprint("workers_admin_api", __name__, url_prefix="/api/cloud/workers")
bp = Blueprint("workers_pages", __name__)


def server_url() -> str:
    """The URL a worker should use: the configured public URL, else what the admin used."""
    url = settings.get("public_url") or current_app.config.get("STCLOUD_PUBLIC_URL") or request.url_root
    return str(url).rstrip("/")


def worker_command(token: str, labels: dict | None = None) -> str:
    """The command to paste on the worker machine. The token goes in the environment
    (``STCLOUD_WORKER_TOKEN``), never in the worker's argv, which any user can read in ps."""
    parts = ["stcloud", "worker", "--server", server_url()]
    if labels:
        parts += ["--labels", ",".join(f"{k}={v}" for k, v in labels.items())]
    return f"STCLOUD_WORKER_TOKEN={shlex.quote(token)} " + " ".join(shlex.quote(p) for p in parts)


def _truthy(value) -> bool:
    return str(value or "").lower() in ("1", "true", "yes", "on")


# ---- API -------------------------------------------------------------------------------

@api.post("")
@operation(body=schemas.WorkerCreateBody, summary="Add a worker (its token is shown once)",
           responses={201: schemas.WorkerToken},
           tags=["workers"],
           links={201: {name: (f"workers_admin_api.{view}", method, {"worker_id": "$response.body#/worker_id"})
                        for name, view, method in (("GetWorker", "get", "get"), ("DrainWorker", "drain", "post"),
                                                   ("ResumeWorker", "resume", "post"),
                                                   ("RotateToken", "rotate", "post"),
                                                   ("DeleteWorker", "delete", "delete"))}})
def create():
    body = validation.checked(schemas.WorkerCreateBody)
    worker, token = service.create_worker(body.get("name"), body.get("labels"))
    return jsonify({"worker_id": worker["id"], "token": token,
                    "command": worker_command(token), "worker": worker}), 201


@api.get("")
@operation(summary="Every worker and the heartbeat timeout", tags=["workers"], responses={200: schemas.WorkerList})
def list_():
    with_timeout = service.timeout_seconds()
    return jsonify({"workers": service.list_workers(), "timeout_seconds": with_timeout})


@api.get("/settings")
@operation(summary="The worker timeout", responses={200: schemas.WorkerSettingsView}, tags=["workers"])
def get_settings():
    return jsonify({"timeout_seconds": service.timeout_seconds(),
                    "override": settings.get("worker_timeout")})


@api.put("/settings")
@operation(body=schemas.WorkerSettingsBody, summary="Set the worker timeout",
           responses={200: schemas.WorkerSettingsView}, tags=["workers"])
def put_settings():
    service.set_timeout(validation.body(schemas.WorkerSettingsBody).timeout_seconds)
    return get_settings()


@api.get("/<worker_id>")
@operation(summary="One worker", tags=["workers"], responses={200: schemas.WorkerAnswer})
def get(worker_id):
    return jsonify({"worker": service.get_worker(worker_id)})


@api.post("/<worker_id>/rotate-token")
@operation(summary="A new token for a worker (shown once; the old one stops working)", tags=["workers"],
           responses={200: schemas.WorkerToken})
def rotate(worker_id):
    worker, token = service.rotate_token(worker_id)
    return jsonify({"worker_id": worker["id"], "token": token, "command": worker_command(token),
                    "worker": worker})


@api.post("/<worker_id>/drain")
@operation(summary="Let the worker finish its job and take no other", tags=["workers"],
           responses={200: schemas.WorkerAnswer})
def drain(worker_id):
    return jsonify({"worker": service.set_draining(worker_id, True)})


@api.post("/<worker_id>/resume")
@operation(summary="Let a draining worker take jobs again", tags=["workers"], responses={200: schemas.WorkerAnswer})
def resume(worker_id):
    return jsonify({"worker": service.set_draining(worker_id, False)})


@api.delete("/<worker_id>")
@operation(query=ForceQuery, summary="Remove a worker (?force=true while it runs a job)", responses={204: None},
           tags=["workers"])
def delete(worker_id):
    validation.query(ForceQuery)
    service.delete_worker(worker_id, force=_truthy(request.args.get("force")))
    return "", 204


# ---- pages -----------------------------------------------------------------------------

def _ctx(**extra) -> dict:
    return {"workers": service.list_workers(), "timeout": service.timeout_seconds(),
            "timeout_override": settings.get("worker_timeout"), "nav": "workers", **extra}


def _after_action(message: str | None = None):
    if is_fragment_request():
        return render("workers/list.html", block="workers_table", **_ctx(message=message))
    if message:
        return render("workers/list.html", **_ctx(message=message))
    return redirect(url_for("workers_pages.workers_page"))


@bp.get("/workers")
def workers_page():
    return render("workers/list.html", block="workers_table", **_ctx())


@bp.post("/workers")
def create_page():
    worker, token = service.create_worker(request.form.get("name"), request.form.get("labels"))
    secret = {"worker": worker, "token": token, "command": worker_command(token), "action": "created"}
    return _secret_response(secret)


@bp.post("/workers/<worker_id>/rotate-token")
def rotate_page(worker_id):
    worker, token = service.rotate_token(worker_id)
    secret = {"worker": worker, "token": token, "command": worker_command(token), "action": "rotated"}
    return _secret_response(secret)


def _secret_response(secret: dict):
    if is_fragment_request():
        resp = render("workers/list.html", block="secret_panel", secret=secret)
        resp.headers["HX-Trigger"] = "workers-changed"
        return resp
    return render("workers/list.html", **_ctx(secret=secret))


@bp.post("/workers/<worker_id>/drain")
def drain_page(worker_id):
    service.set_draining(worker_id, True)
    return _after_action()


@bp.post("/workers/<worker_id>/resume")
def resume_page(worker_id):
    service.set_draining(worker_id, False)
    return _after_action()


@bp.post("/workers/<worker_id>/delete")
def delete_page(worker_id):
    try:
        service.delete_worker(worker_id, force=_truthy(request.form.get("force")))
    except Conflict as exc:  # shown beside the table instead of replacing it
        return _after_action(exc.detail)
    return _after_action()


@bp.post("/workers/settings")
def settings_page():
    service.set_timeout(request.form.get("timeout_seconds"))
    return redirect(url_for("workers_pages.workers_page"))


def init_app(app):
    # Adapters that start the agent themselves (Slurm) mint its per-job credential with this,
    # and their jobs are reconciled by agent_jobs.
    app.extensions[JOB_TOKEN_MINTER] = service.job_token_minter
    hooks = app.extensions.setdefault("stcloud.schedule_hooks", [])
    if agent_jobs.schedule_hook not in hooks:
        hooks.append(agent_jobs.schedule_hook)
    app.register_blueprint(api)
    app.register_blueprint(bp)
