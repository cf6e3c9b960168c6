"""The notification channels: pure network adapters (no Flask, no database).

Each ``send_*`` raises ``ChannelError`` with a one-line reason when the receiver did not take
the message; the sender retries those."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import smtplib
import time
from email.message import EmailMessage

import requests
from ulid import ULID

TIMEOUT = 10
SECRET_PREFIX = "whsec_"


class ChannelError(Exception):
    pass


def _post(url: str, body: bytes, headers: dict) -> None:
    try:
        r = requests.post(url, data=body, headers={"Content-Type": "application/json", **headers}, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise ChannelError(f"could not reach the receiver: {exc.__class__.__name__}") from exc
    if r.status_code >= 300:
        raise ChannelError(f"the receiver answered HTTP {r.status_code}: {r.text[:200]}")


def send_slack(url: str, text: str) -> None:
    _post(url, json.dumps({"text": text}).encode(), {})


def send_discord(url: str, text: str) -> None:
    _post(url, json.dumps({"content": text[:2000]}).encode(), {})


def new_webhook_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks signature header value (``v1,<base64 HMAC-SHA256>``) of
    ``{msg_id}.{timestamp}.{body}`` with the base64 key after ``whsec_``."""
    key = base64.b64decode(secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret)
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def send_webhook(url: str, secret: str, payload: dict, msg_id: str | None = None) -> None:
    """POST ``payload`` signed with Standard Webhooks headers (webhook-id / -timestamp /
    -signature). ``msg_id`` stays the same across retries so receivers can deduplicate."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    msg_id = msg_id or f"msg_{ULID()}"
    ts = int(time.time())
    _post(url, body, {"webhook-id": msg_id, "webhook-timestamp": str(ts),
                      "webhook-signature": sign(secret, msg_id, ts, body)})


def send_email(*, host: str, port: int, sender: str, to: list[str], subject: str, text: str,
               username: str | None = None, password: str | None = None, starttls: bool = False) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, ", ".join(to), subject
    msg.set_content(text)
    try:
        with smtplib.SMTP(host, int(port), timeout=TIMEOUT) as smtp:
            if starttls:
                smtp.starttls()
            if username:
                smtp.login(username, password or "")
            smtp.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        raise ChannelError(f"SMTP {host}:{port}: {exc}") from exc
