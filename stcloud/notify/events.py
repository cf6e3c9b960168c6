"""Queue notifications in the caller's transaction: one ``notifications`` row per enabled
channel. No network here — the sender delivers them after the commit (scheduler)."""
from __future__ import annotations

from sqlalchemy.orm import Session

from stcloud import settings, timeutil
from stcloud.models import Notification, utcnow
from stcloud.notify import config, prefs


def queue(s: Session, event: str, payload: dict, job_id: str | None = None) -> int:
    """Add one row per channel that takes ``event``, and one e-mail per user whose
    preferences ask for it (``prefs.recipients``); returns how many were queued."""
    chans = config.enabled_channels(s, event)
    body = {"type": event, "timestamp": utcnow().isoformat().replace("+00:00", "Z"), "data": payload}
    for ch in chans:
        s.add(Notification(event=event, channel=ch, job_id=job_id, payload=body))
    people = prefs.recipients(s, event, job_id)
    for address in people:
        s.add(Notification(event=event, channel="email", job_id=job_id, payload=body, recipient=address))
    return len(chans) + len(people)


def job_data(s: Session, job, figures: dict) -> dict:
    """The ``data`` of a job notification; ``figures`` are the job's metrics (duration_seconds,
    final_loss) as the job list computes them."""
    base = (settings.get("public_url", s=s) or "").rstrip("/")
    return {"job": {"id": job.id, "name": job.name, "status": job.status, "provider": job.provider,
                    "error": job.error, "cost_usd": job.cost_usd,
                    "duration_seconds": figures.get("duration_seconds"), "final_loss": figures.get("final_loss"),
                    "url": f"{base}/jobs/{job.id}" if base else None}}


def job_finished(s: Session, job, figures: dict) -> int:
    """Called by ``jobs.service.transition`` when a job reaches completed/failed/cancelled.
    The sender re-reads the error and cost before the first send (they may be written later
    in the same transaction)."""
    return queue(s, f"job.{job.status}", job_data(s, job, figures), job_id=job.id)


def spend(s: Session, event: str, provider: str, messages: list[str], job_id: str | None = None) -> int:
    """``spend.warn`` (a submit crossed a warn threshold) or ``spend.block`` (refused)."""
    return queue(s, event, {"provider": provider, "messages": list(messages)}, job_id=job_id)


def approval_requested(s: Session, job, amount_usd: float, threshold_usd: float) -> int:
    """A job waits in ``pending_approval`` (jobs/approval.py): tell the admins."""
    data = job_data(s, job, {})
    data["job"].update(estimate_usd=round(amount_usd, 6), threshold_usd=threshold_usd,
                       requested_by=((job.provider_data or {}).get("approval") or {}).get("requested_by"))
    return queue(s, "approval.requested", data, job_id=job.id)


def _money(v) -> str:
    return "—" if v is None else f"${v:,.2f}"


def render(body: dict) -> tuple[str, str]:
    """(subject, text) of a queued notification, for chat and e-mail."""
    event, data = body["type"], body["data"]
    if event.startswith("job."):
        job = data["job"]
        subject = f"stcloud: job {job['name']} {job['status']}"
        text = (f"Job {job['name']} ({job['id']}) {job['status']} on {job['provider']} "
                f"after {timeutil.duration_text(job['duration_seconds'])}, {_money(job['cost_usd'])}")
        if job.get("final_loss") is not None:
            text += f", final loss {job['final_loss']:.4f}"
        if job.get("error") and job["status"] == "failed":
            text += f". Reason: {job['error'].strip().splitlines()[0][:300]}"
        if job.get("url"):
            text += f". {job['url']}"
        return subject, text
    if event == "approval.requested":
        job = data["job"]
        subject = f"stcloud: approval needed for job {job['name']}"
        text = (f"Job {job['name']} ({job['id']}) on {job['provider']} waits for an admin's approval: its estimate "
                f"{_money(job.get('estimate_usd'))} is above the approval threshold {_money(job.get('threshold_usd'))}"
                + (f" (submitted by {job['requested_by']})" if job.get("requested_by") else "")
                + (f". Approve or reject it: {job['url']}" if job.get("url") else
                   f". Approve or reject it on its job page or with `stcloud jobs approve {job['id']}`"))
        return subject, text
    what = "spend limit warning" if event == "spend.warn" else "spend limit reached: submit refused"
    body = f"{what.capitalize()} on {data['provider']}: " + "; ".join(data["messages"])
    return f"stcloud: {what} ({data['provider']})", body
