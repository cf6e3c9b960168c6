"""Access keys for the built-in S3 endpoint: mint, look up, list, revoke, per-job keys, purge.

Secrets are encrypted at rest (Fernet, keyed from the instance's ``storage_key`` in
``secrets.json``) rather than hashed: SigV4 needs the secret itself to recompute a signature,
and a job's key must be handed out again when a worker re-claims the job. A secret is
returned by ``mint`` and ``credentials_for_job`` only — never by ``list_credentials``.

Per-job keys are scoped to bucket ``outputs``, prefix ``<job_id>/``, read + write. They expire a
grace period after the job ends (``STCLOUD_STORAGE_JOB_GRACE_SECONDS``, default 1 h), and in any
case after ``STCLOUD_STORAGE_JOB_MAX_SECONDS`` (default 30 days).
"""
from __future__ import annotations

import base64
import hashlib
import logging
import secrets as pysecrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken
from flask import current_app, has_request_context, request
from sqlalchemy import and_, delete, or_, select

from stcloud import db, secrets
from stcloud.errors import BadRequest, NotFound
from stcloud.models import Job, StorageCredential, utcnow

log = logging.getLogger(__name__)

JOB_BUCKET = "outputs"
REGION = "us-east-1"
ENDPOINT_PATH = "/api/cloud/storage"
DEFAULT_TTL = 24 * 3600
MAX_TTL = 366 * 24 * 3600
MIN_TTL = 60
KEEP_INACTIVE = timedelta(days=7)  # expired/revoked keys stay listed this long
ORPHAN_AFTER = timedelta(minutes=15)  # a job key whose job never appeared
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

TERMINAL = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class Principal:
    """Who an S3 request acts as: an access key and its scope."""

    access_key_id: str
    bucket: str  # "*" = any
    prefix: str
    read_only: bool
    job_id: str | None = None

    def bucket_ok(self, bucket: str) -> bool:
        return self.bucket == "*" or self.bucket == bucket

    def can_read(self, bucket: str, key: str) -> bool:
        return self.bucket_ok(bucket) and key.startswith(self.prefix)

    def can_list(self, bucket: str, prefix: str) -> bool:
        return self.bucket_ok(bucket) and prefix.startswith(self.prefix)

    def can_write(self, bucket: str, key: str) -> bool:
        return not self.read_only and self.can_read(bucket, key)

    def can_admin_buckets(self) -> bool:
        return self.bucket == "*" and not self.prefix and not self.read_only


@dataclass(frozen=True)
class LookupResult:
    principal: Principal
    secret: str
    state: str  # active | expired | revoked
    expires_at: datetime | None


# ---- encryption ---------------------------------------------------------------------------

def _fernet() -> Fernet:
    home = current_app.config["STCLOUD_HOME"]
    cache = current_app.extensions.setdefault("stcloud.storage_fernet", {})
    f = cache.get(home)
    if f is None:
        raw = secrets.get_or_create(home, "storage_key")
        key = base64.urlsafe_b64encode(hashlib.sha256(b"stcloud-storage-credentials:" + raw.encode()).digest())
        f = cache[home] = Fernet(key)
    return f


def _encrypt(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def _decrypt(token: str) -> str | None:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except (InvalidToken, ValueError):
        return None


def _new_access_key_id() -> str:
    return "STC" + "".join(pysecrets.choice(_B32) for _ in range(17))


def _new_secret() -> str:
    return pysecrets.token_urlsafe(30)  # 40 characters, like AWS secrets


# ---- URLs ---------------------------------------------------------------------------------

def base_url() -> str | None:
    """The public URL, else the URL this server listens on, else the request's host URL."""
    from stcloud.providers.config import get_config

    try:
        public = get_config("replicate").get("public_url")
    except Exception:  # noqa: BLE001 - no database yet: fall through to the app config
        public = None
    url = public or current_app.config.get("STCLOUD_PUBLIC_URL") or current_app.config.get("STCLOUD_LOCAL_URL")
    if not url and has_request_context():
        url = request.host_url
    return url.rstrip("/") if url else None


def public_base_url() -> str | None:
    from stcloud.providers.config import get_config, normalize_public_url

    public = get_config("replicate").get("public_url")
    if not public and current_app.config.get("STCLOUD_PUBLIC_URL"):
        public = normalize_public_url(current_app.config["STCLOUD_PUBLIC_URL"])
    return public.rstrip("/") if public else None


def endpoint_url() -> str | None:
    url = base_url()
    return url + ENDPOINT_PATH if url else None


# ---- views --------------------------------------------------------------------------------

def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def _job_end(s, row: StorageCredential) -> tuple[datetime | None, bool]:
    """(end of life implied by the job, job missing)."""
    if not row.job_id:
        return None, False
    job = s.get(Job, row.job_id)
    if job is None:
        return None, True
    if job.status in TERMINAL:
        done = job.completed_at or job.updated_at or utcnow()
        return done + timedelta(seconds=grace_seconds()), False
    return None, False


def grace_seconds() -> int:
    return int(current_app.config.get("STCLOUD_STORAGE_JOB_GRACE_SECONDS") or 3600)


def _effective(s, row: StorageCredential, now: datetime) -> tuple[str, datetime | None]:
    expires = row.expires_at
    job_end, missing = _job_end(s, row)
    if job_end is not None:
        expires = min(expires, job_end) if expires else job_end
    if missing and now - row.created_at > ORPHAN_AFTER:
        expires = min(expires, row.created_at + ORPHAN_AFTER) if expires else row.created_at + ORPHAN_AFTER
    if row.revoked_at is not None:
        return "revoked", expires
    if expires is not None and now >= expires:
        return "expired", expires
    return "active", expires


def to_public(s, row: StorageCredential, now: datetime | None = None) -> dict:
    state, expires = _effective(s, row, now or utcnow())
    return {
        "access_key_id": row.access_key_id,
        "bucket": row.bucket,
        "prefix": row.prefix,
        "read_only": row.read_only,
        "job_id": row.job_id,
        "description": row.description,
        "created_at": _iso(row.created_at),
        "expires_at": _iso(expires),
        "revoked_at": _iso(row.revoked_at),
        "state": state,
        "owner_id": row.owner_id,
    }


# ---- service ------------------------------------------------------------------------------

def _validate(bucket, prefix, ttl_seconds, read_only, description) -> tuple[str, str, int, bool, str | None]:
    from stcloud.storage.backend import RESERVED_BUCKETS, valid_bucket_name

    if not isinstance(bucket, str) or not bucket:
        raise BadRequest("bucket is required: a bucket name, or \"*\" for any bucket", extra={"field": "bucket"})
    if bucket != "*" and (not valid_bucket_name(bucket) or bucket in RESERVED_BUCKETS):
        raise BadRequest(f"bucket {bucket!r} is not a valid bucket name (3-63 lower-case letters, digits, dots, "
                         "hyphens; 'credentials' is reserved)", extra={"field": "bucket"})
    if prefix is None:
        prefix = ""
    if not isinstance(prefix, str) or len(prefix) > 500 or "\x00" in prefix:
        raise BadRequest("prefix must be a string of at most 500 characters", extra={"field": "prefix"})
    if ttl_seconds is None:
        ttl_seconds = DEFAULT_TTL
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or not MIN_TTL <= ttl_seconds <= MAX_TTL:
        raise BadRequest(f"ttl_seconds must be an integer between {MIN_TTL} and {MAX_TTL}",
                         extra={"field": "ttl_seconds"})
    if not isinstance(read_only, bool):
        raise BadRequest("read_only must be true or false", extra={"field": "read_only"})
    if description is not None and (not isinstance(description, str) or len(description) > 200):
        raise BadRequest("description must be a string of at most 200 characters", extra={"field": "description"})
    return bucket, prefix, ttl_seconds, read_only, description or None


def mint(*, bucket: str, prefix: str = "", ttl_seconds: int | None = None, job_id: str | None = None,
         read_only: bool = False, description: str | None = None) -> dict:
    """Create an access key. Returns it with ``secret_access_key`` — the only time the secret
    is shown. Creates the bucket when it does not exist. Raises BadRequest."""
    bucket, prefix, ttl_seconds, read_only, description = _validate(bucket, prefix, ttl_seconds, read_only,
                                                                    description)
    if job_id is not None:
        if not isinstance(job_id, str) or not job_id:
            raise BadRequest("job_id must be a job id", extra={"field": "job_id"})
        with db.session() as s:
            if s.get(Job, job_id) is None:
                raise BadRequest(f"job_id: job {job_id} not found", extra={"field": "job_id"})
    if bucket != "*":
        from stcloud.storage import service as storage_service

        storage_service.backend().create_bucket(bucket, exist_ok=True)
    secret = _new_secret()
    now = utcnow()
    with db.transaction() as s:
        row = StorageCredential(access_key_id=_new_access_key_id(), secret_enc=_encrypt(secret), bucket=bucket,
                                prefix=prefix, read_only=read_only, job_id=job_id, description=description,
                                created_at=now, expires_at=now + timedelta(seconds=ttl_seconds))
        s.add(row)
        s.flush()
        out = to_public(s, row, now)
    log.info("storage: minted access key %s for bucket %s prefix %r", out["access_key_id"], bucket, prefix)
    return {**out, "secret_access_key": secret, "endpoint_url": endpoint_url(), "region": REGION}


def list_credentials() -> list[dict]:
    """Every key (newest first), without secrets."""
    now = utcnow()
    with db.session() as s:
        rows = s.scalars(select(StorageCredential).order_by(StorageCredential.created_at.desc())).all()
        return [to_public(s, r, now) for r in rows]


def revoke(access_key_id: str) -> dict:
    """Revoke a key (idempotent). Raises NotFound."""
    with db.transaction() as s:
        row = s.get(StorageCredential, access_key_id)
        if row is None:
            raise NotFound(f"access key {access_key_id} not found")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        log.info("storage: revoked access key %s", access_key_id)
        return to_public(s, row)


def lookup(access_key_id: str, now: datetime | None = None) -> LookupResult | None:
    """The key with its decrypted secret and state, or None when unknown."""
    now = now or utcnow()
    if not access_key_id or len(access_key_id) > 40:
        return None
    with db.session() as s:
        row = s.get(StorageCredential, access_key_id)
        if row is None:
            return None
        secret = _decrypt(row.secret_enc)
        if secret is None:
            log.error("storage: cannot decrypt the secret of %s (storage_key changed?)", access_key_id)
            return None
        state, expires = _effective(s, row, now)
        principal = Principal(row.access_key_id, row.bucket, row.prefix, row.read_only, row.job_id)
        return LookupResult(principal, secret, state, expires)


def credentials_for_job(job_id: str) -> dict:
    """This job's key for bucket ``outputs``, prefix ``<job_id>/`` (read + write), with its
    secret: the existing one when it is still usable, else a new one (owned by the job's
    owner). Also creates the bucket. Returns {access_key_id, secret_access_key, endpoint_url,
    bucket, prefix, region, expires_at, minted} (``minted``: a new key was made now)."""
    from stcloud.storage import service as storage_service

    storage_service.backend().create_bucket(JOB_BUCKET, exist_ok=True)
    prefix = f"{job_id}/"
    now = utcnow()
    max_age = int(current_app.config.get("STCLOUD_STORAGE_JOB_MAX_SECONDS") or 30 * 86400)
    with db.transaction() as s:
        rows = s.scalars(select(StorageCredential).where(
            StorageCredential.job_id == job_id, StorageCredential.bucket == JOB_BUCKET,
            StorageCredential.prefix == prefix, StorageCredential.read_only.is_(False),
            StorageCredential.revoked_at.is_(None)).order_by(StorageCredential.created_at.desc())).all()
        for row in rows:
            state, expires = _effective(s, row, now)
            secret = _decrypt(row.secret_enc)
            if state == "active" and secret:
                return {"access_key_id": row.access_key_id, "secret_access_key": secret,
                        "endpoint_url": endpoint_url(), "bucket": JOB_BUCKET, "prefix": prefix,
                        "region": REGION, "expires_at": _iso(expires), "minted": False}
        secret = _new_secret()
        job = s.get(Job, job_id)
        row = StorageCredential(access_key_id=_new_access_key_id(), secret_enc=_encrypt(secret), bucket=JOB_BUCKET,
                                prefix=prefix, read_only=False, job_id=job_id, description=f"job {job_id}",
                                created_at=now, expires_at=now + timedelta(seconds=max_age),
                                owner_id=job.owner_id if job is not None else None)  # a job's key is its owner's
        s.add(row)
        s.flush()
        _state, expires = _effective(s, row, now)
        akid = row.access_key_id
    log.info("storage: minted job key %s for %s", akid, job_id)
    return {"access_key_id": akid, "secret_access_key": secret, "endpoint_url": endpoint_url(),
            "bucket": JOB_BUCKET, "prefix": prefix, "region": REGION, "expires_at": _iso(expires), "minted": True}


def purge_expired() -> int:
    """Scheduler job: pin the expiry of keys whose job ended, delete keys expired or revoked
    for more than a week, and clear stale multipart uploads and temp files. Returns the
    number of keys deleted."""
    now = utcnow()
    with db.transaction() as s:
        rows = s.scalars(select(StorageCredential).where(StorageCredential.job_id.is_not(None),
                                                         StorageCredential.revoked_at.is_(None))).all()
        for row in rows:
            _state, expires = _effective(s, row, now)
            if expires is not None and (row.expires_at is None or expires < row.expires_at):
                row.expires_at = expires
        cutoff = now - KEEP_INACTIVE
        result = s.execute(delete(StorageCredential).where(or_(
            and_(StorageCredential.expires_at.is_not(None), StorageCredential.expires_at < cutoff),
            and_(StorageCredential.revoked_at.is_not(None), StorageCredential.revoked_at < cutoff))))
        deleted = result.rowcount or 0
    try:
        from stcloud.storage import service as storage_service

        storage_service.backend().purge_stale()
    except OSError:
        log.exception("storage: purging stale uploads failed")
    if deleted:
        log.info("storage: deleted %d expired or revoked access keys", deleted)
    return deleted


def as_utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
