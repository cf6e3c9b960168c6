"""Per-job agent credentials (``stj_…``): what an agent started by a scheduler (Slurm) uses
instead of a worker token, to run exactly one job.

A credential is an HMAC-SHA256, with a server secret, of the job id and its *submission*
number (1 for the first batch job; a resubmission after NODE_FAIL / PREEMPTED gets the next
one, which retires the old credential). Nothing is stored: the server recomputes it. Pure:
no Flask, no database.
"""
from __future__ import annotations

import hashlib
import hmac

PREFIX = "stj_"
SECRET_KEY = "job_token_secret"  # the key in secrets.json


def mint(secret: str, job_id: str, submission: int) -> str:
    mac = hmac.new(secret.encode(), f"stcloud-job:{job_id}:{int(submission)}".encode(), hashlib.sha256).hexdigest()
    return f"{PREFIX}{int(submission)}.{mac}"


def is_job_token(token: str | None) -> bool:
    return bool(token) and token.startswith(PREFIX)


def verify(secret: str, token: str, job_id: str, submission: int) -> bool:
    """Constant-time check of ``token`` against the job's current submission."""
    return hmac.compare_digest(mint(secret, job_id, submission).encode(), token.encode())
