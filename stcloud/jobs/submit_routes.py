"""Submitting: the REST API (``POST /api/cloud/jobs/submit``, ``POST /api/cloud/data-preview``,
``POST /api/cloud/jobs/<id>/refresh``, ``GET /api/cloud/jobs/submit/progress``) and the Submit
page (preview -> consent -> submit with a progress bar), plus the job page's Refresh button."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

from flask import (
    Blueprint,
    current_app,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)

from stcloud import db, states
from stcloud.api import validation
from stcloud.api.schemas import jobs as schemas
from stcloud.api.spec import operation
from stcloud.costs import service as costs
from stcloud.errors import BadRequest, StcloudError
from stcloud.jobs import consent, idempotency, poller
from stcloud.jobs import routes as job_routes
from stcloud.jobs import service as jobs_service
from stcloud.jobs import submit as submit_service
from stcloud.jobs.submit_progress import STAGES
from stcloud.providers import config as provider_config
from stcloud.providers import registry
from stcloud.snapshots import owners as snapshot_owners
from stcloud.snapshots import service as snapshots
from stcloud.trainer.sample import ensure_sample
from stcloud.web.htmx import is_fragment_request, render
from stcloud.web.params import json_body

api = Blueprint("submit_api", __name__, url_prefix="/api/cloud")
pages = Blueprint("submit_pages", __name__)

DELIVERY_CHOICES = (
    ("", "Keep outputs with the provider"),
    ("builtin", "This machine (built-in S3 endpoint)"),
    ("hub", "Hugging Face Hub"),
    ("s3", "External S3 bucket"),
)
# A self-hosted provider's worker uploads the outputs to this machine: "keep them with the
# provider" means here.
SELF_HOSTED_OUTPUTS_LABEL = "Uploaded here by the worker (no extra delivery)"
S3_FIELDS = ("endpoint_url", "bucket", "prefix", "region", "access_key_id", "secret_access_key")


# ---- API -------------------------------------------------------------------------------------

@api.post("/jobs/submit")
@operation(body=schemas.SubmitBody, summary="Submit a training job (SPEC §3)", tags=["jobs"],
           responses={201: (schemas.JobAnswer, "the new job"),
                      200: (schemas.JobAnswer, "the job an idempotency key already made")},
           links={201: {name: (endpoint, method, {"job_id": "$response.body#/job/id"})
                        for name, endpoint, method in (("GetJob", "jobs_api.get_job", "get"),
                                                       ("JobLogs", "jobs_api.job_logs", "get"),
                                                       ("JobEvents", "jobs_api.job_events", "get"),
                                                       ("CancelJob", "jobs_api.cancel_job", "post"),
                                                       ("RerunJob", "rerun_api.api_rerun", "post"))}})
def submit_job():
    result = submit_service.submit(json_body(), source="api")
    return jsonify(result.to_response()), result.status_code


@api.get("/jobs/submit/progress")
@operation(query=schemas.SubmitProgressQuery, summary="The job a submit in flight made (by idempotency key)",
           tags=["jobs"], responses={200: schemas.SubmitProgress})
def submit_progress():
    key = validation.query(schemas.SubmitProgressQuery).idempotency_key
    return jsonify({"idempotency_key": key, "job": idempotency.job_for_key(key)})


@api.post("/data-preview")
@operation(body=schemas.DataPreviewBody, summary="What a submit would upload (nothing is uploaded)",
           tags=["jobs"], responses={200: schemas.DataPreview})
def data_preview():
    return jsonify(submit_service.preview(validation.checked(schemas.DataPreviewBody)))


@api.post("/jobs/<job_id>/refresh")
@operation(summary="Ask the provider for the job's status now", tags=["jobs"], responses={200: schemas.JobAnswer})
def refresh_job(job_id):
    outcome = poller.refresh(job_id, source="refresh")
    with db.session() as s:
        return jsonify({"job": jobs_service.to_dict(jobs_service.get_job(s, job_id)),
                        "refreshed": True, "moved": outcome.moved})


# ---- pages -----------------------------------------------------------------------------------

def _sample() -> dict:
    """Config + dataloader text from the sample (when the trainer package provides one)."""
    cached = current_app.extensions.get("stcloud.submit_sample")
    if cached is not None:
        return cached
    out = {"config": "{}", "dataloader": "[]"}
    try:
        paths = ensure_sample(Path(current_app.config["STCLOUD_HOME"]) / "sample")
        out = {"config": Path(paths["config_path"]).read_text(),
               "dataloader": Path(paths["dataloader_path"]).read_text()}
    except Exception:  # noqa: BLE001 - no sample: empty editors
        current_app.logger.debug("no sample config", exc_info=True)
    current_app.extensions["stcloud.submit_sample"] = out
    return out


def _priced_by_profile(svc) -> bool:
    """Jobs of this provider pick a hardware profile (workers match by requirements)."""
    return not svc.accepts_requirements and bool(svc.hardware_profiles())


def _form_context(form: dict | None = None) -> dict:
    sample = _sample()
    form = dict(form or {})
    order = registry.display_order()
    services = sorted(registry.services(), key=lambda p: order.index(p[0]) if p[0] in order else len(order))
    choices = [{**svc.capabilities(), "priced_by_profile": _priced_by_profile(svc)} for _name, svc in services]
    ready = [c["name"] for c in choices if c["status"] == "available" and c["configured"]]
    # The first ready cloud provider, else a self-hosted one (make run: no account needed).
    preferred = [c["name"] for c in choices if c["name"] in ready and c["uploads_data"]] + ready
    form.setdefault("provider", preferred[0] if preferred else "")
    form.setdefault("config_json", sample["config"])
    form.setdefault("dataloader_json", sample["dataloader"])
    hardware = costs.hardware_choices([(n, svc) for n, svc in services if _priced_by_profile(svc)])
    default_hw = next((svc.default_hardware for _n, svc in services if _priced_by_profile(svc)), None)
    form.setdefault("hardware", default_hw or (hardware[0]["name"] if hardware else ""))
    # With a public URL the outputs can come home: "download only" delivers to this machine.
    form.setdefault("delivery_type", "builtin" if provider_config.public_url_view()["public_url"] else "")
    return {"form": form, "hardware_choices": hardware, "delivery_choices": DELIVERY_CHOICES,
            "self_hosted_outputs_label": SELF_HOSTED_OUTPUTS_LABEL,
            "provider_choices": choices, "consent": consent.current(),
            "consent_label": consent.CHOICES[consent.current()],
            "idempotency_key": uuid.uuid4().hex, "nav": "submit"}


@pages.get("/submit")
def submit_page():
    """The submit form. ``?config_name=N&commit=SHA`` (the Configs page's "use this
    version") starts from that snapshot."""
    form, error = {}, None
    name, commit = request.args.get("config_name"), request.args.get("commit")
    if name and commit:
        try:
            snap = snapshots.files_at(current_app.config["STCLOUD_HOME"], name, commit,
                                      snapshot_owners.commit_filter())  # members: their own
            form = {"config_json": json.dumps(snap["config"], indent=2),
                    "dataloader_json": json.dumps(snap["dataloader_config"], indent=2),
                    "config_name": name, "name": name, "based_on": snap["commit"],
                    "snapshot_message": f"based on {snap['commit'][:10]}"}
        except StcloudError as exc:
            error = f"Could not load config {name!r} at {commit[:12]}: {exc.detail}"
    return render("submit/index.html", error=error, **_form_context(form))


def _body_from_form(form) -> dict:
    def text(key):
        return (form.get(key) or "").strip()

    body: dict = {"provider": text("provider") or None, "name": text("name") or None,
                  "config": text("config_json") or None, "dataloader_config": text("dataloader_json") or None,
                  "idempotency_key": text("idempotency_key") or None,
                  "config_name": text("config_name") or None, "snapshot_message": text("snapshot_message") or None,
                  "max_cost_usd": text("max_cost_usd") or None,
                  "data_consent": text("data_consent") in ("1", "true", "yes", "on")}
    service = registry.maybe_get(body["provider"]) if body["provider"] else None
    if service is not None and _priced_by_profile(service):
        body["hardware"] = text("hardware") or None
    delivery_type = text("delivery_type")
    if delivery_type == "hub":
        body["delivery"] = {"type": "hub", "hub_model_id": text("hub_model_id")}
    elif delivery_type == "s3":
        body["delivery"] = {"type": "s3", **{k: text(f"s3_{k}") for k in S3_FIELDS}}
    elif delivery_type:
        body["delivery"] = {"type": delivery_type}
    if service is not None and service.accepts_requirements:
        req = {}
        if text("labels"):
            labels = {}
            for part in text("labels").split(","):
                k, sep, v = part.partition("=")
                if not sep or not k.strip():
                    raise BadRequest(f"labels: {part.strip()!r} is not key=glob", extra={"field": "labels"})
                labels[k.strip()] = v.strip()
            req["labels"] = labels
        for key in ("min_gpus", "min_vram_gb"):
            if text(key):
                req[key] = text(key)
        if req:
            body["requirements"] = req
    return body


def _fragment(template: str, http_status: int = 200, headers: dict | None = None, **ctx):
    resp = make_response(render_template(template, **ctx), http_status)
    resp.headers.add("Vary", "HX-Request")
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


@pages.post("/submit/preview")
def submit_preview():
    form = request.form
    try:
        chosen = {"provider": form["provider"]} if form.get("provider") else {}
        data = submit_service.preview({**chosen,
                                       "dataloader_config": (form.get("dataloader_json") or "").strip() or None})
    except StcloudError as err:
        return _fragment("submit/_message.html", 422, error=err.detail, field=err.extra.get("field"))
    return _fragment("submit/_summary.html", preview=data, summary=data["summary"])


@pages.post("/submit")
def submit_form():
    body: dict = {}
    try:
        body = _body_from_form(request.form)
        result = submit_service.submit(body, source="ui")
    except StcloudError as err:
        if not is_fragment_request():
            ctx = _form_context(dict(request.form))
            consent = err.extra.get("summary") if err.extra.get("consent_required") else None
            return render("submit/index.html", status=err.status, error=None if consent else err.detail,
                          consent_summary=consent, **ctx)
        new_key = uuid.uuid4().hex
        if err.status == 409 and err.extra.get("consent_required"):
            return _fragment("submit/_consent.html", 409, summary=err.extra.get("summary") or {},
                             provider=body.get("provider"))
        return _fragment("submit/_message.html", 422, error=err.detail, field=err.extra.get("field"),
                         job_id=err.extra.get("job_id"), new_key=new_key, title=err.title)
    job_url = url_for("jobs_pages.job_page", job_id=result.job["id"])
    if is_fragment_request():
        return _fragment("submit/_message.html", 200, headers={"HX-Redirect": job_url},
                         ok=True, job_id=result.job["id"], warnings=result.warnings)
    return redirect(job_url, 303)


@pages.get("/submit/progress")
def submit_progress_fragment():
    """Polled while the submit request runs; 286 (htmx: stop polling) once the submit of this
    key has been answered (the job left the upload stage)."""
    key = (request.args.get("idempotency_key") or "").strip()
    job = idempotency.job_for_key(key) if key else None
    answered = job is not None and job["status"] not in (states.PENDING, states.UPLOADING)
    return _fragment("submit/_progress.html", 286 if answered else 200, job=job, stages=STAGES)


@pages.post("/jobs/<job_id>/refresh")
def refresh_page(job_id):
    try:
        poller.refresh(job_id, source="refresh")
    except StcloudError as err:
        if is_fragment_request():
            return _fragment("_error.html", 200, headers={"HX-Retarget": "#refresh-result", "HX-Reswap": "innerHTML"},
                             status=err.status, title=err.title, detail=err.detail)
        raise
    if is_fragment_request():
        return job_routes.job_page(job_id)
    return redirect(url_for("jobs_pages.job_page", job_id=job_id), 303)


def init_app(app):
    app.register_blueprint(api)
    app.register_blueprint(pages)
    app.jinja_env.filters.setdefault("pretty_json", lambda v: json.dumps(v, indent=2, sort_keys=True))
