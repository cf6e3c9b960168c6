"""Config snapshots: the Configs page, the job page's snapshot section and the API (re-run:
``jobs/rerun_routes.py``).

API (JSON; errors are problem+json):
  GET  /api/cloud/configs                          {enabled, git, path, error, configs: [...]}
  PUT  /api/cloud/configs/settings  {enabled}      {enabled}
  GET  /api/cloud/configs/<name>/history           {name, history: [{commit, at, job_id, message}]}
  GET  /api/cloud/configs/<name>/at/<commit>       {name, commit, files, config, dataloader_config, ...}
  GET  /api/cloud/jobs/<id>/snapshot               {commit, files, diff, previous: {job_id, commit}, ...}
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, redirect, request, url_for

from stcloud import db
from stcloud import settings as settings_mod
from stcloud.accounts import scope
from stcloud.api import validation
from stcloud.api.schemas import settings as schemas
from stcloud.api.spec import operation
from stcloud.errors import NotFound, StcloudError
from stcloud.models import Job
from stcloud.snapshots import owners, service
from stcloud.web.htmx import render
from stcloud.web.params import bool_value, int_arg

api = Blueprint("snapshots_api", __name__)
bp = Blueprint("snapshots_pages", __name__)


def _home() -> str:
    return current_app.config["STCLOUD_HOME"]


def _job_ref(job_id: str) -> service.JobRef:
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None or not scope.may_see(job.owner_id):  # members: others' jobs do not exist
            raise NotFound(f"job {job_id} not found")
        return service.JobRef.of(job)


def _configs_state() -> dict:
    state = service.status(_home())
    configs = []
    if state["git"] and not state["error"]:
        try:
            configs = service.list_configs(_home(), owners.commit_filter())
        except StcloudError as exc:
            state["error"] = exc.detail
    return {**state, "configs": configs}


# ---- API -------------------------------------------------------------------------------

@api.get("/api/cloud/configs")
@operation(summary="The config repository and the saved configs", tags=["configs"],
           responses={200: schemas.ConfigsState})
def api_configs():
    return jsonify(_configs_state())


@api.get("/api/cloud/configs/settings")
@operation(summary="Whether config snapshots are on", tags=["configs"], responses={200: schemas.ConfigsSettings})
def api_get_settings():
    return jsonify({"enabled": service.enabled()})


@api.put("/api/cloud/configs/settings")
@operation(body=schemas.ConfigsSettingsBody, summary="Turn config snapshots on or off", tags=["configs"],
           responses={200: schemas.ConfigsSettings})
def api_put_settings():
    settings_mod.put(service.SETTING_KEY, validation.body(schemas.ConfigsSettingsBody).enabled)
    return jsonify({"enabled": service.enabled()})


@api.get("/api/cloud/configs/<name>/history")
@operation(query=schemas.HistoryQuery, summary="A config's snapshot history", tags=["configs"],
           responses={200: schemas.ConfigHistory})
def api_history(name):
    validation.query(schemas.HistoryQuery)
    limit = int_arg("limit", 100, 1, 1000)
    return jsonify({"name": name, "history": service.history(_home(), name, limit=limit,
                                                             visible=owners.commit_filter())})


@api.get("/api/cloud/configs/<name>/at/<commit>")
@operation(summary="A config's files at a commit", tags=["configs"], responses={200: schemas.ConfigVersion})
def api_at(name, commit):
    data = service.files_at(_home(), name, commit, owners.commit_filter())
    data.pop("diff_lines", None)
    return jsonify(data)


@api.get("/api/cloud/jobs/<job_id>/snapshot")
@operation(summary="The config snapshot of a job", tags=["configs"], responses={200: schemas.JobSnapshot})
def api_job_snapshot(job_id):
    data = service.job_snapshot(_home(), _job_ref(job_id), owners.commit_filter())
    data.pop("diff_lines", None)
    return jsonify(data)


# ---- pages -----------------------------------------------------------------------------

@bp.get("/configs")
def configs_page():
    return render("snapshots/configs.html", block="configs_list", nav="configs", title="Configs",
                  state=_configs_state())


@bp.post("/configs/settings")
def configs_settings():
    settings_mod.put(service.SETTING_KEY, bool_value(request.form.get("enabled", ""), "enabled"))
    return redirect(url_for("snapshots_pages.configs_page"), 303)


@bp.get("/configs/<name>")
def config_history_page(name):
    items = service.history(_home(), name, limit=int_arg("limit", 100, 1, 1000), visible=owners.commit_filter())
    return render("snapshots/history.html", block="history", nav="configs", title=f"Config {name}",
                  name=name, history=items)


@bp.get("/configs/<name>/at/<commit>")
def config_version_page(name, commit):
    data = service.files_at(_home(), name, commit, owners.commit_filter())
    return render("snapshots/version.html", block="version", nav="configs", title=f"{name} @ {commit[:10]}",
                  v=data)


@bp.get("/jobs/<job_id>/snapshot")
def job_snapshot_page(job_id):
    ref = _job_ref(job_id)
    snap = service.job_snapshot(_home(), ref, owners.commit_filter())
    return render("snapshots/job_snapshot.html", block="snapshot_section", nav="jobs",
                  title=f"Snapshot of {ref.name}", job=ref, snap=snap)


def init_app(app):
    app.register_blueprint(bp)
    app.register_blueprint(api)
