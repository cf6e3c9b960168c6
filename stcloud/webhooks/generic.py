"""``POST /api/webhooks/<provider>``: job events from any provider whose adapter
``supports_webhooks`` (Replicate keeps its own tuned path, ``service.receive``, with its
allowlist and secret cache).

Order, as for Replicate: the raw body is read once (bounded), the Standard Webhooks signature
is checked with the adapter's ``webhook_secret()`` before anything is parsed, then one short
transaction applies the event through the same update path as every provider — the adapter's
``parse_webhook`` → ``jobs.service.update_from_info`` → ``apply_update_in`` — and inserts the
``webhook_deliveries`` row last (``ON CONFLICT DO NOTHING``): a replay changes nothing.
Nothing from an unauthenticated request is written.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from stcloud import db
from stcloud.errors import NotFound, Unauthorized, Unavailable
from stcloud.jobs.service import apply_update_in, update_from_info
from stcloud.models import Job, WebhookDelivery, utcnow
from stcloud.providers import registry
from stcloud.providers.base import CloudTrainerService, SecretUnavailable
from stcloud.webhooks import service, verify

log = logging.getLogger(__name__)


def receiver(provider: str) -> CloudTrainerService:
    """The adapter of ``provider`` if it takes webhooks. Raises NotFound."""
    adapter = registry.maybe_get(provider)
    if adapter is None or not adapter.supports_webhooks:
        raise NotFound(f"no webhook receiver for provider {provider!r}")
    return adapter


def delivery_key(provider: str, webhook_id: str) -> str:
    """The dedupe key: webhook ids are unique per sender, so they are kept per provider."""
    return f"{provider}:{webhook_id}"[:200]


def receive(provider: str, *, headers: Mapping[str, str], read_body: Callable[[int], bytes]) -> service.Receipt:
    """Handle one delivery. Raises NotFound (no such receiver), TooLarge, Unauthorized
    (signature), Unavailable (no secret now: the sender retries), BadRequest (not a JSON object)."""
    adapter = receiver(provider)
    body = read_body(service.max_body_bytes())
    try:
        signed = verify.parse_headers(headers, now=service._clock())
    except verify.VerificationError as exc:
        raise _unauthorized(exc) from None
    try:
        secret = adapter.webhook_secret()
        matches = verify.signature_matches(secret, signed, body)
    except SecretUnavailable as exc:
        raise Unavailable(f"cannot verify the webhook: {exc.message}",
                          headers={"Retry-After": str(exc.retry_after or 30)}) from None
    except verify.SecretError as exc:
        raise Unavailable(f"cannot verify the webhook: {exc}", headers={"Retry-After": "30"}) from None
    if not matches:
        log.warning("%s webhook %s refused: signature does not match", provider, signed.webhook_id)
        raise _unauthorized(verify.VerificationError(
            "no_matching_signature", "webhook-signature does not match the body", "webhook-signature"))
    payload = service._parse(body)
    receipt = _record(provider, adapter, delivery_key(provider, signed.webhook_id), payload)
    service.audit_cancel(provider, receipt)
    return receipt


def _unauthorized(exc: verify.VerificationError) -> Unauthorized:
    return Unauthorized(f"webhook verification failed: {exc.message}", title="Invalid webhook signature",
                        extra={"code": exc.code, "header": exc.header})


def _record(provider: str, adapter: CloudTrainerService, key: str, payload: dict) -> service.Receipt:
    with db.session() as s:
        if s.get(WebhookDelivery, key) is not None:
            return service.Receipt(service.DUPLICATE, key, detail="already received")
    info = adapter.parse_webhook(payload)
    remote_id = (info.provider_job_id or "")[:128] or None
    raw = (info.raw_status or "")[:32] or None
    try:
        with db.transaction() as s:
            job = None
            if remote_id:
                job = s.scalars(select(Job).where(Job.provider == provider, Job.provider_job_id == remote_id)
                                .with_for_update()).first()
            if job is None:
                job = _bind(s, provider, adapter, payload, remote_id)
            result = None
            if job is not None:
                update = update_from_info(info, provider=provider, detail=f"{provider} webhook: {raw} ({key})")
                result = apply_update_in(s, job, update, source="webhook")
            outcome, detail = service.IGNORED, f"no job for {provider} job {remote_id}"
            if result is not None and result.accepted:
                outcome = service.APPLIED
                detail = (f"{result.from_status} -> {result.status}" if result.moved
                          else f"{result.status} (no status change)")
            elif result is not None:
                outcome, detail = service.STALE, f"late event: job is {result.status}, {raw} ignored"
            # flushed with the update: a concurrent copy of the same delivery fails on the key
            s.add(WebhookDelivery(webhook_id=key, provider=provider[:32], received_at=utcnow(),
                                  job_id=result.job_id if result is not None else None, prediction_id=remote_id,
                                  event_status=raw, outcome=outcome, detail=detail))
            s.flush()
    except IntegrityError:
        return service.Receipt(service.DUPLICATE, key, detail="already received")
    return service.Receipt(outcome, key, result.job_id if result is not None else None,
                           result.status if result is not None else None, detail,
                           moved_from=result.from_status if result is not None and result.moved else None)


def _bind(s, provider: str, adapter: CloudTrainerService, payload: dict, remote_id: str | None) -> Job | None:
    """An event that arrives before ``run_job`` returned: the job named in the (signed) body,
    if it has no remote id yet."""
    our_id = adapter.webhook_job_id(payload)
    if not our_id or not remote_id:
        return None
    job = s.scalars(select(Job).where(Job.id == our_id, Job.provider == provider).with_for_update()).first()
    if job is None or job.provider_job_id not in (None, ""):
        return None
    job.provider_job_id = remote_id
    return job
