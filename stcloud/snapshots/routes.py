"""Config snapshots: the Configs page, the job page's snapshot section, re-run, and the API.

API (JSON; errors are problem+json):
  GET  /api/cloud/configs                          {enabled, git, path, error, configs: [...]}
  PUT  /api/cloud/configs/settings  {enabled}      {enabled}
  GET  /api/cloud/configs/<name>/history           {name, history: [{commit, at, job_id, message}]}
  GET  /api/cloud/configs/<name>/at/<commit>       {name, commit, files, config, dataloader_config, ...}
  GET  /api/cloud/jobs/<id>/snapshot               {commit, files, diff, previous: {job_id, commit}, ...}
  POST /api/cloud/jobs/<id>/rerun  {exact, data_consent?, snapshot_message?}
                                                   201 {job, rerun_of, exact, idempotent, warnings}
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, redirect, request, url_for

from stcloud import db
from stcloud import settings as settings_mod
from stcloud.errors import BadRequest, Conflict, StcloudError
from stcloud.jobs import rerun as rerun_service
from stcloud.jobs import service as jobs_service
from stcloud.snapshots import service
from stcloud.web.htmx import is_fragment_request, render
from stcloud.web.params import int_arg, json_body

api = Blueprint("snapshots_api", __name__)
bp = Blueprint("snapshots_pages", __name__)


def _home() -> str:
    return current_app.config["STCLOUD_HOME"]


def _bool(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise BadRequest(f"{name} must be true or false, got {value!r}")


def _job_ref(job_id: str) -> service.JobRef:
    with db.session() as s:
        return service.JobRef.of(jobs_service.get_job(s, job_id))


def _configs_state() -> dict:
    state = service.status(_home())
    configs = []
    if state["git"] and not state["error"]:
        try:
            configs = service.list_configs(_home())
        except StcloudError as exc:
            state["error"] = exc.detail
    return {**state, "configs": configs}


def _result_json(result, job_id: str, exact: bool):
    job = result.job
    new_id = job["id"] if isinstance(job, dict) else job.id
    with db.session() as s:
        body = jobs_service.to_dict(jobs_service.get_job(s, new_id))
    return jsonify({"job": body, "rerun_of": job_id, "exact": exact,
                    "idempotent": bool(getattr(result, "idempotent", False)),
                    "warnings": list(getattr(result, "warnings", None) or [])}), \
        getattr(result, "status_code", 201)


# ---- API -------------------------------------------------------------------------------

@api.get("/api/cloud/configs")
def api_configs():
    return jsonify(_configs_state())


@api.get("/api/cloud/configs/settings")
def api_get_settings():
    return jsonify({"enabled": service.enabled()})


@api.put("/api/cloud/configs/settings")
def api_put_settings():
    body = json_body()
    if "enabled" not in body:
        raise BadRequest("body must contain enabled: true|false")
    settings_mod.put(service.SETTING_KEY, _bool(body["enabled"], "enabled"))
    return jsonify({"enabled": service.enabled()})


@api.get("/api/cloud/configs/<name>/history")
def api_history(name):
    limit = int_arg("limit", 100, 1, 1000)
    return jsonify({"name": name, "history": service.history(_home(), name, limit=limit)})


@api.get("/api/cloud/configs/<name>/at/<commit>")
def api_at(name, commit):
    data = service.files_at(_home(), name, commit)
    data.pop("diff_lines", None)
    return jsonify(data)


@api.get("/api/cloud/jobs/<job_id>/snapshot")
def api_job_snapshot(job_id):
    data = service.job_snapshot(_home(), _job_ref(job_id))
    data.pop("diff_lines", None)
    return jsonify(data)


@api.post("/api/cloud/jobs/<job_id>/rerun")
def api_rerun(job_id):
    body = json_body(required=False)
    exact = _bool(body.get("exact", True), "exact")
    consent = body.get("data_consent")
    consent = None if consent is None else _bool(consent, "data_consent")
    message = body.get("snapshot_message")
    if message is not None and not isinstance(message, str):
        raise BadRequest("snapshot_message must be a string")
    result = rerun_service.rerun(_home(), job_id, exact=exact, data_consent=consent, snapshot_message=message)
    return _result_json(result, job_id, exact)


# ---- pages -----------------------------------------------------------------------------

@bp.get("/configs")
def configs_page():
    return render("snapshots/configs.html", block="configs_list", nav="configs", title="Configs",
                  state=_configs_state())


@bp.post("/configs/settings")
def configs_settings():
    settings_mod.put(service.SETTING_KEY, _bool(request.form.get("enabled", ""), "enabled"))
    return redirect(url_for("snapshots_pages.configs_page"), 303)


@bp.get("/configs/<name>")
def config_history_page(name):
    items = service.history(_home(), name, limit=int_arg("limit", 100, 1, 1000))
    return render("snapshots/history.html", block="history", nav="configs", title=f"Config {name}",
                  name=name, history=items)


@bp.get("/configs/<name>/at/<commit>")
def config_version_page(name, commit):
    data = service.files_at(_home(), name, commit)
    return render("snapshots/version.html", block="version", nav="configs", title=f"{name} @ {commit[:10]}",
                  v=data)


@bp.get("/jobs/<job_id>/snapshot")
def job_snapshot_page(job_id):
    ref = _job_ref(job_id)
    snap = service.job_snapshot(_home(), ref)
    return render("snapshots/job_snapshot.html", block="snapshot_section", nav="jobs",
                  title=f"Snapshot of {ref.name}", job=ref, snap=snap)


@bp.post("/jobs/<job_id>/rerun")
def rerun_page(job_id):
    """The job page's re-run buttons. htmx: the new job's page (HX-Redirect) or a message
    fragment with the next choice (re-run with current data, confirm the upload)."""
    exact = _bool(request.form.get("exact", "1"), "exact")
    consent_raw = request.form.get("data_consent")
    consent = None if consent_raw in (None, "") else _bool(consent_raw, "data_consent")
    try:
        result = rerun_service.rerun(_home(), job_id, exact=exact, data_consent=consent)
    except StcloudError as exc:
        ctx = {"job_id": job_id, "exact": exact, "error": exc.detail, "code": exc.status,
               "extra": exc.extra,
               "dataset_changed": isinstance(exc, Conflict) and rerun_service.is_dataset_changed(exc),
               "needs_consent": isinstance(exc, Conflict) and bool(exc.extra.get("consent_required"))}
        # htmx swaps 2xx/409/422 only: answer 200 so every refusal reaches the user.
        if is_fragment_request():
            return render("snapshots/_rerun_result.html", **ctx)
        return render("snapshots/rerun_refused.html", status=exc.status, nav="jobs",
                      title="Re-run refused", **ctx)
    job = result.job
    new_id = job["id"] if isinstance(job, dict) else job.id
    target = url_for("jobs_pages.job_page", job_id=new_id)
    if is_fragment_request():
        resp = render("snapshots/_rerun_result.html", job_id=job_id, new_job_id=new_id, target=target)
        resp.headers["HX-Redirect"] = target
        return resp
    return redirect(target, 303)


def init_app(app):
    app.register_blueprint(bp)
    app.register_blueprint(api)
