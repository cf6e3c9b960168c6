"""Replicate webhook receiver: source check -> raw body -> signature -> dedupe + apply -> record.

``receive`` is the one entry point of ``POST /api/webhooks/replicate``. Order matters:

1. IP allowlist first (no body read, no secret fetch for strangers).
2. The raw body is read once, bounded (413 beyond the limit).
3. Standard Webhooks verification on those bytes, with the cached secret; one re-fetch on a
   mismatch (rotation). Only then is the body parsed.
4. One short transaction applies the prediction to the job through
   ``jobs.service.apply_update_in`` (the log grows by the new tail only) and inserts the
   ``webhook_deliveries`` row (primary key = ``webhook-id``, ``ON CONFLICT DO NOTHING``): a
   replay finds the id taken and the transaction is undone, changing nothing.

Nothing from an unauthenticated request is written to the database.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import secrets as pysecrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import requests
from flask import current_app
from sqlalchemy import bindparam, select, text

from stcloud import db, states
from stcloud.accounts import audit
from stcloud.errors import (
    BadRequest,
    Forbidden,
    NotConfigured,
    Unauthorized,
    Unavailable,
)
from stcloud.jobs import streaming
from stcloud.jobs.service import apply_update_in, update_from_info
from stcloud.models import Job, UTCDateTime, WebhookDelivery, utcnow
from stcloud.providers import config as provider_config
from stcloud.providers import registry
from stcloud.providers.base import SecretUnavailable
from stcloud.web import netfilter
from stcloud.webhooks import fastpath, verify
from stcloud.webhooks.secret import DEFAULT_MIN_REFRESH_SECONDS, SecretCache

log = logging.getLogger(__name__)

PROVIDER = "replicate"
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024  # Replicate resends the whole training log each time
TEST_MARKER = "stcloud_test"
TEST_ID_PREFIX = "msg_stcloudtest_"
TEST_TIMEOUT = (5.0, 15.0)  # connect, read — for the "Test webhook" delivery

# outcome values stored in webhook_deliveries.outcome (duplicates are answered, not stored)
APPLIED, STALE, IGNORED, DUPLICATE, TEST = "applied", "stale", "ignored", "duplicate", "test"


def _clock() -> float:
    """Wall clock for the timestamp window; tests replace it."""
    return time.time()


@dataclass(frozen=True)
class Receipt:
    outcome: str
    webhook_id: str
    job_id: str | None = None
    job_status: str | None = None
    detail: str | None = None
    moved_from: str | None = None  # the job's status before this delivery moved it (not in the answer)

    def to_dict(self) -> dict:
        # the fields by hand: dataclasses.asdict deep-copies, a measurable share of a delivery
        out = {"outcome": self.outcome, "webhook_id": self.webhook_id, "job_id": self.job_id,
               "job_status": self.job_status, "detail": self.detail}
        return {k: v for k, v in out.items() if v is not None}


# ---- settings ---------------------------------------------------------------------------

def max_body_bytes() -> int:
    return int(current_app.config.get("STCLOUD_WEBHOOK_MAX_BYTES") or DEFAULT_MAX_BODY_BYTES)


def secret_cache() -> SecretCache:
    """This process's cache of the signing secret (one per app)."""
    ext = current_app.extensions
    cache = ext.get("stcloud.webhook_secret")
    if cache is None:
        interval = current_app.config.get("STCLOUD_WEBHOOK_SECRET_MIN_REFRESH")
        cache = ext.setdefault("stcloud.webhook_secret", SecretCache(
            _fetch_secret, min_refresh_seconds=DEFAULT_MIN_REFRESH_SECONDS if interval is None else float(interval)))
    return cache


def _fetch_secret(token: str, base_url: str) -> str:
    """The provider's adapter fetches its signing secret (the cache is keyed by token and
    base URL, so a changed token drops the old secret)."""
    return registry.get(PROVIDER).webhook_secret()


def receiver_config(*, fresh: bool = True) -> tuple[object, dict]:
    """``(version, settings)``: the Replicate settings, re-read only when the stored row changed.

    ``fresh``: read ``provider_configs.updated_at`` now (one indexed read). A delivery asks
    with ``fresh=False`` and gets this process's cached settings: its transaction reads the
    version again before it writes anything (``_record``), and a changed one makes
    ``receive`` check the delivery again under the new settings. Either way a change made on
    the Providers page (allowlist, signature requirement) applies to the next delivery, in
    every server process.
    """
    cached = current_app.extensions.get("stcloud.webhook_config")
    if cached is not None and not fresh:
        return cached
    engine = db.get_db().engine
    if fastpath.available(engine):
        version = fastpath.scalar(engine, _CONFIG_VERSION, {"provider": PROVIDER})
    else:
        with engine.connect() as conn:
            version = conn.execute(_CONFIG_VERSION, {"provider": PROVIDER}).scalar()
    if cached is not None and cached[0] == version:
        return cached
    cached = current_app.extensions["stcloud.webhook_config"] = (version, provider_config.get_config(PROVIDER))
    current_app.extensions.pop("stcloud.webhook_adapter", None)  # rebuilt with the new settings
    return cached


def adapter():
    """The Replicate adapter the deliveries are parsed with, built once per settings version
    (``receiver_config`` drops it when the stored settings change): building it reads the
    settings and the proxy configuration, several queries a delivery does not need."""
    ext = current_app.extensions
    service = ext.get("stcloud.webhook_adapter")
    if service is None:
        service = ext["stcloud.webhook_adapter"] = registry.get(PROVIDER)
    return service


# ---- the receiver -----------------------------------------------------------------------

def receive(*, headers: Mapping[str, str], peer: str | None, forwarded_for: Iterable[str] | None,
            read_body: Callable[[int], bytes]) -> Receipt:
    """Handle one delivery. ``read_body(limit)`` returns the raw body or raises TooLarge.

    Raises Forbidden (source not allowed), TooLarge, Unauthorized (signature),
    Unavailable (secret cannot be fetched: Replicate retries), BadRequest (authentic but
    not a JSON object).
    """
    version, cfg = receiver_config(fresh=False)
    fresh, body = False, None
    while True:
        try:
            client_ip = check_source(cfg, peer, forwarded_for)
            if body is None:
                body = read_body(max_body_bytes())
            webhook_id = authenticate(cfg, headers, body)
        except (Forbidden, Unauthorized):
            if fresh:
                raise
            # refused under the cached settings: the stored ones may have been loosened
            stored, fresh = receiver_config(), True
            if stored[0] == version:
                raise
            version, cfg = stored
            continue
        payload = _parse(body)
        try:
            receipt = record(webhook_id, payload, client_ip, config_version=version)
        except _StaleConfig:  # the settings changed: check this delivery again under them
            (version, cfg), fresh = receiver_config(), True
            continue
        audit_cancel(PROVIDER, receipt, client_ip)
        return receipt


def audit_cancel(provider: str, receipt: Receipt, client_addr: str | None = None) -> None:
    """A delivery that cancelled a job (someone stopped it on the provider's side) is
    recorded as ``job.cancel`` by ``webhook``. Only that status change is: streamed logs and
    progress never write to the audit log (the fast path stays fast)."""
    if receipt.moved_from is None or receipt.job_status != states.CANCELLED:
        return
    try:
        audit.record("job.cancel", target=receipt.job_id, actor="webhook", client_addr=client_addr,
                     detail={"source": "webhook", "provider": provider, "webhook_id": receipt.webhook_id,
                             "from": receipt.moved_from})
    except Exception:  # noqa: BLE001 - the delivery is applied; its answer must not fail
        log.exception("audit record failed for the cancel of %s by a webhook", receipt.job_id)


@functools.lru_cache(maxsize=16)
def _networks(values: tuple[str, ...]) -> tuple:
    """``netfilter.parse_networks``, parsed once per distinct setting (not per delivery)."""
    return netfilter.parse_networks(values)


def check_source(cfg: dict, peer: str | None, forwarded_for: Iterable[str] | None) -> str | None:
    """The client address (str) if the allowlist admits it. Raises Forbidden."""
    try:
        allowed = _networks(tuple(str(v) for v in cfg.get("webhook_allowed_ips") or []))
        trusted = _networks(tuple(str(v) for v in cfg.get("trusted_proxies") or []))
    except ValueError as exc:  # stored settings are validated; fail closed if not
        log.error("webhook allowlist settings are invalid: %s", exc)
        raise Forbidden("webhook allowlist settings are invalid; fix them on the Providers page") from None
    addr = netfilter.client_address(peer, forwarded_for, trusted)
    if not netfilter.is_allowed(addr, allowed):
        log.warning("webhook refused: client %s (peer %s) not in webhook_allowed_ips", addr, peer)
        raise Forbidden(f"client address {addr or 'unknown'} is not in webhook_allowed_ips",
                        extra={"client_ip": str(addr) if addr else None})
    return str(addr) if addr else None


def authenticate(cfg: dict, headers: Mapping[str, str], body: bytes) -> str:
    """Verify the signature; returns the webhook id (the dedupe key).

    Raises Unauthorized or Unavailable.
    """
    if not cfg.get("webhook_require_signature", True):
        wid = headers.get("webhook-id") or ""
        if 0 < len(wid) <= verify.MAX_ID_LENGTH and wid.isascii() and wid.isprintable():
            return wid
        # unsigned and no usable id: identical bodies have identical effects, so the body
        # hash is a safe dedupe key
        return "sha256:" + hashlib.sha256(body).hexdigest()
    try:
        signed = verify.parse_headers(headers, now=_clock())
    except verify.VerificationError as exc:
        raise _unauthorized(exc) from None
    token, base_url = provider_config.replicate_token(), provider_config.replicate_base_url()
    cache = secret_cache()
    try:
        secret = cache.get(token, base_url)
        if verify.signature_matches(secret, signed, body):
            return signed.webhook_id
        fresh = cache.refresh(token, base_url, stale=secret)
        if fresh is not None and verify.signature_matches(fresh, signed, body):
            return signed.webhook_id
    except SecretUnavailable as exc:
        log.error("webhook secret unavailable: %s", exc.message)
        raise Unavailable(f"cannot verify the webhook: {exc.message}",
                          headers={"Retry-After": str(exc.retry_after or 30)}) from None
    except verify.SecretError as exc:
        cache.clear()
        raise Unavailable(f"cannot verify the webhook: {exc}", headers={"Retry-After": "30"}) from None
    log.warning("webhook %s refused: signature does not match", signed.webhook_id)
    raise _unauthorized(verify.VerificationError(
        "no_matching_signature", "webhook-signature does not match the body", "webhook-signature"))


def _unauthorized(exc: verify.VerificationError) -> Unauthorized:
    return Unauthorized(f"webhook verification failed: {exc.message}", title="Invalid webhook signature",
                        extra={"code": exc.code, "header": exc.header})


def _parse(body: bytes) -> dict:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest("webhook body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise BadRequest("webhook body must be a JSON object (a Replicate prediction)")
    return payload


def _short(value, n: int) -> str | None:
    return value[:n] if isinstance(value, str) else None


# Prepared once: statement construction and cache-key work dominate a delivery otherwise.
_CONFIG_VERSION = text("SELECT updated_at FROM provider_configs WHERE provider = :provider")
_RECORD = text(
    "INSERT INTO webhook_deliveries (webhook_id, provider, received_at, job_id, prediction_id, "
    "event_status, outcome, detail, source_ip) VALUES (:webhook_id, :provider, :received_at, :job_id, "
    ":prediction_id, :event_status, :outcome, :detail, :source_ip) ON CONFLICT (webhook_id) DO NOTHING"
).bindparams(bindparam("received_at", type_=UTCDateTime()))
_EXISTING = select(WebhookDelivery.received_at, WebhookDelivery.job_id).where(
    WebhookDelivery.webhook_id == bindparam("webhook_id"))


class _StaleConfig(Exception):
    """Raised inside the delivery's transaction, before any write: the settings it was
    checked under are no longer the stored ones."""


class _Duplicate(Exception):
    """Raised inside the delivery's transaction to undo it: the id was taken meanwhile."""


def record(webhook_id: str, payload: dict, client_ip: str | None, *, config_version) -> Receipt:
    """Apply ``payload`` and record the delivery in one short transaction, deduplicated on
    ``webhook_id``: the delivery row is inserted last with ``ON CONFLICT DO NOTHING``; when
    the id is already taken (a replay, or a concurrent copy that committed first — SQLite's
    write lock and PostgreSQL's primary key serialise them) the whole transaction is undone
    and the answer is ``duplicate``. ``config_version``: the settings version the delivery
    was checked under (``_StaleConfig`` when the stored one differs)."""
    try:
        return _record(webhook_id, payload, client_ip, config_version)
    except _Duplicate:
        with db.session() as s:
            existing = s.execute(_EXISTING, {"webhook_id": webhook_id}).first()
        log.info("webhook %s: duplicate of the delivery received at %s", webhook_id, existing.received_at)
        return Receipt(DUPLICATE, webhook_id, existing.job_id, detail="already received")


class _NotStreaming(Exception):
    """The fast transaction cannot apply this delivery: undone, the ORM path takes it."""


def _check_config(s, config_version) -> None:
    row = s.connection().execute(_CONFIG_VERSION, {"provider": PROVIDER}).first()
    if (row[0] if row is not None else None) != config_version:
        raise _StaleConfig()


def _record(webhook_id: str, payload: dict, client_ip: str | None, config_version) -> Receipt:
    pred_id = _short(payload.get("id"), 128)
    raw_status = _short(payload.get("status"), 32)
    is_test = payload.get(TEST_MARKER) is True
    update = None
    if pred_id and not is_test:
        service = adapter()
        update = update_from_info(service.parse_webhook(payload), provider=PROVIDER,
                                  detail=f"{PROVIDER} webhook: {raw_status} ({webhook_id})")
        engine = db.get_db().engine
        if fastpath.available(engine):
            # most deliveries only stream log and progress: four prepared statements on the
            # pooled sqlite3 connection, no ORM session (fastpath.py)
            try:
                with fastpath.transaction(engine) as s:
                    _check_config(s, config_version)
                    state = streaming.state_by_provider_id(s, PROVIDER, pred_id)
                    result = streaming.apply_streaming(s, state, update) if state is not None else None
                    if result is None:
                        raise _NotStreaming()
                    return _finish(s, webhook_id, pred_id, raw_status, client_ip, result, is_test)
            except _NotStreaming:
                pass
    with db.transaction() as s:
        _check_config(s, config_version)
        result = None
        if update is not None:
            state = streaming.state_by_provider_id(s, PROVIDER, pred_id)
            # a streaming-only update: three statements, no ORM flush
            result = streaming.apply_streaming(s, state, update) if state is not None else None
            if result is None:
                job = (s.get(Job, state.id, with_for_update=True) if state is not None
                       else _bind_job(s, service, pred_id, payload))
                if job is not None:
                    result = apply_update_in(s, job, update, source="webhook")
        return _finish(s, webhook_id, pred_id, raw_status, client_ip, result, is_test)


def _finish(s, webhook_id: str, pred_id: str | None, raw_status: str | None, client_ip: str | None,
            result, is_test: bool) -> Receipt:
    """The delivery row (last, ``ON CONFLICT DO NOTHING``: a taken id undoes the whole
    transaction) and the receipt."""
    outcome, detail = IGNORED, None
    if is_test:
        outcome, detail = TEST, "test delivery from stcloud"
    elif result is None:
        detail = f"no job for prediction {pred_id}" if pred_id else "body has no prediction id"
        log.info("webhook %s: %s: ignored", webhook_id, detail)
    elif result.accepted:
        outcome = APPLIED
        detail = (f"{result.from_status} -> {result.status}" if result.moved
                  else f"{result.status} (no status change)")
    else:
        outcome = STALE
        detail = f"late event: job is {result.status}, {raw_status} ignored"
    inserted = s.connection().execute(_RECORD, {
        "webhook_id": webhook_id, "provider": PROVIDER, "received_at": utcnow(),
        "job_id": result.job_id if result is not None else None,
        "prediction_id": None if is_test else pred_id, "event_status": raw_status,
        "outcome": outcome, "detail": detail, "source_ip": client_ip}).rowcount
    if inserted != 1:
        raise _Duplicate(webhook_id)
    return Receipt(outcome, webhook_id, result.job_id if result is not None else None,
                   result.status if result is not None else None, detail,
                   moved_from=result.from_status if result is not None and result.moved else None)


def _bind_job(s, service, pred_id: str, payload: dict) -> Job | None:
    """The job of a prediction we have not linked yet.

    Replicate sends "start" as soon as the prediction exists, which can be before the
    submit path has stored the prediction id. The launch puts our job id in the prediction
    (part of the signed body): bind on it, but only a job that has no prediction yet.
    """
    our_id = service.webhook_job_id(payload)
    if not our_id:
        return None
    job = s.scalars(select(Job).where(Job.id == our_id, Job.provider == PROVIDER).with_for_update()).first()
    if job is None or job.provider_job_id not in (None, ""):
        return None
    job.provider_job_id = pred_id
    return job


# ---- admin: recent deliveries, test delivery --------------------------------------------

def delivery_to_dict(d: WebhookDelivery) -> dict:
    return {
        "webhook_id": d.webhook_id,
        "provider": d.provider,
        "received_at": d.received_at.isoformat().replace("+00:00", "Z") if d.received_at else None,
        "job_id": d.job_id,
        "prediction_id": d.prediction_id,
        "event_status": d.event_status,
        "outcome": d.outcome,
        "detail": d.detail,
        "source_ip": d.source_ip,
    }


def recent_deliveries(limit: int = 20) -> list[dict]:
    with db.session() as s:
        rows = s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.received_at.desc(),
                                                          WebhookDelivery.webhook_id).limit(limit)).all()
        return [delivery_to_dict(r) for r in rows]


def _hint(status: int, outcome: str | None, signed: bool) -> str:
    if status == 200 and outcome == TEST:
        return "Reachable: the delivery was verified and recorded."
    if status == 200:
        return "Reachable, but the answer did not come from stcloud's webhook receiver (wrong public URL?)."
    if status == 401:
        return ("Reachable, but the signature was refused: " + (
            "check the server clock (±300 s) and that both ends use the same Replicate token."
            if signed else "the test could not be signed (see the signing error)."))
    if status == 403:
        return ("Reachable, but the source address was refused. The test comes from this server, "
                "not from Replicate's ranges, so an allowlist (here or in the proxy) refusing it "
                "is expected; check that trusted_proxies names your proxy.")
    if status in (301, 302, 307, 308):
        return "The public URL redirects; set it to the final URL (usually https://...)."
    if status == 404:
        return "Reachable, but the proxy does not route /api/webhooks/replicate to stcloud."
    if status == 413:
        return "The proxy limits request bodies: allow at least 32 MB (client_max_body_size)."
    if status in (502, 503, 504):
        return "The proxy answered but could not reach stcloud (or stcloud could not fetch the secret)."
    return f"Unexpected answer {status}."


def send_test() -> dict:
    """POST a signed test delivery to ``<public_url>/api/webhooks/replicate``.

    Returns ``{url, reachable, status, latency_ms, outcome, signed, ok, detail}``.
    Raises NotConfigured when no public URL is set.
    """
    cfg = provider_config.get_config(PROVIDER)
    url = provider_config.webhook_endpoint(cfg)
    if not url:
        raise NotConfigured("set the public URL first (without the path; stcloud appends "
                            "/api/webhooks/replicate)", extra={"field": "public_url"})
    webhook_id = TEST_ID_PREFIX + pysecrets.token_hex(12)
    now = datetime.now(UTC)
    body = json.dumps({TEST_MARKER: True, "id": webhook_id, "status": "test",
                       "created_at": now.isoformat().replace("+00:00", "Z")}).encode()
    ts = int(_clock())
    headers = {"Content-Type": "application/json", "User-Agent": "stcloud-webhook-test/1",
               "webhook-id": webhook_id, "webhook-timestamp": str(ts)}
    signed, sign_error = False, None
    try:
        secret = secret_cache().get(provider_config.replicate_token(), provider_config.replicate_base_url())
        headers["webhook-signature"] = verify.sign(secret, webhook_id, ts, body)
        signed = True
    except (SecretUnavailable, verify.SecretError) as exc:
        sign_error = getattr(exc, "message", str(exc))
    report = {"url": url, "webhook_id": webhook_id, "signed": signed, "reachable": False, "status": None,
              "latency_ms": None, "outcome": None, "ok": False}
    if sign_error:
        report["signing_error"] = sign_error
    # Replicate connects directly, not through this server's outbound proxy: do the same.
    with requests.Session() as http:
        http.trust_env = False
        started = time.monotonic()
        try:
            resp = http.post(url, data=body, headers=headers, timeout=TEST_TIMEOUT, allow_redirects=False)
        except requests.Timeout:
            report["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
            report["detail"] = ("Timed out. If this server runs a single sync worker it cannot answer its "
                                "own test; otherwise check DNS, firewall and proxy.")
            return report
        except requests.RequestException as exc:
            report["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
            report["detail"] = f"Not reachable: {type(exc).__name__}: {str(exc)[:300]}"
            return report
        report["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
    report["reachable"] = True
    report["status"] = resp.status_code
    try:
        answer = resp.json()
    except ValueError:
        answer = None
    if isinstance(answer, dict):
        report["outcome"] = answer.get("outcome")
        if resp.status_code >= 400 and answer.get("detail"):
            report["answer_detail"] = str(answer["detail"])[:300]
    report["ok"] = resp.status_code == 200 and report["outcome"] == TEST
    report["detail"] = _hint(resp.status_code, report["outcome"], signed)
    return report
