"""Replicate prediction object -> ``CloudJobInfo`` -> ``JobUpdate``. Pure; shared by the
poller, the webhook receiver and the submit path so all three apply a prediction alike."""
from __future__ import annotations

import logging

from stcloud.jobs import states
from stcloud.jobs.service import JobUpdate
from stcloud.providers.base import CloudJobInfo, CloudJobStatus
from stcloud.timeutil import parse_iso

log = logging.getLogger(__name__)


def map_status(raw: str | None) -> CloudJobStatus | None:
    ours = states.REPLICATE_STATUS.get((raw or "").lower())
    if ours is None:
        log.warning("unknown Replicate status %r: no change", raw)
        return None
    return CloudJobStatus(ours)


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
        error=error,
        billed_seconds=float(predict_time) if predict_time is not None else None,
        created_at=parse_iso(pred.get("created_at")),
        started_at=parse_iso(pred.get("started_at")),
        completed_at=parse_iso(pred.get("completed_at")),
        extra={"urls": pred.get("urls") or {}, "version": pred.get("version")},
    )


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


def update_from_info(info: CloudJobInfo, detail: str | None = None) -> JobUpdate:
    status = info.status.value if info.status else None
    return JobUpdate(
        status=status,
        detail=detail or (f"replicate: {info.raw_status}" if info.raw_status else None),
        logs_full=info.logs,
        error=info.error if status == states.FAILED else None,
        outputs=outputs_from(info.output) if status == states.COMPLETED else None,
        billed_seconds=info.billed_seconds,
        started_at=info.started_at,
        completed_at=info.completed_at,
        provider_job_id=info.provider_job_id or None,
    )
