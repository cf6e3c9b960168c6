"""The approval rule (SPEC §13): a submitted job whose estimate is above the approval threshold
waits in ``pending_approval`` until an admin approves or rejects it.

The threshold is an instance setting (``approval_threshold_usd``; None = no approval needed),
overridden per user (``users.approval_threshold_usd``). The estimate compared is the p90 when
there is history (``costs/estimates.py``), else the steps figure — the job's reservation.

The submit pipeline asks ``first_status`` inside the transaction that writes the job row (the
row and its reservation are one commit, so limits count a waiting job) and ``hold`` after the
config snapshot: a held job stops there, nothing is packaged or uploaded.
``jobs/approval_service.py`` approves (launches through the normal provider path) or rejects.
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from stcloud import db, settings, states
from stcloud.accounts import scope
from stcloud.errors import BadRequest
from stcloud.jobs import service as jobs_service
from stcloud.models import Job, User, utcnow
from stcloud.notify import events as notify_events

SETTING = "approval_threshold_usd"
MAX_THRESHOLD = 1_000_000.0


def validate_threshold(value, field: str = SETTING) -> float | None:
    """A threshold in dollars (>= 0) or None (no approval). Raises BadRequest naming the field."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise BadRequest(f"{field} must be a number of dollars or empty", extra={"field": field}) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or not 0 <= value <= MAX_THRESHOLD:
        raise BadRequest(f"{field} must be a number from 0 to {MAX_THRESHOLD:,.0f} dollars, or null (no approval)",
                         extra={"field": field})
    return float(value)


def instance_threshold(s: Session | None = None) -> float | None:
    value = settings.get(SETTING, s=s)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def get_settings() -> dict:
    return {"threshold_usd": instance_threshold()}


def put_settings(body) -> dict:
    """``PUT /api/cloud/settings/approval {"threshold_usd": number|null}``. Raises BadRequest."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    unknown = set(body) - {"threshold_usd"}
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0]!r}; expected threshold_usd",
                         extra={"field": sorted(unknown)[0]})
    if "threshold_usd" not in body:
        raise BadRequest("threshold_usd is required (a number of dollars, or null)", extra={"field": "threshold_usd"})
    settings.put(SETTING, validate_threshold(body["threshold_usd"], "threshold_usd"))
    return get_settings()


def threshold_for(s: Session, user_id: str | None) -> tuple[float | None, str]:
    """(threshold, where it comes from: "user" | "instance")."""
    if user_id:
        user = s.get(User, user_id)
        if user is not None and user.approval_threshold_usd is not None:
            return float(user.approval_threshold_usd), "user"
    return instance_threshold(s), "instance"


def compared_amount(job: Job) -> float:
    """The figure held against the threshold: p90 when history gave one, else the estimate."""
    est = job.estimate or {}
    p90 = est.get("p90_usd")
    return float(p90 if p90 is not None else (job.estimated_cost_usd or 0.0))


def first_status(s: Session, job: Job) -> str:
    """The status a new job moves to from ``pending`` (inside the submit transaction):
    ``pending_approval`` when its estimate is above the threshold, else ``uploading``. A held
    job records why and queues the ``approval.requested`` notification in this transaction."""
    threshold, source = threshold_for(s, scope.current_user_id())
    amount = compared_amount(job)
    if threshold is None or amount <= threshold:
        return states.UPLOADING
    actor = scope.current()
    job.provider_data = {**(job.provider_data or {}), "approval": {
        "state": "pending", "amount_usd": round(amount, 6), "threshold_usd": threshold,
        "threshold_source": source, "requested_by": actor.name if actor else None,
        "requested_at": utcnow().isoformat().replace("+00:00", "Z")}}
    job.progress = {**(job.progress or {}), "stage": "awaiting approval"}
    notify_events.approval_requested(s, job, amount, threshold)
    return states.PENDING_APPROVAL


def hold(job_id: str, req, prebuilt=None) -> dict | None:
    """After the snapshot: the job's dict when it waits for approval (the submit stops there),
    else None. What the launch needs later and the row does not keep is recorded; an archive
    built early (exact re-run) is dropped — approval packages again and re-checks its sha256."""
    with db.session() as s:  # a read first: most submits are not held and take no write lock here
        if s.scalar(select(Job.status).where(Job.id == job_id)) != states.PENDING_APPROVAL:
            return None
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None or job.status != states.PENDING_APPROVAL:  # cancelled meanwhile
            return None
        approval = dict((job.provider_data or {}).get("approval") or {})
        if req.expected_dataset_sha256:
            approval["expected_dataset_sha256"] = req.expected_dataset_sha256
        job.provider_data = {**(job.provider_data or {}), "approval": approval}
        out = jobs_service.to_dict(job)
    if prebuilt is not None:
        Path(prebuilt.path).unlink(missing_ok=True)
    return out


def warning(job: dict) -> str | None:
    """The line a submit answer carries for a held job."""
    info = job.get("approval") or {}
    if job.get("status") != states.PENDING_APPROVAL:
        return None
    return (f"waiting for an admin's approval: the estimate (${info.get('amount_usd', 0):,.2f}) is above the "
            f"approval threshold (${info.get('threshold_usd', 0):,.2f})")
