"""Storage services used by the S3 routes, the Storage page, publishing and the job page.

Job outputs: files under ``outputs/<job_id>/`` are a job's delivered outputs. They are kept
in ``job.outputs`` (entries with ``destination: "builtin"``) by ``sync_job_outputs``, called
after every write or delete under a job's prefix — so the job API and the job page show them
without touching the filesystem on each render. ``outputs_for_job`` computes the same list
from the store at any time (the delivery scheduler uses it to repair a list that a provider
update overwrote).
"""
from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from flask import current_app

from stcloud import db
from stcloud.models import Job
from stcloud.storage.backend import Backend
from stcloud.storage.errors import S3Error

log = logging.getLogger(__name__)

JOB_BUCKET = "outputs"
MAX_LISTED_OUTPUTS = 1000


def backend() -> Backend:
    """The app's object store (``STCLOUD_HOME/cloud_outputs``)."""
    ext = current_app.extensions
    b = ext.get("stcloud.storage_backend")
    if b is None:
        root = Path(current_app.config["STCLOUD_HOME"]) / "cloud_outputs"
        max_put = int(current_app.config.get("STCLOUD_S3_MAX_PUT_SIZE") or 5 * 1024 ** 3)
        b = ext["stcloud.storage_backend"] = Backend(root, max_put_size=max_put)
    return b


DOWNLOAD_PATH = "/storage/download"


def object_url(bucket: str, key: str) -> str:
    """Site-relative download URL for people: the dashboard's download route (its login or
    API key guards it), never the S3 endpoint, which answers only signed requests."""
    return f"{DOWNLOAD_PATH}/{quote(bucket)}/{quote(key, safe='/')}"


def open_download(bucket: str, key: str):
    """(ObjectInfo, open file) for the dashboard's download route; a folder marker or a missing
    object raises S3Error (NoSuchBucket / NoSuchKey)."""
    if not key or key.endswith("/"):
        raise S3Error("NoSuchKey", Key=key)
    return backend().open(bucket, key)


def job_of_key(bucket: str, key: str) -> str | None:
    if bucket != JOB_BUCKET or "/" not in key:
        return None
    first = key.split("/", 1)[0]
    return first if first.startswith("job_") else None


CHECKPOINTS_DIR = "checkpoints/"


def outputs_for_job(job_id: str) -> list[dict]:
    """Files under ``outputs/<job_id>/``: name (relative), key, bucket, size, sha256, etag,
    last_modified, download_url, destination "builtin". At most 1000, in key order."""
    b = backend()
    prefix = f"{job_id}/"
    if not b.bucket_exists(JOB_BUCKET):
        return []
    out = []
    try:
        result = b.list_objects(JOB_BUCKET, prefix=prefix, max_keys=MAX_LISTED_OUTPUTS)
    except S3Error:
        return []
    for info in result.contents:
        if info.key.endswith("/"):
            continue  # folder markers
        if info.key.startswith(f"{prefix}{CHECKPOINTS_DIR}"):
            continue  # resume state uploaded by workers, not a deliverable (see the Storage page)
        if info.sha256 is None:
            try:
                info.sha256 = b.ensure_sha256(JOB_BUCKET, info.key)
            except S3Error:
                continue  # deleted meanwhile
        out.append({
            "name": info.key[len(prefix):],
            "key": info.key,
            "bucket": JOB_BUCKET,
            "size": info.size,
            "sha256": info.sha256,
            "etag": info.etag.strip('"'),
            "last_modified": info.last_modified.isoformat().replace("+00:00", "Z"),
            "download_url": object_url(JOB_BUCKET, info.key),
            "destination": "builtin",
        })
    return out


def sync_job_outputs(job_id: str) -> None:
    """Replace the job's ``builtin`` output entries with what the store holds now. Other
    entries (provider URLs, Hub or S3 deliveries) are kept. No-op for unknown jobs."""
    outputs_for_job(job_id)  # hash new files first: never while holding the write lock
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None:
            return
        # Listing inside the write transaction: two uploads finishing together serialise
        # here, and the second one sees both files.
        builtin = outputs_for_job(job_id)
        others = [o for o in (job.outputs or []) if not (isinstance(o, dict) and o.get("destination") == "builtin")]
        new = others + builtin
        if new != (job.outputs or []):
            job.outputs = new


def after_write(bucket: str, key: str) -> None:
    """Hook for the S3 routes and the Storage page after a write/delete of ``bucket/key``."""
    job_id = job_of_key(bucket, key)
    if job_id:
        try:
            sync_job_outputs(job_id)
        except Exception:  # noqa: BLE001 - the object is stored; the listing catches up later
            log.exception("storage: could not update the outputs of %s", job_id)
