"""Datasets larger than a provider's file API: handed over as a presigned link instead.

When the instance has a public URL and the provider takes a dataset URL as an input
(``CloudTrainerService.dataset_url_input``: Replicate's ``images``), a packaged dataset
larger than the provider's upload limit (Replicate: 100 MiB) is put on the built-in S3
endpoint — bucket ``stcloud-datasets``, key ``<dataset sha256>.zip``, so a re-run of the
same data reuses the stored object — and the provider receives a presigned GET URL under
the public URL. The link is signed with a read-only key minted for the job and scoped to
that one object; it expires after ``STCLOUD_DATASET_URL_TTL`` seconds (default 24 h, so a
long queue does not outlive it; SigV4 allows at most 7 days), and with the job (the key of
a finished job stops working after the storage grace period). ``cleanup`` (scheduler)
deletes an object once no unfinished job uses its data. A job that delivers to an S3
bucket has its dataset put in that bucket instead (``stcloud.jobs.dataset_bucket``).

Without a public URL the provider's limit stays (413) and the message says how to lift it.
"""
from __future__ import annotations

import logging

from botocore.config import Config
from botocore.session import get_session
from flask import current_app
from sqlalchemy import select

from stcloud import db, states
from stcloud.jobs import dataset_bucket
from stcloud.models import Job
from stcloud.providers.base import CloudTrainerService
from stcloud.storage import backend as storage_backend
from stcloud.storage import credentials
from stcloud.storage import service as storage_service
from stcloud.storage.errors import S3Error

log = logging.getLogger(__name__)

BUCKET = "stcloud-datasets"
DEFAULT_TTL = 24 * 3600
MAX_TTL = 7 * 24 * 3600  # the longest a SigV4 presigned URL may be valid
HINT = ("Set the public URL (Providers page, or STCLOUD_PUBLIC_URL) and larger datasets go to the provider as a "
        "presigned link to this server's storage endpoint instead of a file upload.")


def ttl_seconds() -> int:
    value = int(current_app.config.get("STCLOUD_DATASET_URL_TTL") or DEFAULT_TTL)
    return max(credentials.MIN_TTL, min(value, MAX_TTL))


def available(service: CloudTrainerService) -> bool:
    """Can a dataset over the provider's limit go by URL?"""
    return bool(service.uploads_data and service.dataset_url_input and service.max_upload_bytes is not None
                and credentials.public_base_url())


def upload_limit(service: CloudTrainerService) -> int | None:
    """The archive size submit refuses above (None: no limit)."""
    if not service.uploads_data or available(service):
        return None
    return service.max_upload_bytes


def too_large_hint(service: CloudTrainerService) -> str:
    """How to lift the provider's limit, when a public URL would (else nothing)."""
    return " " + HINT if service.uploads_data and service.dataset_url_input else ""


def goes_by_url(service: CloudTrainerService, size: int) -> bool:
    return available(service) and size > service.max_upload_bytes


def destination(service: CloudTrainerService, archive_bytes: int, delivery: dict | None = None) -> str:
    """Where the data goes, for the consent summary (``delivery``: the submit body's)."""
    if goes_by_url(service, archive_bytes):
        if dataset_bucket.is_bucket(delivery):
            return (f"your delivery bucket {dataset_bucket.describe(delivery)}, and from there {service.label}, "
                    f"which downloads it through a presigned link (valid {ttl_seconds() // 3600} h)")
        return (f"{service.label}, which downloads it through a presigned link (valid "
                f"{ttl_seconds() // 3600} h) to this server's storage endpoint at "
                f"{credentials.public_base_url()}{credentials.ENDPOINT_PATH}")
    return service.label


def presign(access_key_id: str, secret: str, key: str, ttl: int) -> str:
    client = get_session().create_client(
        "s3", region_name=credentials.REGION, endpoint_url=credentials.public_base_url() + credentials.ENDPOINT_PATH,
        aws_access_key_id=access_key_id, aws_secret_access_key=secret,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    return client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=ttl)


def publish(job_id: str, archive) -> str:
    """Store the archive under its sha256 (once) and return a presigned GET URL for the job."""
    key = f"{archive.sha256}.zip"
    store = storage_service.backend()
    store.create_bucket(BUCKET, exist_ok=True)
    try:
        stored = store.head(BUCKET, key).size == archive.size
    except S3Error:
        stored = False
    if not stored:
        with open(archive.path, "rb") as fh:
            store.put(BUCKET, key, fh, storage_backend.Expectations(sha256_hex=archive.sha256,
                                                                     max_size=max(archive.size, 1)),
                      {"content_type": "application/zip"})
    ttl = ttl_seconds()
    cred = credentials.mint(bucket=BUCKET, prefix=key, ttl_seconds=ttl, job_id=job_id, read_only=True,
                            description=f"dataset link of job {job_id}")
    log.info("job %s: dataset %s (%d bytes) handed over by presigned URL (%s stored)", job_id, key,
             archive.size, "already" if stored else "newly")
    return presign(cred["access_key_id"], cred["secret_access_key"], key, ttl)


def inputs_for(job_id: str, service: CloudTrainerService, archive, inputs: dict) -> dict:
    """The provider inputs, with the dataset URL when the archive is over the upload limit."""
    if archive is None or not goes_by_url(service, archive.size):
        return inputs
    with db.session() as s:
        delivery = s.get(Job, job_id).delivery
    if dataset_bucket.is_bucket(delivery):  # the job's own delivery bucket: jobs/dataset_bucket.py
        url, record = dataset_bucket.publish(job_id, delivery, archive, ttl_seconds())
    else:
        url = publish(job_id, archive)
        record = {"bucket": BUCKET, "key": f"{archive.sha256}.zip", "expires_in": ttl_seconds()}
    with db.transaction() as s:
        job = s.get(Job, job_id)
        job.provider_data = {**(job.provider_data or {}), "dataset_url": record}
    return {**inputs, service.dataset_url_input: url}


def cleanup() -> int:
    """Delete stored datasets no unfinished job uses (scheduler), here and in delivery
    buckets. Returns how many."""
    return _cleanup_builtin() + dataset_bucket.cleanup()


def _cleanup_builtin() -> int:
    store = storage_service.backend()
    if not store.bucket_exists(BUCKET):
        return 0
    keys = [key for key, _path, _st in store.iter_keys(BUCKET) if key.endswith(".zip")]
    if not keys:
        return 0
    with db.session() as s:
        in_use = set(s.scalars(select(Job.dataset_sha256).where(
            Job.dataset_sha256.in_([k[:-4] for k in keys]), Job.status.not_in(list(states.TERMINAL)))))
    deleted = 0
    for key in keys:
        if key[:-4] not in in_use and store.delete(BUCKET, key):
            deleted += 1
            log.info("deleted the stored dataset %s/%s (no unfinished job uses it)", BUCKET, key)
    return deleted
