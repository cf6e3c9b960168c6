"""Webhooks: the receivers' answers, the test event's report and the delivery log."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ProviderEvent(BaseModel):
    """A provider's webhook payload. Its members are the provider's (Replicate's prediction
    object, or what a plugin provider sends); the receiver verifies the signature over the raw
    bytes and the provider's adapter parses the event, so the document keeps it free-form."""

    model_config = ConfigDict(extra="allow")


class Receipt(BaseModel):
    """What a receiver did with an event: ``outcome`` (applied, duplicate, stale, test, ...)."""

    outcome: str
    webhook_id: str
    job_id: str | None = None
    job_status: str | None = None
    detail: str | None = None


class TestReport(BaseModel):
    """``POST /api/cloud/providers/replicate/webhook-test``: a signed test event sent to this
    instance's public webhook URL, and how it went."""

    model_config = ConfigDict(extra="allow")
    url: str
    webhook_id: str
    signed: bool
    reachable: bool
    status: int | None
    latency_ms: float | None
    outcome: str | None
    ok: bool
    detail: str | None = None
    signing_error: str | None = None
    answer_detail: str | None = None


class WebhookDelivery(BaseModel):
    webhook_id: str
    provider: str | None
    received_at: str | None
    job_id: str | None
    prediction_id: str | None
    event_status: str | None
    outcome: str | None
    detail: str | None
    source_ip: str | None


class Deliveries(BaseModel):
    """``GET /api/cloud/webhooks/deliveries``: the last deliveries, newest first."""

    deliveries: list[WebhookDelivery]
    limit: int

