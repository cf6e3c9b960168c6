"""A dataset over the provider's upload limit, put in the job's own delivery bucket.

When a job delivers to an S3 bucket (``delivery: {type: s3, ...}``) and its archive goes by
URL (``stcloud.jobs.dataset_url``), the archive is stored in that bucket instead of the
built-in endpoint — at ``<prefix>/stcloud-datasets/<dataset sha256>.zip``, so a re-run of
the same data reuses the object — and the provider gets a presigned GET URL signed with the
delivery's key, valid as long as the built-in link would be.

Where each stored object is, with the key to delete it, is kept in the encrypted secret
store (``dataset_bucket:<job id>``: the delivery's own secret is dropped once the outputs are
delivered). ``cleanup`` (scheduler, with ``dataset_url.cleanup``) deletes an object once its
job has ended and no unfinished job uses the same object.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

from flask import current_app
from sqlalchemy import select

from stcloud import db, secrets, states
from stcloud.errors import BadRequest
from stcloud.models import Job
from stcloud.publishing import s3
from stcloud.publishing import service as publishing

log = logging.getLogger(__name__)

SECRET_PREFIX = "dataset_bucket:"
FOLDER = "stcloud-datasets"


@dataclass(frozen=True)
class Place:
    endpoint_url: str | None
    bucket: str
    key: str
    region: str
    access_key: str
    secret_key: str

    @property
    def where(self) -> tuple:
        return self.endpoint_url, self.bucket, self.key

    def client(self):
        return s3.client(self.endpoint_url, self.region, self.access_key, self.secret_key)


def is_bucket(delivery) -> bool:
    """Does this delivery (a submit body's member or a job's record) name an S3 bucket?"""
    return isinstance(delivery, dict) and delivery.get("type") == "s3" and bool(delivery.get("bucket"))


def describe(delivery: dict) -> str:
    """The bucket, for the consent summary."""
    prefix = str(delivery.get("prefix") or "").strip("/")
    where = f"s3://{delivery['bucket']}/{prefix + '/' if prefix else ''}{FOLDER}/"
    return f"{where} at {delivery.get('endpoint_url') or 'AWS S3'}"


def _key(prefix: str | None, sha256: str) -> str:
    prefix = str(prefix or "").strip("/")
    return f"{prefix}/{FOLDER}/{sha256}.zip" if prefix else f"{FOLDER}/{sha256}.zip"


def publish(job_id: str, delivery: dict, archive, ttl_seconds: int) -> tuple[str, dict]:
    """Store the archive in the delivery bucket (once per content) and return (presigned URL,
    the record for ``job.provider_data``). Raises BadRequest when the bucket refuses it."""
    home = current_app.config["STCLOUD_HOME"]
    secret = secrets.get(home, publishing.SECRET_PREFIX + job_id)
    if not secret:
        raise BadRequest("the delivery bucket's secret key is gone; submit the job again",
                         extra={"field": "delivery"})
    place = Place(endpoint_url=delivery.get("endpoint_url") or None, bucket=delivery["bucket"],
                  key=_key(delivery.get("prefix"), archive.sha256), region=delivery.get("region") or "us-east-1",
                  access_key=delivery["access_key_id"], secret_key=secret)
    # Remembered before the upload: a half-written object is cleaned up like a whole one.
    secrets.put(home, SECRET_PREFIX + job_id, json.dumps(asdict(place)))
    client = place.client()
    try:
        uploaded = s3.put_once(client, place.bucket, place.key, archive.path, archive.size,
                               endpoint_url=place.endpoint_url)
    except s3.S3DeliveryError as exc:
        raise BadRequest(f"the dataset could not be put in the delivery bucket: {exc}",
                         extra={"field": "delivery"}) from None
    log.info("job %s: dataset %s (%d bytes) handed over from the delivery bucket %s (%s stored)", job_id,
             place.key, archive.size, place.bucket, "newly" if uploaded else "already")
    url = s3.presigned_get(client, place.bucket, place.key, ttl_seconds)
    return url, {"bucket": place.bucket, "key": place.key, "endpoint_url": place.endpoint_url,
                 "delivery_bucket": True, "expires_in": ttl_seconds}


def _places(home) -> dict[str, Place]:
    out = {}
    for name, raw in secrets.get_many(home, SECRET_PREFIX).items():
        try:
            out[name[len(SECRET_PREFIX):]] = Place(**json.loads(raw))
        except (TypeError, ValueError):
            log.warning("dropping an unreadable dataset bucket record %s", name)
            secrets.delete(home, name)
    return out


def cleanup() -> int:
    """Delete the objects of ended jobs that no unfinished job uses. Returns how many."""
    home = current_app.config["STCLOUD_HOME"]
    places = _places(home)
    if not places:
        return 0
    with db.session() as s:
        status = dict(s.execute(select(Job.id, Job.status).where(Job.id.in_(list(places)))).all())
    unfinished = {job_id for job_id in places if job_id in status and not states.is_terminal(status[job_id])}
    in_use = {places[job_id].where for job_id in unfinished}
    deleted, gone = 0, set()
    for job_id, place in places.items():
        if job_id in unfinished:
            continue
        if place.where not in in_use and place.where not in gone:
            try:
                existed = s3.delete_object(place.client(), place.bucket, place.key, endpoint_url=place.endpoint_url)
            except s3.S3DeliveryError as exc:
                log.warning("job %s: the stored dataset could not be deleted (retrying): %s", job_id, exc)
                continue
            gone.add(place.where)  # once, for every ended job that shared it
            if existed:
                deleted += 1
                log.info("deleted the dataset %s from the delivery bucket %s (job %s ended)", place.key,
                         place.bucket, job_id)
        secrets.delete(home, SECRET_PREFIX + job_id)
        with db.transaction() as s:
            job = s.get(Job, job_id)
            link = (job.provider_data or {}).get("dataset_url") if job is not None else None
            if isinstance(link, dict):
                job.provider_data = {**job.provider_data, "dataset_url": {**link, "deleted": True}}
    return deleted
