"""The submit pipeline (SPEC §3): ``submit(body) -> SubmitResult``, one path for every provider.

Order, each step failing with a clear error:

1. validate the body (``jobs.request``: 400 naming the field) — nothing written;
2. idempotency: the same key within 24 h returns the first job (200, ``idempotent: true``);
3. the provider must be ready (e.g. "REPLICATE_API_TOKEN not set") — nothing written;
4. consent ``deny`` ("Never Upload") turns cloud training off: any job on a provider that
   takes data off this machine (``uploads_data``) is 403, whatever its datasets;
   scan the local datasets (the consent summary; missing directories are 400 here); when the
   provider takes the data off this machine: consent (
   ``ask`` without ``data_consent: true`` -> 409 with the summary) and the provider's size
   limit on the scan (413, before any upload);
5. delivery settings, cost estimate, then ONE write transaction: ``check_and_reserve`` (402
   when a block limit would be crossed) + the job row (``uploading``) + the idempotency key.
   A concurrent request with the same key loses on the key's primary key and gets the
   winner's job;
6. from here the job row exists, its ``progress`` shows the stage and any failure leaves it
   ``failed`` with the reason: config snapshot, packaging (``STCLOUD_HOME/uploads/<job>.zip``),
   then ``registry.get(provider).run_job(...)`` OUTSIDE any transaction — the adapter does the
   provider's whole launch — and its answer is applied through the one update path.

An archive the provider uploaded is deleted afterwards; one it did not (self-hosted workers)
is kept on the job and served to whoever runs it. A job cancelled while it is submitted
never gets a remote job (or gets it cancelled at once).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

from flask import current_app
from sqlalchemy.exc import IntegrityError

from stcloud import db, packaging, states
from stcloud.accounts import scope
from stcloud.costs import rates
from stcloud.costs import service as costs
from stcloud.errors import (
    BadRequest,
    Conflict,
    NotConfigured,
    PaymentRequired,
    ProviderError,
    RateLimited,
    StcloudError,
    TooLarge,
)
from stcloud.jobs import approval, consent, dataset_url, idempotency, job_secrets, poller, reconcile, resume_links, waiting
from stcloud.jobs import service as jobs_service
from stcloud.jobs.request import (
    SubmitRequest,
    parse_body,
    parse_dataloader,
    provider_of,
)
from stcloud.jobs.submit_progress import STAGE_SPAN, SubmitProgress
from stcloud.jobs.submit_snapshot import start as start_snapshot
from stcloud.models import IdempotencyKey, Job, new_id, utcnow
from stcloud.notify import events as notify_events
from stcloud.packaging import cache as archive_cache
from stcloud.packaging import roots
from stcloud.providers import registry
from stcloud.providers.base import (
    AVAILABLE,
    CloudJobInfo,
    CloudTrainerService,
    ProviderFailure,
    RunRequest,
)
from stcloud.publishing import service as publishing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmitResult:
    job: dict
    idempotent: bool
    warnings: list = field(default_factory=list)
    status_code: int = 201

    def to_response(self) -> dict:
        return {"job": self.job, "idempotent": self.idempotent, "warnings": list(self.warnings)}


class _Cancelled(Exception):
    """The job was cancelled (by the user) while it was being submitted."""


class _KeyTaken(Exception):
    pass


# ---- packaging glue --------------------------------------------------------------------------

def dataset_roots() -> list[str]:
    """The dataset roots (``STCLOUD_DATASET_ROOTS``, ``packaging.roots``)."""
    return roots.parse_roots(current_app.config.get("STCLOUD_DATASET_ROOTS"), current_app.config["STCLOUD_HOME"])


def data_base_dir() -> str:
    """Relative ``instance_data_dir`` values resolve against the first dataset root."""
    return roots.base_dir(dataset_roots())


def archive_cache_dir() -> Path:
    return Path(current_app.config["STCLOUD_HOME"]) / "cache" / "archives"


def _packaging_error(exc: Exception) -> StcloudError:
    if isinstance(exc, packaging.ArchiveTooLargeError):
        return TooLarge(str(exc), extra={"size_bytes": exc.size, "limit_bytes": exc.max_bytes})
    if isinstance(exc, packaging.DatasetChangedError):
        return Conflict(str(exc))
    return BadRequest(str(exc), extra={"field": "dataloader_config",
                                       **({"dataset": exc.dataset_id} if getattr(exc, "dataset_id", None) else {})})


def scan(dataloader_config: list):
    """The packaging summary of the local datasets. Raises BadRequest / Conflict."""
    try:
        roots.check_inside(dataloader_config, dataset_roots())
        return roots.require_images(packaging.scan(dataloader_config, base_dir=data_base_dir()))
    except packaging.PackagingError as exc:
        raise _packaging_error(exc) from None


def _upload_limit(service: CloudTrainerService) -> int | None:
    return dataset_url.upload_limit(service)  # none when a larger dataset can go by presigned URL


def _first_uploading() -> str | None:
    """The provider a preview without one is for: the first that takes data off this machine."""
    names = registry.names_where(lambda svc: svc.uploads_data and svc.status == AVAILABLE)
    return names[0] if names else None


def preview(body: dict) -> dict:
    """``POST /api/cloud/data-preview``: what a submit would upload, without uploading."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    service = provider_of(body, default=None if "provider" in body else _first_uploading())
    summary = scan(parse_dataloader(body.get("dataloader_config")))
    has_local = summary.dataset_count > 0
    setting = consent.current()
    uploads = service.uploads_data
    limit = _upload_limit(service)
    return {
        "provider": service.provider_name,
        "summary": summary.to_dict(),
        "has_local_data": has_local,
        "consent": setting,
        "consent_label": consent.CHOICES[setting],
        "consent_required": bool(uploads and has_local and setting == "ask"),
        "upload_blocked": bool(uploads and setting == "deny"),
        "upload_limit_bytes": limit,
        "estimated_archive_bytes": summary.estimated_archive_bytes,
        "within_limit": limit is None or summary.min_archive_bytes <= limit,
        "destination": (dataset_url.destination(service, summary.estimated_archive_bytes, body.get("delivery"))
                        if uploads else None),
    }


def _build_archive(job_id: str, req: SubmitRequest, service: CloudTrainerService, progress):
    """Package the local datasets to ``uploads/<job_id>.zip``; for an exact re-run, check
    the archive against the original's sha256 (409 and nothing kept on a mismatch)."""
    dest = Path(current_app.config["STCLOUD_HOME"]) / "uploads"
    limit = _upload_limit(service)
    # Kept data (workers serve it from here) goes through the archive cache: an unchanged
    # dataset is packaged once (packaging/cache.py). An upload is never kept: no cache.
    build = (packaging.build_archive if service.uploads_data
             else functools.partial(archive_cache.build_archive, cache_dir=archive_cache_dir()))
    archive = build(
        req.dataloader_config, dest, base_dir=data_base_dir(), max_bytes=limit,
        progress=(lambda stage, done, total: progress(stage, done, total)) if progress else None,
        archive_name=f"{job_id}.zip", limit_name=service.label if limit else "the upload target")
    if req.expected_dataset_sha256 and archive.sha256 != req.expected_dataset_sha256:
        Path(archive.path).unlink(missing_ok=True)
        raise Conflict(
            f"dataset changed since the original run (archive sha256 {archive.sha256[:12]}…, the original "
            f"was {req.expected_dataset_sha256[:12]}…)",
            extra={"reason": "dataset_changed", "dataset_sha256": archive.sha256,
                   "expected_dataset_sha256": req.expected_dataset_sha256})
    return archive


# ---- the pipeline ---------------------------------------------------------------------------

def submit(body: dict, *, source: str = "api", job_id: str | None = None) -> SubmitResult:
    """Submit a job. Returns ``SubmitResult`` (201, or 200 for an idempotent replay).

    Raises (all ``StcloudError``): BadRequest / NotConfigured (400: bad body, unknown or
    unavailable provider, missing dataset, "REPLICATE_API_TOKEN not set"), Forbidden (403:
    consent "Never Upload"), Conflict (409: consent needed — ``summary`` in the body —,
    dataset changed since the original run, idempotency key reused for another body),
    PaymentRequired (402: spend limit, or the provider's "insufficient credit"), TooLarge
    (413), RateLimited (429), ProviderError (502). Errors raised after the job row exists
    carry ``job`` in ``extra``; the job is then ``failed`` with the reason.
    """
    if job_id is None and (held := waiting.intercept(body, source)) is not None:
        return held  # depends_on / hold / provider "auto": stcloud.pipelines (job_id: its release)
    req = parse_body(body)
    if req.idempotency_key:
        first = idempotency.first_job(req.idempotency_key, req.fingerprint())
        if first is not None:
            return SubmitResult(first, True, [], 200)
    service = provider_of(body)
    links = resume_links.parse(body)  # resume_of / auto_resume (stcloud/jobs/resume_links.py)
    reason = service.not_ready_reason()
    if reason:
        raise NotConfigured(reason, extra={"field": "provider", "provider": req.provider})

    if service.uploads_data:
        consent.refuse_cloud(service.label)
    summary = scan(req.dataloader_config)
    has_local = summary.dataset_count > 0
    if service.uploads_data and has_local:
        where = dataset_url.destination(service, summary.estimated_archive_bytes, req.delivery)
        consent.check(where, req.data_consent, {**summary.to_dict(), "destination": where})
        limit = _upload_limit(service)
        if limit is not None and summary.min_archive_bytes > limit:
            raise TooLarge(
                f"Dataset archive is {summary.min_archive_bytes / 1024 / 1024:.1f} MiB; {service.label} accepts "
                f"at most {limit / 1024 / 1024:.0f} MiB. Nothing was uploaded. Make the dataset smaller or "
                f"run it on a worker.{dataset_url.too_large_hint(service)}",
                extra={"size_bytes": summary.min_archive_bytes, "limit_bytes": limit, "summary": summary.to_dict()})

    job_id = job_id or new_id("job")
    prebuilt = None
    if req.expected_dataset_sha256 and has_local:
        # Exact re-run: compare the data first, so a changed dataset is refused before any
        # row, snapshot or credential exists.
        prebuilt = _build_archive(job_id, req, service, None)
    try:
        created = _create_row(job_id, req, service, summary, source)
    except BaseException:
        if prebuilt is not None:
            Path(prebuilt.path).unlink(missing_ok=True)
        if not _job_exists(job_id):
            publishing.discard_for_submit(job_id)  # no orphan storage key or stored secret
            job_secrets.forget(job_id)
        raise
    if isinstance(created, SubmitResult):  # another request with the same key won
        if prebuilt is not None:
            Path(prebuilt.path).unlink(missing_ok=True)
        return created
    warnings, name, extra_inputs = created

    snapshot = None
    try:
        resume_links.record(job_id, links)
        snapshot = start_snapshot(job_id, req.config_name or name, req.config, req.dataloader_config,
                                  req.snapshot_message)  # beside the launch: jobs/submit_snapshot.py
        if (held := approval.hold(job_id, req, prebuilt)) is not None:  # waits for an admin: jobs/approval.py
            return SubmitResult(snapshot.into(held), False, [*warnings, approval.warning(held)], 201)
    except Exception as exc:  # noqa: BLE001 - every failure ends as a failed job + a clear error
        if snapshot is not None:
            snapshot.record()
        raise _fail(job_id, service, exc, source) from None
    try:
        job = launch(job_id, name, req, service, extra_inputs, source, has_local=has_local, prebuilt=prebuilt)
    finally:
        snapshot.record()
    return SubmitResult(snapshot.into(job), False, warnings, 201)


def launch(job_id: str, name: str, req: SubmitRequest, service: CloudTrainerService, extra_inputs: dict,
           source: str, *, has_local: bool, prebuilt=None) -> dict:
    """Package (when the job has local datasets) and launch a job whose row exists and is
    ``uploading``: the one launch path, for a submit and for an approved job. Returns the job
    dict (also when it was cancelled meanwhile). Any failure ends the job ``failed`` with the
    reason and raises the clear error (``StcloudError``, with the job in ``extra``)."""
    progress = SubmitProgress(job_id)
    archive_path: Path | None = None
    try:
        archive = None
        if has_local:
            archive = _package(job_id, req, service, progress, prebuilt)
            archive_path = Path(archive.path)
        return _launch(job_id, name, req, service, archive, extra_inputs, progress, source)
    except _Cancelled:
        with db.session() as s:
            return jobs_service.to_dict(jobs_service.get_job(s, job_id))
    except Exception as exc:  # noqa: BLE001 - every failure ends as a failed job + a clear error
        raise _fail(job_id, service, exc, source) from None
    finally:
        if service.uploads_data and archive_path is not None:
            archive_path.unlink(missing_ok=True)  # uploaded (or failed): never kept


def _create_row(job_id: str, req: SubmitRequest, service: CloudTrainerService, summary, source: str):
    """Write the job row with its cost reservation. Returns ``(warnings, name, provider
    inputs)``, or the first job's SubmitResult when a concurrent submit took the key."""
    run_config, extra_inputs, delivery_record = publishing.prepare_for_submit(
        job_id, req.provider, req.delivery, req.config)
    with db.session() as s:
        est = costs.estimate(s, req.provider, req.hardware, run_config)
    profile = rates.profile_of(req.provider, req.hardware) or {}
    name = str(req.name or req.config.get("tracker_run_name") or req.config_name
               or f"{req.provider}-{utcnow().strftime('%Y%m%d-%H%M%S')}")[:200]
    # Secrets go to the encrypted store, the row keeps their places (``job_secrets``).
    row_config = job_secrets.seal(job_id, run_config)
    row_dataloader = job_secrets.seal(job_id, req.dataloader_config, "dataloader")
    try:
        with db.transaction() as s:
            if req.idempotency_key:
                row = s.get(IdempotencyKey, req.idempotency_key)
                if row is not None:
                    if idempotency.fresh(row):
                        raise _KeyTaken()
                    s.delete(row)
                    s.flush()
            check = costs.check_and_reserve(s, req.provider, est.estimated_cost_usd,
                                            user_id=scope.current_user_id())
            job = Job(
                id=job_id, name=name, provider=req.provider, status=states.PENDING,
                config=row_config, dataloader_config=row_dataloader, hardware=req.hardware,
                gpu_count=int(profile.get("gpu_count") or 1), **est.job_fields(),
                max_cost_usd=req.max_cost_usd, config_name=req.config_name or name,
                idempotency_key=req.idempotency_key, data_summary=summary.to_dict(),
                delivery=delivery_record, requirements=req.requirements, rerun_of=req.rerun_of,
                progress={"stage": "scan", "submit_percent": STAGE_SPAN["scan"][1]},
                provider_data={"submit_fingerprint": req.fingerprint(), "submit_owner": reconcile.submit_owner(),
                               **({"options": req.options} if req.options else {})},
            )
            job = waiting.adopt(s, job, source=source)  # s.add, or a released waiting row
            s.flush()
            jobs_service.transition(s, job, approval.first_status(s, job), source=source, detail=f"submitted ({source})")
            if check.warnings:  # queued with the job row; sent after the commit
                notify_events.spend(s, "spend.warn", req.provider, list(check.warnings), job_id=job_id)
            if req.idempotency_key:
                s.add(IdempotencyKey(key=req.idempotency_key, job_id=job_id, created_at=utcnow()))
                s.flush()
    except PaymentRequired as refused:  # the row was rolled back; the refusal is still news
        with db.transaction() as s:
            notify_events.spend(s, "spend.block", req.provider, [refused.detail])
        raise
    except (_KeyTaken, IntegrityError):
        if not req.idempotency_key:
            raise
        # Another request with the same key got in first: answer with its job.
        publishing.discard_for_submit(job_id)
        job_secrets.forget(job_id)
        first = idempotency.first_job(req.idempotency_key, req.fingerprint())
        if first is None:
            raise Conflict("a concurrent submit with the same idempotency key failed; try again") from None
        return SubmitResult(first, True, [], 200)
    return list(getattr(check, "warnings", ()) or ()), name, extra_inputs


def _job_exists(job_id: str) -> bool:
    with db.session() as s:
        return s.get(Job, job_id) is not None


def _package(job_id: str, req: SubmitRequest, service: CloudTrainerService, progress: SubmitProgress, prebuilt):
    archive = prebuilt or _build_archive(job_id, req, service, progress)
    progress("package", archive.size, archive.size, force=True)
    with db.transaction() as s:
        job = s.get(Job, job_id)
        job.dataset_sha256 = archive.sha256
        job.data_summary = archive.summary.to_dict()
        job.provider_data = {**(job.provider_data or {}), "archive_size": archive.size,
                             "archive_dataloader_config": job_secrets.seal(
                                 job_id, archive.dataloader_config, "archive_dataloader")}
        if not service.uploads_data:
            job.archive_path = str(archive.path)  # served by stcloud to whoever runs the job
    return archive


def _cancelled(job_id: str) -> bool:
    with db.session() as s:
        return states.is_terminal(jobs_service.get_job(s, job_id).status)


def _launch(job_id: str, name: str, req: SubmitRequest, service: CloudTrainerService, archive,
            extra_inputs: dict, progress: SubmitProgress, source: str) -> dict:
    """``run_job`` outside any transaction, then its answer through the one update path."""
    if _cancelled(job_id):
        raise _Cancelled()
    uploads = service.uploads_data and archive is not None
    if uploads:
        progress("upload", 0, archive.size, force=True)
    with db.session() as s:
        run_config = job_secrets.unseal(job_id, jobs_service.get_job(s, job_id).config)
    extra_inputs = dataset_url.inputs_for(job_id, service, archive, dict(extra_inputs or {}))
    request = RunRequest(
        job_id=job_id, name=name, config=run_config,
        dataloader_config=archive.dataloader_config if archive is not None else req.dataloader_config,
        hardware=req.hardware, archive_path=str(archive.path) if archive is not None else None,
        inputs=dict(extra_inputs or {}), archive_sha256=archive.sha256 if archive is not None else None,
        requirements=req.requirements, options=dict(req.options),
        progress=(lambda done, total: progress("upload", done, total)) if uploads else None,
        cancelled=lambda: _cancelled(job_id))
    info = service.run_job(request)
    if uploads:
        progress("upload", archive.size, archive.size, force=True)
    progress("submit", 1, 1, force=True)
    return _record_launch(job_id, service, info, source)


def _record_launch(job_id: str, service: CloudTrainerService, info: CloudJobInfo, source: str) -> dict:
    remote = info.provider_job_id
    detail = f"{service.label} job {remote} created" if remote else (info.raw_status or "queued")
    if info.extra.get("adopted"):
        detail += " (found after a failed attempt)"
    update = jobs_service.update_from_info(info, provider=service.provider_name, detail=detail)
    cancel_now = False
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if states.is_terminal(job.status):
            cancel_now = bool(remote)  # cancelled while it was being created
            if remote and not job.provider_job_id:
                job.provider_job_id = remote
        else:
            jobs_service.apply_update_in(s, job, update, source=source)
            if job.status == states.UPLOADING:  # started, but its status says nothing we map
                jobs_service.transition(s, job, states.QUEUED, source=source, detail=detail)
            job.progress = {**(job.progress or {}), "stage": "submitted", "submit_percent": 100.0}
            job.next_poll_at = poller.next_poll_at(service, job.status, utcnow())
        result = jobs_service.to_dict(job)
    if cancel_now:
        try:
            service.cancel_job(remote)
        except Exception as exc:  # noqa: BLE001 - the poller's reconciliation is not needed: it is recorded
            log.warning("job %s was cancelled during submit; cancelling %s job %s failed: %s",
                        job_id, service.provider_name, remote, exc)
        raise _Cancelled()
    if not remote and states.is_terminal(result["status"]):
        raise _Cancelled()
    return result


def _as_error(service: CloudTrainerService, exc: Exception) -> tuple[StcloudError, bool]:
    """(the error to answer with, whether a remote job may exist that we could not see)."""
    if isinstance(exc, StcloudError):
        return exc, False
    if isinstance(exc, packaging.PackagingError):
        return _packaging_error(exc), False
    if isinstance(exc, ProviderFailure):
        msg = f"{service.label}: {exc.message}"
        if exc.http_status == 413:
            return TooLarge(msg), False
        if exc.http_status == 429:
            headers = {"Retry-After": str(int(exc.retry_after))} if exc.retry_after else None
            return RateLimited(msg, headers=headers), False
        return ProviderError(msg, status=exc.http_status, title=exc.title), exc.uncertain
    log.exception("submit failed unexpectedly")
    return ProviderError(f"submit failed: {type(exc).__name__}: {exc}", status=500,
                         title="Internal server error"), False


def _fail(job_id: str, service: CloudTrainerService, exc: Exception, source: str) -> StcloudError:
    """Mark the job failed with a clear reason; returns the error to raise (with the job)."""
    err, uncertain = _as_error(service, exc)
    message = err.detail
    try:
        with db.transaction() as s:
            job = s.get(Job, job_id)
            if job is not None:
                jobs_service.transition(s, job, states.FAILED, source=source, detail=message[:500])
                if job.status == states.FAILED:
                    job.error = message
                job.progress = {**(job.progress or {}), "stage": "failed"}
                if uncertain:
                    job.provider_data = {**(job.provider_data or {}), "create_uncertain": True}
                    job.next_poll_at = utcnow()  # the poller looks for it and cancels it
        with db.session() as s:
            job = s.get(Job, job_id)
            if job is not None:
                err.extra = {**err.extra, "job_id": job_id, "job": jobs_service.to_dict(job, include_config=False)}
    except Exception:  # noqa: BLE001 - report the original failure, not this one
        log.exception("could not record the failure of job %s", job_id)
    return err
