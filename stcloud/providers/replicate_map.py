"""Replicate prediction object -> ``CloudJobInfo``. Pure; the launch, the poll and the
webhook all read a prediction through it, so all three apply a prediction alike."""
from __future__ import annotations

import logging

from stcloud.providers.base import CloudJobInfo, CloudJobStatus
from stcloud.timeutil import parse_iso

log = logging.getLogger(__name__)

# Replicate prediction status -> ours (SPEC §2). Unknown statuses map to None (no change, logged).
STATUS = {
    "starting": CloudJobStatus.QUEUED,
    "processing": CloudJobStatus.RUNNING,
    "succeeded": CloudJobStatus.COMPLETED,
    "failed": CloudJobStatus.FAILED,
    "canceled": CloudJobStatus.CANCELLED,
    "cancelled": CloudJobStatus.CANCELLED,
    "aborted": CloudJobStatus.FAILED,
}


def map_status(raw: str | None) -> CloudJobStatus | None:
    ours = STATUS.get((raw or "").lower())
    if ours is None:
        log.warning("unknown Replicate status %r: no change", raw)
    return ours


def outputs_from(output) -> list[dict] | None:
    """Replicate output (URL, list of URLs, dict) -> our outputs list (not yet delivered)."""
    if output is None:
        return None
    items = output if isinstance(output, list) else (list(output.values()) if isinstance(output, dict) else [output])
    result = []
    for item in items:
        if isinstance(item, str):
            name = item.rsplit("/", 1)[-1] or item
            result.append({"name": name, "url": item, "destination": "replicate"})
    return result


def info_from_prediction(pred: dict) -> CloudJobInfo:
    metrics = pred.get("metrics") or {}
    predict_time = metrics.get("predict_time")
    error = pred.get("error")
    if error is not None and not isinstance(error, str):
        error = str(error)
    return CloudJobInfo(
        provider_job_id=pred.get("id") or "",
        status=map_status(pred.get("status")),
        raw_status=pred.get("status"),
        logs=pred.get("logs"),
        output=pred.get("output"),
        outputs=outputs_from(pred.get("output")),
        error=error,
        billed_seconds=float(predict_time) if predict_time is not None else None,
        created_at=parse_iso(pred.get("created_at")),
        started_at=parse_iso(pred.get("started_at")),
        completed_at=parse_iso(pred.get("completed_at")),
        extra={"urls": pred.get("urls") or {}, "version": pred.get("version")},
    )
