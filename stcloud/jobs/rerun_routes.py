"""Re-run: ``POST /api/cloud/jobs/<id>/rerun {exact, data_consent?, snapshot_message?}`` ->
``201 {job, rerun_of, exact, idempotent, warnings}``, and the job page's re-run buttons."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, redirect, request, url_for

from stcloud import db
from stcloud.api import validation
from stcloud.api.schemas.jobs import JobAnswer, RerunBody
from stcloud.api.spec import operation
from stcloud.errors import BadRequest, Conflict, StcloudError
from stcloud.jobs import rerun as rerun_service
from stcloud.jobs import service as jobs_service
from stcloud.web.htmx import is_fragment_request, render
from stcloud.web.params import bool_value

api = Blueprint("rerun_api", __name__)
pages = Blueprint("rerun_pages", __name__)


def _home() -> str:
    return current_app.config["STCLOUD_HOME"]


def _result_json(result, job_id: str, exact: bool):
    job = result.job
    new_id = job["id"] if isinstance(job, dict) else job.id
    with db.session() as s:
        body = jobs_service.to_dict(jobs_service.get_job(s, new_id))
    return jsonify({"job": body, "rerun_of": job_id, "exact": exact,
                    "idempotent": bool(getattr(result, "idempotent", False)),
                    "warnings": list(getattr(result, "warnings", None) or [])}), \
        getattr(result, "status_code", 201)


@api.post("/api/cloud/jobs/<job_id>/rerun")
@operation(body=RerunBody, body_required=False, summary="Re-run a job (exactly, or with the current data)",
           tags=["jobs"], responses={201: JobAnswer, 200: (JobAnswer, "an idempotent repeat")})
def api_rerun(job_id):
    body = validation.checked(RerunBody, required=False)
    exact = bool_value(body.get("exact", True), "exact")
    consent = body.get("data_consent")
    consent = None if consent is None else bool_value(consent, "data_consent")
    message = body.get("snapshot_message")
    if message is not None and not isinstance(message, str):
        raise BadRequest("snapshot_message must be a string")
    result = rerun_service.rerun(_home(), job_id, exact=exact, data_consent=consent, snapshot_message=message)
    return _result_json(result, job_id, exact)


@pages.post("/jobs/<job_id>/rerun")
def rerun_page(job_id):
    """The job page's re-run buttons. htmx: the new job's page (HX-Redirect) or a message
    fragment with the next choice (re-run with current data, confirm the upload)."""
    exact = bool_value(request.form.get("exact", "1"), "exact")
    consent_raw = request.form.get("data_consent")
    consent = None if consent_raw in (None, "") else bool_value(consent_raw, "data_consent")
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
    app.register_blueprint(api)
    app.register_blueprint(pages)
