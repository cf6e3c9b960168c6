"""Approve or reject a job waiting in ``pending_approval`` (SPEC §13).

Approve: the provider must still be ready and the consent setting must still allow the upload
(else the error, and the job keeps waiting); then ``pending_approval -> uploading`` and the rest
of the submit pipeline — packaging, ``run_job`` outside any transaction, the answer through the
one update path; a failure leaves the job ``failed`` with the reason, as a submit does.
Reject: ``cancelled`` (it never ran; nothing failed) with the reason on the job and its events;
its reservation is released because it is no longer an active job.
"""
from __future__ import annotations

from stcloud import db, states
from stcloud.accounts import scope
from stcloud.errors import BadRequest, Conflict, NotConfigured
from stcloud.jobs import consent, job_secrets, submit
from stcloud.jobs import service as jobs_service
from stcloud.jobs.request import SubmitRequest
from stcloud.models import Job, utcnow
from stcloud.providers import registry
from stcloud.publishing import service as publishing

MAX_REASON = 500


def _actor_name() -> str:
    actor = scope.current()
    return actor.name if actor else "system"


def _waiting(s, job_id: str) -> Job:
    job = jobs_service.get_job(s, job_id)  # NotFound for a job the actor may not see
    if job.status != states.PENDING_APPROVAL:
        raise Conflict(f"job {job_id} is {job.status}, not pending_approval: only a job awaiting approval can be "
                       f"approved or rejected", extra={"status": job.status})
    return job


def _decision(job: Job, state: str, **more) -> None:
    info = dict((job.provider_data or {}).get("approval") or {})
    info.update(state=state, decided_by=_actor_name(), decided_at=utcnow().isoformat().replace("+00:00", "Z"),
                **more)
    job.provider_data = {**(job.provider_data or {}), "approval": info}


def _request_of(job: Job) -> SubmitRequest:
    """What the launch steps need, from the row the submit wrote."""
    approval = (job.provider_data or {}).get("approval") or {}
    return SubmitRequest(
        # the row keeps secrets redacted (jobs/job_secrets.py): the launch needs them back
        provider=job.provider, name=job.name, config=job_secrets.unseal(job.id, job.config),
        dataloader_config=job_secrets.unseal(job.id, job.dataloader_config, "dataloader"), hardware=job.hardware,
        data_consent=True,
        max_cost_usd=job.max_cost_usd, idempotency_key=None, snapshot_message=None, config_name=job.config_name,
        delivery=job.delivery, requirements=job.requirements,
        expected_dataset_sha256=approval.get("expected_dataset_sha256"), rerun_of=job.rerun_of,
        options=dict((job.provider_data or {}).get("options") or {}))


def approve(job_id: str, *, source: str = "api") -> dict:
    """Approve and launch. Returns the job dict. Raises NotFound, Conflict (409: not waiting),
    NotConfigured (provider not ready: the job keeps waiting), Forbidden (consent "Never
    Upload"), and after the move to ``uploading`` whatever a submit's launch raises (the job
    is then ``failed`` with the reason)."""
    with db.session() as s:
        job = _waiting(s, job_id)
        provider = job.provider
    service = registry.get(provider)
    reason = service.not_ready_reason()
    if reason:
        raise NotConfigured(reason, extra={"provider": provider})
    if service.uploads_data:
        consent.refuse_cloud(service.label)
    with db.transaction() as s:
        job = _waiting(s, job_id)  # decided by someone else meanwhile: 409
        _decision(job, "approved")
        jobs_service.transition(s, job, states.UPLOADING, source=source, detail=f"approved by {_actor_name()}")
        job.progress = {**(job.progress or {}), "stage": "scan"}
        req = _request_of(job)
        has_local = bool((job.data_summary or {}).get("datasets"))  # the scan at submit: local datasets
        extra_inputs = publishing.launch_inputs(job.delivery)
    return submit.launch(job_id, job.name, req, service, extra_inputs, source, has_local=has_local)


def parse_reason(body) -> str | None:
    """The optional ``reason`` of a reject body. Raises BadRequest."""
    if body in (None, ""):
        return None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object like {\"reason\": \"…\"}")
    unknown = set(body) - {"reason"}
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0]!r}; expected reason", extra={"field": sorted(unknown)[0]})
    reason = body.get("reason")
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise BadRequest("reason must be a string", extra={"field": "reason"})
    reason = reason.strip()
    if len(reason) > MAX_REASON:
        raise BadRequest(f"reason is too long (at most {MAX_REASON} characters)", extra={"field": "reason"})
    return reason or None


def reject(job_id: str, reason: str | None = None, *, source: str = "api") -> dict:
    """Reject: the job ends ``cancelled`` with the reason and bills nothing. Raises NotFound,
    Conflict (409: not waiting)."""
    who = _actor_name()
    text = f"rejected by {who}" + (f": {reason}" if reason else "")
    with db.transaction() as s:
        job = _waiting(s, job_id)
        _decision(job, "rejected", reason=reason)
        jobs_service.transition(s, job, states.CANCELLED, source=source, detail=text)
        job.error = text  # what the list and the API show as the reason it ended
        job.progress = {**(job.progress or {}), "stage": "rejected"}
        return jobs_service.to_dict(job)
