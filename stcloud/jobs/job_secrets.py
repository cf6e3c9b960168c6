"""A job's secrets live in the encrypted secret store, never in ``jobs.config``.

The job row keeps ``redact(config)`` (``[redacted]`` where a secret was: per-job S3 keys in
``publishing_config``, ``hub_token``, webhook tokens, anything ``stcloud.redact`` calls a
secret; the dataloader's remote-dataset keys likewise); the values go to the secret store
(one small encrypted file per job and part, ``secrets.d/``) with their places.
They are put back only where something needs them: the provider launch (Replicate's input,
a worker's claim, a Slurm requeue) and an exact re-run::

    row_config = job_secrets.seal(job_id, config)      # before the row is written
    config = job_secrets.unseal(job_id, job.config)    # when a provider/worker needs it
    rows = job_secrets.seal(job_id, dataloader, "dataloader")  # the dataloader the same way
    job_secrets.forget(job_id)                         # the job row is deleted
"""
from __future__ import annotations

import json

from flask import current_app

from stcloud import secrets
from stcloud.redact import join_secrets, split_secrets

PARTS = ("config", "dataloader", "archive_dataloader")


def _prefix(job_id: str) -> str:
    return f"job:{job_id}:"


def _key(job_id: str, part: str) -> str:
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}")
    return _prefix(job_id) + part


def _home() -> str:
    return current_app.config["STCLOUD_HOME"]


def seal(job_id: str, value, part: str = "config"):
    """Store the secrets of ``value`` (a config dict or a dataloader list); returns the
    value for the job row, without them."""
    return seal_in(_home(), job_id, value, part)


def unseal(job_id: str, value, part: str = "config"):
    """``value`` (as stored on the row) with the job's secrets put back."""
    return unseal_in(_home(), job_id, value, part)


def forget(job_id: str) -> None:
    for part in PARTS:
        secrets.delete_item(_home(), _key(job_id, part))


# ---- the same, given STCLOUD_HOME (no app context: the 0011 migration's hooks) -------------

def _empty(value, part: str):
    return [] if isinstance(value, list) or (value is None and part != "config") else {}


def seal_in(home, job_id: str, value, part: str = "config"):
    shown, found = split_secrets(value if value is not None else _empty(value, part))
    if found:
        secrets.put_item(home, _key(job_id, part), json.dumps(found))
    return shown


def unseal_in(home, job_id: str, value, part: str = "config"):
    value = value if value is not None else _empty(value, part)
    stored = secrets.get_item(home, _key(job_id, part))
    if not stored:
        return type(value)(value)
    return join_secrets(value, json.loads(stored))


def migration_hooks(home) -> dict:
    """What ``migrations/versions/0011_secrets.py`` calls (passed through the Alembic config's
    ``attributes``: migrations import only Alembic and SQLAlchemy)."""
    return {"seal_job_secrets": lambda job_id, part, value: seal_in(home, job_id, value, part),
            "unseal_job_secrets": lambda job_id, part, value: unseal_in(home, job_id, value, part)}
