"""Result delivery: HF Hub, an external S3 bucket, or this machine (the built-in endpoint).

Two moments:

1. ``prepare_for_submit`` (submit path): the job's config gets SimpleTuner's own publishing
   settings so the trainer delivers by itself — ``publishing_config`` entries with provider
   ``s3`` (built-in: a fresh per-job key for ``outputs/<job_id>/``; external: the user's bucket),
   or ``push_to_hub`` + ``hub_model_id``. The HF token only goes into the provider inputs.
   The returned delivery record (stored on the job) never holds a secret; an external S3
   secret needed later by ``deliver_pending`` is kept in ``secrets.json`` (0600) under
   ``delivery_s3_secret:<job_id>`` and removed once the delivery is over.

2. ``deliver_pending`` (scheduler): a completed job whose provider returned output URLs
   (``destination: "replicate"``) while a delivery target is set gets those files downloaded
   (streamed, size-capped) and delivered; ``job.outputs`` is replaced by the delivered
   entries. A failure sets ``job.delivery_error`` and is retried (3 attempts, backing off); the
   job's status is never touched.

Note for the submit path: the returned *config* holds the credentials SimpleTuner needs
(``publishing_config[].secret_key``). Store ``redact_config(config)`` where people can read it.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

from flask import current_app
from sqlalchemy import select

from stcloud import db, proxy_settings, secrets
from stcloud.errors import BadRequest
from stcloud.models import Job, StorageCredential, utcnow
from stcloud.providers import registry
from stcloud.publishing.download import download
from stcloud.redact import redact
from stcloud.storage import backend as bk
from stcloud.storage import credentials
from stcloud.storage import service as storage_service

log = logging.getLogger(__name__)

TYPES = ("builtin", "s3", "hf")
MAX_ATTEMPTS = 3
BACKOFF = (60, 300)  # seconds before the 2nd and 3rd attempts
STALE_DELIVERING = timedelta(hours=1)
LOOKBACK = timedelta(days=7)
SECRET_PREFIX = "delivery_s3_secret:"
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


# ---- submit -------------------------------------------------------------------------------

def _field(d: dict, name: str, *, required: bool = True, default=None) -> str | None:
    value = d.get(name, default)
    if value is None or value == "":
        if required:
            raise BadRequest(f"delivery.{name} is required", extra={"field": f"delivery.{name}"})
        return default
    if not isinstance(value, str):
        raise BadRequest(f"delivery.{name} must be a string", extra={"field": f"delivery.{name}"})
    return value.strip()


def _with_entry(config: dict, entry: dict) -> dict:
    """``config`` with ``entry`` in ``publishing_config`` (replacing an earlier stcloud entry)."""
    existing = config.get("publishing_config") or []
    if isinstance(existing, dict):
        existing = [existing]
    if not isinstance(existing, list):
        raise BadRequest("config.publishing_config must be a list", extra={"field": "config.publishing_config"})
    kept = [e for e in existing if not (isinstance(e, dict) and e.get("stcloud_builtin"))]
    return {**config, "publishing_config": kept + [entry]}


def prepare_for_submit(job_id: str, provider: str, delivery: dict | None, config: dict) -> tuple[dict, dict, dict | None]:
    """Returns (config with SimpleTuner publishing settings added, extra provider inputs,
    the delivery record to store on the job — without secrets). Raises BadRequest."""
    config = dict(config or {})
    if not delivery:
        return config, {}, None
    if not isinstance(delivery, dict):
        raise BadRequest("delivery must be an object like {\"type\": \"builtin\"}", extra={"field": "delivery"})
    kind = {"hub": "hf", "huggingface": "hf", "local": "builtin", "this_machine": "builtin"}.get(
        delivery.get("type"), delivery.get("type"))
    if kind not in TYPES:
        raise BadRequest(f"delivery.type must be one of {', '.join(TYPES)}", extra={"field": "delivery.type"})
    if kind == "builtin":
        return _prepare_builtin(job_id, provider, config)
    if kind == "s3":
        return _prepare_s3(job_id, delivery, config)
    return _prepare_hf(delivery, config)


def _prepare_builtin(job_id: str, provider: str, config: dict):
    service = registry.get(provider)
    if service.uploads_data:  # the trainer runs elsewhere: it must reach this machine
        public = credentials.public_base_url()
        if not public:
            raise BadRequest(f"Delivery to this machine needs a public URL that {service.label} can reach (for "
                             "example a tunnel): set public_url on the Providers page or STCLOUD_PUBLIC_URL.",
                             extra={"field": "delivery.type"})
        endpoint = public + credentials.ENDPOINT_PATH
    else:
        endpoint = credentials.endpoint_url()
        if not endpoint:
            raise BadRequest("The S3 endpoint's URL is unknown: set a public URL (STCLOUD_PUBLIC_URL).",
                             extra={"field": "delivery.type"})
    key = credentials.credentials_for_job(job_id)
    entry = {"provider": "s3", "stcloud_builtin": True, "bucket": key["bucket"], "region": key["region"],
             "access_key": key["access_key_id"], "secret_key": key["secret_access_key"],
             "base_path": key["prefix"], "endpoint_url": endpoint,
             # checkpoint pushes too: a failed run can be resumed from them (stcloud/jobs/resume.py)
             "publish_checkpoints": True}
    record = {"type": "builtin", "bucket": key["bucket"], "prefix": key["prefix"], "endpoint_url": endpoint,
              "access_key_id": key["access_key_id"], "state": "pending"}
    return _with_entry(config, entry), {}, record


def _prepare_s3(job_id: str, delivery: dict, config: dict):
    endpoint = _field(delivery, "endpoint_url", required=False)
    if endpoint:
        parsed = urlparse(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise BadRequest("delivery.endpoint_url must be an http(s) URL", extra={"field": "delivery.endpoint_url"})
    bucket = _field(delivery, "bucket")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}", bucket):
        raise BadRequest("delivery.bucket is not a valid bucket name", extra={"field": "delivery.bucket"})
    prefix = _field(delivery, "prefix", required=False, default="") or ""
    # SimpleTuner's names (access_key/secret_key) and boto3's (..._id/secret_access_key) both work.
    delivery = dict(delivery)
    if "access_key" not in delivery and "access_key_id" in delivery:
        delivery["access_key"] = delivery.pop("access_key_id")
    if "secret_key" not in delivery and "secret_access_key" in delivery:
        delivery["secret_key"] = delivery.pop("secret_access_key")
    access_key = _field(delivery, "access_key")
    secret_key = _field(delivery, "secret_key")
    region = _field(delivery, "region", required=False, default="us-east-1") or "us-east-1"
    unknown = set(delivery) - {"type", "endpoint_url", "bucket", "prefix", "access_key", "secret_key", "region",
                               "access_key_id", "secret_access_key"}
    if unknown:
        raise BadRequest(f"unknown delivery field {sorted(unknown)[0]!r}", extra={"field": f"delivery.{sorted(unknown)[0]}"})
    entry = {"provider": "s3", "bucket": bucket, "region": region, "access_key": access_key,
             "secret_key": secret_key, "base_path": prefix}
    if endpoint:
        entry["endpoint_url"] = endpoint
    secrets.put(current_app.config["STCLOUD_HOME"], SECRET_PREFIX + job_id, secret_key)
    record = {"type": "s3", "endpoint_url": endpoint, "bucket": bucket, "prefix": prefix, "region": region,
              "access_key_id": access_key, "state": "pending"}
    return _with_entry(config, entry), {}, record


def _prepare_hf(delivery: dict, config: dict):
    hub_model_id = _field(delivery, "hub_model_id")
    if not _HUB_ID.fullmatch(hub_model_id):
        raise BadRequest("delivery.hub_model_id must look like owner/model-name", extra={"field": "delivery.hub_model_id"})
    private = delivery.get("private", False)
    if not isinstance(private, bool):
        raise BadRequest("delivery.private must be true or false", extra={"field": "delivery.private"})
    inputs = _hf_inputs(hub_model_id)
    config = {**config, "push_to_hub": True, "hub_model_id": hub_model_id}
    record = {"type": "hf", "hub_model_id": hub_model_id, "private": private, "state": "pending"}
    return config, inputs, record


def _hf_inputs(hub_model_id: str) -> dict:
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise BadRequest("HF_TOKEN not set: export a Hugging Face token with write access to publish to the Hub.",
                         extra={"field": "delivery.type"})
    return {"hf_token": token, "hub_model_id": hub_model_id}


def launch_inputs(record: dict | None) -> dict:
    """The provider inputs ``prepare_for_submit`` gave, rebuilt from a job's stored delivery
    record (no secrets are stored on it): for a job launched later (after approval)."""
    if (record or {}).get("type") == "hf":
        return _hf_inputs(record["hub_model_id"])
    return {}


def discard_for_submit(job_id: str) -> None:
    """Undo ``prepare_for_submit`` for a submit that failed before its job row existed: the
    per-job storage key is revoked and a stored external-S3 secret is forgotten."""
    with db.session() as s:
        keys = list(s.scalars(select(StorageCredential.access_key_id).where(StorageCredential.job_id == job_id)))
    for key in keys:
        credentials.revoke(key)
    secrets.delete(current_app.config["STCLOUD_HOME"], SECRET_PREFIX + job_id)


def redact_config(config: dict) -> dict:
    """A copy of ``config`` without publishing secrets (for storage and display)."""
    return redact(config or {})


# ---- delivery -----------------------------------------------------------------------------

def _max_bytes() -> int:
    return int(current_app.config.get("STCLOUD_DELIVERY_MAX_BYTES") or 50 * 1024 ** 3)


def _provider_outputs(job: Job) -> list[dict]:
    """The outputs the job's provider holds (``destination`` = the provider: temporary URLs)."""
    return [o for o in (job.outputs or []) if isinstance(o, dict) and o.get("destination") == job.provider
            and isinstance(o.get("url"), str)]


def _due(delivery: dict, now: datetime) -> bool:
    state = delivery.get("state", "pending")
    if state == "delivering":
        started = _parse(delivery.get("started_at"))
        return started is None or now - started > STALE_DELIVERING
    if state not in ("pending", "retry"):
        return False
    next_at = _parse(delivery.get("next_attempt_at"))
    return next_at is None or now >= next_at


def _parse(value) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def deliver_pending() -> None:
    """Scheduler job: deliver outputs of completed jobs that a provider returned as URLs."""
    now = utcnow()
    with db.session() as s:
        rows = s.execute(select(Job.id, Job.status, Job.delivery).where(
            Job.delivery.is_not(None), Job.completed_at.is_not(None),
            Job.completed_at >= now - LOOKBACK)).all()
    for job_id, _status, delivery in rows:
        if not isinstance(delivery, dict) or not _due(delivery, now):
            continue
        try:
            deliver_job(job_id)
        except Exception:  # noqa: BLE001 - one job's failure must not stop the others
            log.exception("delivery of %s failed unexpectedly", job_id)


def _finish_without_transfer(s, job: Job, state: str) -> None:
    job.delivery = {**job.delivery, "state": state, "finished_at": _iso(utcnow())}
    if job.delivery.get("type") == "s3":
        secrets.delete(current_app.config["STCLOUD_HOME"], SECRET_PREFIX + job.id)


def deliver_job(job_id: str) -> bool:
    """Deliver one job's provider outputs now. Returns True when something was delivered.
    Failures are recorded on the job (``delivery_error``), not raised."""
    now = utcnow()
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None or not isinstance(job.delivery, dict) or not _due(job.delivery, now):
            return False
        delivery = dict(job.delivery)
        provider = job.provider
        if job.status != "completed":
            _finish_without_transfer(s, job, "skipped")
            return False
        sources = _provider_outputs(job)
        if not sources:
            # The trainer published by itself (or there is nothing): the built-in store's
            # files are the outputs; make sure the job lists them.
            state = "done"
            _finish_without_transfer(s, job, state)
            builtin = delivery.get("type") == "builtin"
        else:
            attempts = int(delivery.get("attempts", 0)) + 1
            job.delivery = {**delivery, "state": "delivering", "started_at": _iso(now), "attempts": attempts}
            builtin = False
    if not sources:
        if builtin:
            storage_service.sync_job_outputs(job_id)
        return False
    work = Path(tempfile.mkdtemp(prefix=f"deliver-{job_id}-", dir=_work_root()))
    try:
        delivered = _transfer(job_id, provider, delivery, sources, work)
    except Exception as exc:  # noqa: BLE001 - recorded on the job, retried
        message = str(exc) or exc.__class__.__name__
        log.warning("delivery of %s failed (attempt %s): %s", job_id, attempts, message)
        with db.transaction() as s:
            job = s.get(Job, job_id)
            if job is not None:
                final = attempts >= MAX_ATTEMPTS
                rec = {**(job.delivery or {}), "state": "failed" if final else "retry", "last_error": message[:500]}
                if not final:
                    rec["next_attempt_at"] = _iso(utcnow() + timedelta(seconds=BACKOFF[min(attempts - 1, 1)]))
                job.delivery = rec
                job.delivery_error = message[:2000] + ("" if final else f" (attempt {attempts} of {MAX_ATTEMPTS}; "
                                                                        "retrying)")
                if final and rec.get("type") == "s3":
                    secrets.delete(current_app.config["STCLOUD_HOME"], SECRET_PREFIX + job_id)
        return False
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None:
            return False
        kept = [o for o in (job.outputs or []) if not (isinstance(o, dict) and o.get("destination") == job.provider)]
        if delivery.get("type") == "builtin":
            kept = [o for o in kept if not (isinstance(o, dict) and o.get("destination") == "builtin")]
        job.outputs = kept + delivered
        job.delivery = {**(job.delivery or {}), "state": "delivered", "delivered_at": _iso(utcnow())}
        job.delivery_error = None
    if delivery.get("type") == "s3":
        secrets.delete(current_app.config["STCLOUD_HOME"], SECRET_PREFIX + job_id)
    if delivery.get("type") == "builtin":
        storage_service.sync_job_outputs(job_id)
    log.info("delivered %d file(s) of %s to %s", len(delivered), job_id, delivery.get("type"))
    return True


def _work_root() -> str:
    d = Path(current_app.config["STCLOUD_HOME"]) / "uploads" / "delivery"
    d.mkdir(parents=True, exist_ok=True)
    return str(d)


def _safe_name(name: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._+-]", "_", (name or "").rsplit("/", 1)[-1]).strip("._") or "output"
    candidate, n = base, 1
    while candidate in used:
        n += 1
        stem, dot, ext = base.partition(".")
        candidate = f"{stem}-{n}{dot}{ext}"
    used.add(candidate)
    return candidate


def _transfer(job_id: str, provider: str, delivery: dict, sources: list[dict], work: Path) -> list[dict]:
    service = registry.get(provider)
    used: set[str] = set()
    files = []
    cap = _max_bytes()
    proxies = proxy_settings.current()
    for src in sources:
        name = _safe_name(src.get("name") or src["url"].rsplit("/", 1)[-1], used)
        path = work / name
        size, sha = download(src["url"], path, max_bytes=cap, headers=service.download_headers(src["url"]),
                             proxies=proxies)
        files.append({"name": name, "path": path, "size": size, "sha256": sha, "source_url": src["url"]})
    kind = delivery.get("type")
    out = []
    if kind == "builtin":
        b = storage_service.backend()
        b.create_bucket(storage_service.JOB_BUCKET, exist_ok=True)
        for f in files:
            key = f"{job_id}/{f['name']}"
            with open(f["path"], "rb") as fh:
                b.put(storage_service.JOB_BUCKET, key, fh, bk.Expectations(sha256_hex=f["sha256"],
                                                                               max_size=cap),
                      {"content_type": "application/octet-stream"})
            out.append({"name": f["name"], "key": key, "bucket": storage_service.JOB_BUCKET, "size": f["size"],
                        "sha256": f["sha256"], "download_url": storage_service.object_url(storage_service.JOB_BUCKET, key),
                        "destination": "builtin", "source_url": f["source_url"]})
    elif kind == "s3":
        from stcloud.publishing import s3 as s3_adapter

        secret = secrets.get(current_app.config["STCLOUD_HOME"], SECRET_PREFIX + job_id)
        if not secret:
            raise RuntimeError("the secret key for the S3 delivery is no longer stored; resubmit with delivery settings")
        prefix = delivery.get("prefix") or ""
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        pairs = [(f["path"], f"{prefix}{f['name']}") for f in files]
        s3_adapter.upload_files(pairs, endpoint_url=delivery.get("endpoint_url"), bucket=delivery["bucket"],
                                region=delivery.get("region") or "us-east-1",
                                access_key=delivery["access_key_id"], secret_key=secret, proxies=proxies)
        for f, (_path, key) in zip(files, pairs, strict=False):
            out.append({"name": f["name"], "key": key, "bucket": delivery["bucket"], "size": f["size"],
                        "sha256": f["sha256"],
                        "url": s3_adapter.object_url(delivery.get("endpoint_url"), delivery["bucket"], key),
                        "destination": "s3", "source_url": f["source_url"]})
    elif kind == "hf":
        from stcloud.publishing import hub

        token = os.environ.get("HF_TOKEN")
        if not token:
            raise RuntimeError("HF_TOKEN not set: cannot publish to the Hugging Face Hub")
        repo = delivery["hub_model_id"]
        hub.upload_files(repo, [(f["path"], f["name"]) for f in files], token=token,
                         private=bool(delivery.get("private")), message=f"Outputs of stcloud job {job_id}",
                         proxies=proxies)
        for f in files:
            out.append({"name": f["name"], "key": f["name"], "size": f["size"], "sha256": f["sha256"],
                        "download_url": hub.file_url(repo, f["name"]), "destination": "hf",
                        "repo_id": repo, "source_url": f["source_url"]})
    else:
        raise RuntimeError(f"unknown delivery type {kind!r}")
    return out
