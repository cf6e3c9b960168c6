"""Checkpoints, samples and resume: API routes and the job page's gallery / resume pages.

API (members see only their own jobs: others' answer 404):
- ``GET  /api/cloud/jobs/<id>/checkpoints`` — every checkpoint with its files and samples;
- ``GET  /api/cloud/jobs/<id>/checkpoints/<step>/download`` — the checkpoint folder as a zip;
- ``GET  /api/cloud/jobs/<id>/checkpoints/<step>/files/<name>`` — one file (or sample image);
- ``POST /api/cloud/jobs/<id>/checkpoints/<step>/continue {provider?, data_consent?}``;
- ``GET  /api/cloud/jobs/<id>/resume?provider=&checkpoint=`` — the plan (steps and cost left);
- ``POST /api/cloud/jobs/<id>/resume {provider?, checkpoint?, data_consent?}`` → ``201 {job, plan}``;
- ``GET  /api/cloud/jobs/<id>/chain`` — the attempts across providers and ``total_cost_usd``.
"""
from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response, jsonify, redirect, request, send_file, url_for
from werkzeug.http import http_date

from stcloud import db, states
from stcloud.api import validation
from stcloud.api.schemas import flows as schemas
from stcloud.api.spec import operation
from stcloud.errors import BadRequest, StcloudError
from stcloud.jobs import checkpoints, resume
from stcloud.jobs import service as jobs_service
from stcloud.providers import registry
from stcloud.providers.base import AVAILABLE
from stcloud.storage import s3response
from stcloud.web.htmx import is_fragment_request, render
from stcloud.web.params import bool_value, int_arg

api = Blueprint("checkpoints_api", __name__, url_prefix="/api/cloud/jobs")
pages = Blueprint("checkpoints_pages", __name__)


def _visible(job_id: str):
    """The job, if the caller may see it (NotFound otherwise)."""
    with db.session() as s:
        job = jobs_service.get_job(s, job_id)
        return job.id, job.status


def _listing(job_id: str) -> list[dict]:
    return [checkpoints.to_dict(job_id, ck) for ck in checkpoints.scan(job_id)]


def _opt_provider(value) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise BadRequest("provider must be a provider name", extra={"field": "provider"})
    return registry.validate_name(value)


def _opt_step(value, name: str = "checkpoint") -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"{name} must be a step number (an integer >= 0)", extra={"field": name})
    return value


def _consent(value) -> bool | None:
    return None if value in (None, "") else bool_value(value, "data_consent")


# ---- API ----------------------------------------------------------------------------------

@api.get("/<job_id>/checkpoints")
@operation(summary="Every checkpoint with its files and samples", tags=["jobs"],
           responses={200: schemas.Checkpoints})
def list_checkpoints(job_id):
    _visible(job_id)
    return jsonify({"job_id": job_id, "checkpoints": _listing(job_id)})


@api.get("/<job_id>/checkpoints/<int:step>/download")
@operation(summary="The checkpoint folder as a zip", tags=["jobs"], responses={200: "application/zip"})
def download_checkpoint(job_id, step):
    _visible(job_id)
    fh = checkpoints.build_zip(job_id, step)
    return send_file(fh, mimetype="application/zip", as_attachment=True,
                     download_name=f"{job_id}-checkpoint-{step}.zip", max_age=0)


@api.get("/<job_id>/checkpoints/<int:step>/files/<path:name>")
@operation(summary="One file of a checkpoint (or a sample image)", tags=["jobs"],
           responses={200: ("*/*", "the file, with its stored content type")})
def checkpoint_file(job_id, step, name):
    _visible(job_id)
    info, fh = checkpoints.open_file(job_id, step, name)
    image = name.lower().endswith(checkpoints.IMAGE_EXTENSIONS)
    base = name.rsplit("/", 1)[-1]
    headers = {"Content-Type": info.content_type if not image or info.content_type.startswith("image/")
               else _image_type(name),
               "Content-Length": str(info.size), "ETag": info.etag, "Last-Modified": http_date(info.last_modified),
               "Content-Disposition": f"{'inline' if image else 'attachment'}; filename*=UTF-8''{quote(base, safe='')}",
               "Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": "sandbox; default-src 'none'"}
    if request.method == "HEAD":
        fh.close()
        return Response(status=200, headers=headers)
    return s3response.object_body(fh, 0, info.size, 200, headers)


def _image_type(name: str) -> str:
    ext = name.lower().rsplit(".", 1)[-1]
    return {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}[ext]


@api.get("/<job_id>/resume")
@operation(summary="What resuming the job would do (steps and cost left)", tags=["jobs"],
           responses={200: schemas.PlanAnswer})
def resume_plan(job_id):
    p = resume.plan(job_id, _opt_provider(request.args.get("provider")),
                    _opt_step(request.args.get("checkpoint")))
    return jsonify({"plan": p.to_dict()})


def _created(result, p):
    return jsonify({"job": result.job, "plan": p.to_dict(), "idempotent": result.idempotent,
                    "warnings": list(result.warnings)}), result.status_code


@api.post("/<job_id>/resume")
@operation(body=schemas.ResumeBody, summary="Resume a failed or cancelled job from a checkpoint, here or on "
           "another provider", tags=["jobs"], responses={201: schemas.Resumed})
def resume_job(job_id):
    body = validation.checked(schemas.ResumeBody, required=False)
    unknown = set(body) - {"provider", "checkpoint", "data_consent"}
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0]!r}", extra={"field": sorted(unknown)[0]})
    result, p = resume.resume(job_id, _opt_provider(body.get("provider")), _opt_step(body.get("checkpoint")),
                              data_consent=_consent(body.get("data_consent")), source="api")
    return _created(result, p)


@api.post("/<job_id>/checkpoints/<int:step>/continue")
@operation(body=schemas.ContinueBody, summary="Start a new job from this checkpoint", tags=["jobs"],
           responses={201: schemas.Resumed})
def continue_job(job_id, step):
    body = validation.checked(schemas.ContinueBody, required=False)
    unknown = set(body) - {"provider", "data_consent"}
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0]!r}", extra={"field": sorted(unknown)[0]})
    result, p = resume.continue_from(job_id, step, _opt_provider(body.get("provider")),
                                     data_consent=_consent(body.get("data_consent")), source="api")
    return _created(result, p)


@api.get("/<job_id>/chain")
@operation(summary="The attempts of a job across providers and their total cost", tags=["jobs"],
           responses={200: schemas.Chain})
def job_chain(job_id):
    return jsonify(resume.chain(job_id))


# ---- pages --------------------------------------------------------------------------------

@pages.get("/jobs/<job_id>/checkpoints")
def gallery(job_id):
    """The job page's lazy section: the chain of attempts and the gallery per step."""
    with db.session() as s:
        job = jobs_service.get_job(s, job_id)
        chain = [resume.attempt_dict(j, n) for n, j in enumerate(resume.chain_of(s, job), 1)]
        ctx = {"job_id": job.id, "job_status": job.status, "terminal": states.is_terminal(job.status),
               "resumable": job.status in resume.RESUMABLE, "auto_resume": job.auto_resume}
    # 286 stops the section's polling once the job has ended (htmx still swaps it in).
    return render("jobs/_gallery.html", status=286 if ctx["terminal"] and is_fragment_request() else 200,
                  checkpoints=_listing(job_id), chain=chain if len(chain) > 1 else [],
                  chain_cost=round(sum(a["cost_usd"] or 0.0 for a in chain), 6), **ctx)


def _confirm_context(job_id: str, provider: str | None, step: int | None, mode: str, error: str | None = None):
    p, plan_error = None, error
    try:
        p = (resume.plan(job_id, provider, step, any_status=True) if mode == "continue"
             else resume.plan(job_id, provider, step))
    except StcloudError as exc:
        plan_error = plan_error or exc.detail
    choices = [(name, svc.label) for name, svc in registry.services() if svc.status == AVAILABLE]
    return {"job_id": job_id, "plan": p.to_dict() if p else None, "error": plan_error, "mode": mode,
            "providers": choices, "provider": provider, "step": step, "nav": "jobs"}


@pages.get("/jobs/<job_id>/resume")
def resume_confirm(job_id):
    _visible(job_id)
    mode = "continue" if request.args.get("mode") == "continue" else "resume"
    provider = request.args.get("provider") or None
    step = int_arg("checkpoint", -1, -1)
    return render("jobs/resume_confirm.html", **_confirm_context(job_id, provider, None if step < 0 else step, mode))


@pages.post("/jobs/<job_id>/resume")
def resume_submit(job_id):
    mode = "continue" if request.form.get("mode") == "continue" else "resume"
    provider = request.form.get("provider") or None
    raw_step = request.form.get("checkpoint") or None
    try:
        step = _opt_step(raw_step)
        consent = _consent(request.form.get("data_consent"))
        if mode == "continue":
            if step is None:
                raise BadRequest("choose the checkpoint to continue from", extra={"field": "checkpoint"})
            result, _p = resume.continue_from(job_id, step, _opt_provider(provider), data_consent=consent,
                                              source="ui")
        else:
            result, _p = resume.resume(job_id, _opt_provider(provider), step, data_consent=consent, source="ui")
    except StcloudError as exc:
        ctx = _confirm_context(job_id, provider, step if isinstance(raw_step, str) and raw_step.isdigit() else None,
                               mode, error=exc.detail)
        ctx["needs_consent"] = bool(exc.extra.get("consent_required")) or exc.status == 409 and "summary" in exc.extra
        return render("jobs/resume_confirm.html", status=exc.status if not is_fragment_request() else 200, **ctx)
    target = url_for("jobs_pages.job_page", job_id=result.job["id"])
    if is_fragment_request():
        resp = redirect(target, 303)
        resp.headers["HX-Redirect"] = target
        return resp
    return redirect(target, 303)


def init_app(app):
    app.register_blueprint(api)
    app.register_blueprint(pages)
