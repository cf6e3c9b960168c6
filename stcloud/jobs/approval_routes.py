"""Approvals (SPEC §13): ``POST /api/cloud/jobs/<id>/approve|reject`` (admin), the instance
threshold ``GET|PUT /api/cloud/settings/approval``, the job page's buttons and the Spend page's
threshold form."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from stcloud.api import validation
from stcloud.api.schemas import flows as schemas
from stcloud.api.schemas.jobs import JobAnswer
from stcloud.api.spec import operation
from stcloud.errors import StcloudError
from stcloud.jobs import approval, approval_service
from stcloud.jobs.routes import job_page
from stcloud.web.htmx import render

api = Blueprint("approval_api", __name__, url_prefix="/api/cloud")
pages = Blueprint("approval_pages", __name__)


@api.post("/jobs/<job_id>/approve")
@operation(summary="Approve a job waiting for approval and launch it (admin)", tags=["jobs"], responses={200: JobAnswer})
def approve_job(job_id):
    return jsonify({"job": approval_service.approve(job_id, source="api")})


@api.post("/jobs/<job_id>/reject")
@operation(body=schemas.RejectBody, summary="Reject a job waiting for approval (admin): it ends cancelled",
           tags=["jobs"], responses={200: JobAnswer})
def reject_job(job_id):
    reason = approval_service.parse_reason(validation.checked(schemas.RejectBody, required=False))
    return jsonify({"job": approval_service.reject(job_id, reason, source="api")})


@api.get("/settings/approval")
@operation(summary="The approval threshold", tags=["settings"], responses={200: schemas.ApprovalSettings})
def get_settings():
    return jsonify(approval.get_settings())


@api.put("/settings/approval")
@operation(body=schemas.ApprovalSettingsBody, summary="Set the approval threshold (admin)", tags=["settings"],
           responses={200: schemas.ApprovalSettings})
def put_settings():
    return jsonify(approval.put_settings(validation.checked(schemas.ApprovalSettingsBody)))


# ---- pages -----------------------------------------------------------------------------

@pages.post("/jobs/<job_id>/approve")
def approve_page(job_id):
    approval_service.approve(job_id, source="ui")
    return job_page(job_id)


@pages.post("/jobs/<job_id>/reject")
def reject_page(job_id):
    reason = approval_service.parse_reason({"reason": request.form.get("reason") or None})
    approval_service.reject(job_id, reason, source="ui")
    return job_page(job_id)


@pages.get("/spend/approval")
def settings_section():
    return render("approval/_settings.html", cfg=approval.get_settings())


@pages.post("/spend/approval")
def save_settings():
    try:
        cfg = approval.put_settings({"threshold_usd": request.form.get("threshold_usd", "").strip() or None})
    except StcloudError as err:
        return render("approval/_settings.html", status=422, cfg=approval.get_settings(), error=err.detail)
    return render("approval/_settings.html", cfg=cfg, saved=True)


def init_app(app):
    app.register_blueprint(api)
    app.register_blueprint(pages)
