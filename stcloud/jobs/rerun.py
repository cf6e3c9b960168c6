"""Re-run a job (SPEC §9): exactly (the config as committed in its snapshot, the original
dataset sha256, the same provider and hardware) or with the current data, through the one
submit pipeline."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stcloud import db
from stcloud.errors import Conflict
from stcloud.jobs import job_secrets
from stcloud.jobs import service as jobs_service
from stcloud.jobs.submit import SubmitResult, submit
from stcloud.redact import restore_secrets
from stcloud.snapshots.service import committed_config


@dataclass(frozen=True)
class RerunSource:
    """Plain values of the original job that a re-run needs."""

    id: str
    name: str
    config_name: str | None
    provider: str
    hardware: str | None
    max_cost_usd: float | None
    delivery: dict | None
    config: dict
    dataloader_config: list
    dataset_sha256: str | None
    snapshot: str | None
    requirements: dict | None
    options: dict | None = None  # the provider's per-job settings

    @classmethod
    def of(cls, job) -> RerunSource:
        return cls(id=job.id, name=job.name, config_name=job.config_name, provider=job.provider,
                   hardware=job.hardware, max_cost_usd=job.max_cost_usd, delivery=job.delivery,
                   config=job_secrets.unseal(job.id, job.config),
                   dataloader_config=job_secrets.unseal(job.id, job.dataloader_config, "dataloader"),
                   dataset_sha256=job.dataset_sha256, snapshot=job.snapshot,
                   requirements=job.requirements, options=(job.provider_data or {}).get("options"))


def rerun_body(home: str | Path, src: RerunSource, *, exact: bool,
               data_consent: bool | None = None, snapshot_message: str | None = None) -> tuple[dict, str]:
    """``(submit body, config source)`` that re-runs ``src``; the source is "snapshot" or "job".

    exact: the config and dataloader as committed in its snapshot (secrets put back from the
    job's stored config), the original dataset sha256 as ``expected_dataset_sha256``.
    Without a snapshot the job's stored config is used (``config_source: "job"``).
    Not exact: the job's stored config with the current data.
    Raises Unavailable when the job has a snapshot that cannot be read."""
    config, dataloader, source = src.config, src.dataloader_config, "job"
    if exact and src.snapshot:
        committed_cfg, committed_dl = committed_config(home, src.config_name or src.name, src.snapshot)
        config = restore_secrets(committed_cfg, src.config)
        dataloader = restore_secrets(committed_dl, src.dataloader_config)
        source = "snapshot"
    body: dict[str, Any] = {
        "provider": src.provider,
        "name": src.name,
        "config_name": src.config_name or src.name,
        "config": config,
        "dataloader_config": dataloader,
        "rerun_of": src.id,
        "snapshot_message": snapshot_message or (
            f"{'exact ' if exact else ''}re-run of {src.id}"
            + (f" (snapshot {src.snapshot[:10]})" if exact and src.snapshot else "")),
    }
    for key, value in (("hardware", src.hardware), ("max_cost_usd", src.max_cost_usd),
                       ("delivery", src.delivery), ("requirements", src.requirements)):
        if value is not None:
            body[key] = value
    if src.options:
        body[src.provider] = src.options
    if exact and src.dataset_sha256:
        body["expected_dataset_sha256"] = src.dataset_sha256
    if data_consent is not None:
        body["data_consent"] = bool(data_consent)
    return body, source


def is_dataset_changed(exc: Conflict) -> bool:
    text = f"{exc.detail} {exc.extra}".lower()
    return "dataset changed" in text or exc.extra.get("reason") == "dataset_changed"


def rerun(home: str | Path, job_id: str, *, exact: bool, data_consent: bool | None = None,
          snapshot_message: str | None = None) -> SubmitResult:
    """Re-run job ``job_id`` through the submit pipeline; returns its SubmitResult.

    Raises NotFound, Unavailable (snapshot unreadable), Conflict (409; when the dataset
    changed since the original run it carries ``offer: {"exact": false}``), and whatever the
    submit raises (consent, spend limit, provider errors)."""
    with db.session() as s:
        src = RerunSource.of(jobs_service.get_job(s, job_id))
    body, _source = rerun_body(home, src, exact=exact, data_consent=data_consent,
                               snapshot_message=snapshot_message)
    try:
        return submit(body, source="rerun")
    except Conflict as exc:
        if exact and is_dataset_changed(exc):
            exc.extra = {**exc.extra, "reason": "dataset_changed", "rerun_of": job_id,
                         "expected_dataset_sha256": src.dataset_sha256,
                         "offer": {"exact": False, "label": "Re-run with current data",
                                   "method": "POST", "url": f"/api/cloud/jobs/{job_id}/rerun",
                                   "body": {"exact": False}}}
        raise
