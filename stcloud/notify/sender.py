"""Deliver queued notifications (scheduler, every few seconds): claim due rows in a short
transaction, send with no transaction open, record the outcome. Failures are retried with
backoff up to ``MAX_ATTEMPTS``; the rows are the delivery log."""
from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from stcloud import db
from stcloud.models import Job, Notification, utcnow
from stcloud.notify import channels, config, events

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
BACKOFF_SECONDS = (10, 30, 120, 600)
CLAIM_SECONDS = 120  # a claimed row is not picked again meanwhile
BATCH = 50


def _deliver(row: dict) -> None:
    body = row["payload"]
    subject, text = events.render(body)
    channel = row["channel"]
    if channel in ("slack", "discord"):
        url = config.secret(f"{channel}.url")
        if not url:
            raise channels.ChannelError(f"{channel} is not configured (no URL)")
        (channels.send_slack if channel == "slack" else channels.send_discord)(url, text)
    elif channel == "webhook":
        url, secret = config.secret("webhook.url"), config.secret("webhook.secret")
        if not url or not secret:
            raise channels.ChannelError("the webhook is not configured (URL or signing secret missing)")
        channels.send_webhook(url, secret, body, msg_id=f"msg_{row['id']}")
    elif channel == "email":
        cfg = config.stored()["email"]
        to = [row["recipient"]] if row.get("recipient") else cfg.get("to")  # one user's preferences, or the list
        if not cfg.get("host") or not cfg.get("sender") or not to:
            raise channels.ChannelError("e-mail is not configured")
        channels.send_email(host=cfg["host"], port=cfg.get("port") or 25, sender=cfg["sender"], to=to,
                            subject=subject, text=text, username=cfg.get("username"),
                            password=config.secret("email.password"), starttls=bool(cfg.get("starttls")))
    else:
        raise channels.ChannelError(f"unknown channel {channel!r}")


def _claim(limit: int) -> list[dict]:
    now = utcnow()
    with db.transaction() as s:
        rows = s.scalars(select(Notification).where(Notification.status == "pending",
                                                    Notification.next_attempt_at <= now)
                         .order_by(Notification.created_at).limit(limit)).all()
        out = []
        for row in rows:
            row.next_attempt_at = now + timedelta(seconds=CLAIM_SECONDS)
            job = s.get(Job, row.job_id) if row.job_id and row.event.startswith("job.") else None
            if job is not None and row.attempts == 0:
                fresh = {**row.payload["data"]["job"], "error": job.error, "cost_usd": job.cost_usd}
                row.payload = {**row.payload, "data": {**row.payload["data"], "job": fresh}}
            out.append({"id": row.id, "channel": row.channel, "payload": row.payload, "attempts": row.attempts,
                        "recipient": row.recipient})
        return out


def _record(row_id: str, error: str | None) -> None:
    with db.transaction() as s:
        row = s.get(Notification, row_id)
        if row is None:
            return
        row.attempts += 1
        if error is None:
            row.status, row.sent_at, row.last_error = "sent", utcnow(), None
        elif row.attempts >= MAX_ATTEMPTS:
            row.status, row.last_error = "failed", error
        else:
            row.last_error = error
            delay = BACKOFF_SECONDS[min(row.attempts - 1, len(BACKOFF_SECONDS) - 1)]
            row.next_attempt_at = utcnow() + timedelta(seconds=delay)


def send_due(limit: int = BATCH) -> int:
    """Send what is due; returns how many were sent successfully."""
    sent = 0
    for row in _claim(limit):
        try:
            _deliver(row)
        except channels.ChannelError as exc:
            log.info("notification %s (%s) not delivered: %s", row["id"], row["channel"], exc)
            _record(row["id"], str(exc))
            continue
        _record(row["id"], None)
        sent += 1
    return sent


def recent(limit: int = 50) -> list[dict]:
    """The delivery log, newest first (no payloads: they name jobs; the log names the job id)."""
    with db.session() as s:
        rows = s.scalars(select(Notification).order_by(Notification.created_at.desc()).limit(limit)).all()
        return [{"id": r.id, "event": r.event, "channel": r.channel, "job_id": r.job_id, "status": r.status,
                 "attempts": r.attempts, "last_error": r.last_error, "recipient": r.recipient,
                 "created_at": r.created_at.isoformat().replace("+00:00", "Z"),
                 "sent_at": r.sent_at.isoformat().replace("+00:00", "Z") if r.sent_at else None}
                for r in rows]
