"""The submit pipeline (SPEC §3): ``submit(body) -> SubmitResult``.

Order, each step failing with a clear error:

1. validate the body (400 naming the field) — nothing written;
2. idempotency: the same key within 24 h returns the first job (200, ``idempotent: true``);
3. scan the local datasets (the consent summary; missing directories are 400 here);
4. consent for cloud uploads (``deny`` -> 403, ``ask`` without ``data_consent: true`` -> 409
   with the summary); Replicate's 100 MiB limit checked on the scan (413, before any upload);
5. delivery settings (``publishing.prepare_for_submit``), cost estimate, then ONE write
   transaction: ``check_and_reserve`` (402 when a block limit would be crossed) + the job row
   (status ``uploading``) + the idempotency key. A concurrent request with the same key
   loses on the key's primary key and gets the winner's job;
6. from here the job row exists, its ``progress`` shows the stage (scan -> package -> upload
   -> submit) and any failure leaves it ``failed`` with the reason: config snapshot,
   packaging (``STCLOUD_HOME/uploads/<job_id>.zip``), then
   * Replicate: upload (``/v1/files``), delete the local archive, create the prediction with
     the guarded retry (never two predictions), record its id, ``queued``;
   * worker / local: keep the archive for the worker to download, ``queued``.

No transaction is held across packaging or an HTTP call. A job cancelled while it uploads
never gets a prediction (or gets its prediction cancelled at once).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from stcloud import db, settings
from stcloud.accounts import scope
from stcloud.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    ProviderError,
    RateLimited,
    StcloudError,
    TooLarge,
)
from stcloud.jobs import service as jobs_service
from stcloud.jobs import states
from stcloud.jobs.service import JobUpdate
from stcloud.models import HardwareRate, IdempotencyKey, Job, new_id, utcnow
from stcloud.providers import config as provider_config
from stcloud.providers import registry
from stcloud.providers.replicate import (
    HARDWARE_PROFILES,
    MAX_UPLOAD_BYTES,
    ReplicateAPIError,
)

log = logging.getLogger(__name__)

IDEMPOTENCY_TTL = timedelta(hours=24)
CLOUD_PROVIDERS = ("replicate",)  # uploads leave this machine: consent applies
SELF_HOSTED = ("worker", "local")
CONSENT_CHOICES = {"ask": "Always Ask", "allow": "Always Allow", "deny": "Never Upload"}
STAGES = ("scan", "package", "upload", "submit")
# share of the submit progress bar per stage: (start %, end %)
STAGE_SPAN = {"scan": (0, 5), "package": (5, 40), "upload": (40, 95), "submit": (95, 100)}
_NAME_RE = re.compile(r"^[^/\\\x00-\x1f]+$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class SubmitResult:
    job: dict
    idempotent: bool
    warnings: list = field(default_factory=list)
    status_code: int = 201

    def to_response(self) -> dict:
        return {"job": self.job, "idempotent": self.idempotent, "warnings": list(self.warnings)}


@dataclass(frozen=True)
class SubmitRequest:
    provider: str
    name: str | None
    config: dict
    dataloader_config: list
    hardware: str | None
    data_consent: bool
    max_cost_usd: float | None
    idempotency_key: str | None
    snapshot_message: str | None
    config_name: str | None
    delivery: dict | None
    requirements: dict | None
    expected_dataset_sha256: str | None
    rerun_of: str | None

    def fingerprint(self) -> str:
        """What makes two submits "the same" for an idempotency key (consent excluded)."""
        raw = json.dumps({"provider": self.provider, "name": self.name, "config": self.config,
                          "dataloader_config": self.dataloader_config, "hardware": self.hardware},
                         sort_keys=True, default=str)
        return hashlib.sha256(raw.encode()).hexdigest()


# ---- settings used by submit ---------------------------------------------------------------

def consent_setting() -> str:
    value = settings.get("consent")
    return value if value in CONSENT_CHOICES else "ask"


def set_consent(value: Any) -> str:
    """Store the consent setting (``ask | allow | deny``). Raises BadRequest naming the field."""
    if value not in CONSENT_CHOICES:
        raise BadRequest(f"consent must be one of {', '.join(CONSENT_CHOICES)} "
                         f"({', '.join(CONSENT_CHOICES.values())}), got {value!r}", extra={"field": "consent"})
    settings.put("consent", value)
    return value


def max_upload_bytes() -> int:
    return int(current_app.config.get("REPLICATE_MAX_UPLOAD_BYTES") or MAX_UPLOAD_BYTES)


def data_base_dir() -> str:
    """Relative ``instance_data_dir`` values resolve against STCLOUD_HOME."""
    return current_app.config["STCLOUD_HOME"]


def hardware_profiles() -> dict[str, dict]:
    """Replicate hardware profiles ``{name: {label, vram_gb, gpu_count}}``: the built-in ones,
    the cost module's defaults and any profile with a configured rate."""
    profiles = {k: dict(v) for k, v in HARDWARE_PROFILES.items()}
    try:
        from stcloud.costs.rates import DEFAULT_PROFILES
    except ImportError:  # older cost module: built-in profiles only
        DEFAULT_PROFILES = {}
    for (provider, hw), prof in DEFAULT_PROFILES.items():
        if provider == "replicate":
            profiles.setdefault(hw, {"label": prof.get("label") or hw, "vram_gb": prof.get("vram_gb"),
                                     "gpu_count": prof.get("gpu_count") or 1})
    with db.session() as s:
        for row in s.scalars(select(HardwareRate).where(HardwareRate.provider == "replicate")):
            profiles.setdefault(row.hardware, {"label": row.label or row.hardware, "vram_gb": row.vram_gb,
                                               "gpu_count": row.gpu_count or 1})
    return profiles


# ---- validation ----------------------------------------------------------------------------

def _json_field(value: Any, name: str, kind: type) -> Any:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise BadRequest(f"{name} is not valid JSON: {exc}", extra={"field": name}) from None
    if not isinstance(value, kind):
        what = "a JSON object" if kind is dict else "a JSON list of datasets"
        raise BadRequest(f"{name} must be {what}", extra={"field": name})
    return value


def parse_dataloader(value: Any) -> list:
    if value is None:
        raise BadRequest("dataloader_config is required (a list of datasets)", extra={"field": "dataloader_config"})
    dl = _json_field(value, "dataloader_config", list)
    if not dl:
        raise BadRequest("dataloader_config must list at least one dataset", extra={"field": "dataloader_config"})
    for i, entry in enumerate(dl):
        if not isinstance(entry, dict):
            raise BadRequest(f"dataloader_config entry #{i + 1} must be an object", extra={"field": "dataloader_config"})
    return dl


def _opt_str(body: dict, key: str, max_len: int) -> str | None:
    value = body.get(key)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string", extra={"field": key})
    value = value.strip()
    if len(value) > max_len:
        raise BadRequest(f"{key} is too long (at most {max_len} characters)", extra={"field": key})
    return value or None


def parse_body(body: Any) -> SubmitRequest:
    """Validate a submit body. Raises BadRequest naming the field."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    provider = body.get("provider")
    if not provider:
        raise BadRequest("provider is required (replicate, worker or local)", extra={"field": "provider"})
    if not isinstance(provider, str) or provider not in registry.names():
        raise BadRequest(f"unknown provider {provider!r}; expected one of {', '.join(registry.names())}",
                         extra={"field": "provider"})
    if body.get("config") is None:
        raise BadRequest("config is required (the training config, a JSON object)", extra={"field": "config"})
    config = _json_field(body.get("config"), "config", dict)
    dataloader = parse_dataloader(body.get("dataloader_config"))
    name = _opt_str(body, "name", 200)
    if name is not None and not _NAME_RE.match(name):
        raise BadRequest("name must not contain slashes or control characters", extra={"field": "name"})
    config_name = _opt_str(body, "config_name", 200)
    if config_name is not None and (not _NAME_RE.match(config_name) or config_name.startswith(".")):
        raise BadRequest("config_name must not contain slashes or start with a dot", extra={"field": "config_name"})
    hardware = _opt_str(body, "hardware", 64)
    consent = body.get("data_consent", False)
    if consent in ("true", "1", "yes", "on"):
        consent = True
    elif consent in (None, "", "false", "0", "no", "off"):
        consent = False
    if not isinstance(consent, bool):
        raise BadRequest("data_consent must be true or false", extra={"field": "data_consent"})
    max_cost = body.get("max_cost_usd")
    if max_cost in (None, ""):
        max_cost = None
    else:
        try:
            if isinstance(max_cost, bool):
                raise ValueError
            max_cost = float(max_cost)
        except (TypeError, ValueError):
            raise BadRequest(f"max_cost_usd must be a number of dollars, got {max_cost!r}",
                             extra={"field": "max_cost_usd"}) from None
        if not (max_cost > 0) or max_cost != max_cost or max_cost == float("inf"):
            raise BadRequest("max_cost_usd must be greater than 0", extra={"field": "max_cost_usd"})
    key = _opt_str(body, "idempotency_key", 200)
    snapshot_message = _opt_str(body, "snapshot_message", 2000)
    delivery = body.get("delivery")
    if delivery in ({}, ""):
        delivery = None
    if delivery is not None and not isinstance(delivery, dict):
        raise BadRequest("delivery must be an object", extra={"field": "delivery"})
    requirements = body.get("requirements")
    if requirements in ({}, None, ""):
        requirements = None
    elif provider in CLOUD_PROVIDERS:
        raise BadRequest("requirements (labels, min_gpus, min_vram_gb) apply to worker and local jobs only",
                         extra={"field": "requirements"})
    else:
        requirements = _normalize_requirements(requirements)
    expected = _opt_str(body, "expected_dataset_sha256", 64)
    if expected is not None:
        expected = expected.lower()
        if not _SHA_RE.match(expected):
            raise BadRequest("expected_dataset_sha256 must be 64 hex characters",
                             extra={"field": "expected_dataset_sha256"})
    rerun_of = _opt_str(body, "rerun_of", 40)
    if rerun_of is not None:
        with db.session() as s:
            if s.get(Job, rerun_of) is None:
                raise BadRequest(f"rerun_of: job {rerun_of} not found", extra={"field": "rerun_of"})
    if provider in CLOUD_PROVIDERS:
        profiles = hardware_profiles()
        hardware = hardware or provider_config.get_config(provider).get("hardware") or "gpu-l40s"
        if hardware not in profiles:
            raise BadRequest(f"unknown hardware {hardware!r} for {provider}; expected one of "
                             f"{', '.join(sorted(profiles))}", extra={"field": "hardware"})
    return SubmitRequest(provider, name, config, dataloader, hardware, consent, max_cost, key,
                         snapshot_message, config_name, delivery, requirements, expected, rerun_of)


def _normalize_requirements(raw: Any) -> dict | None:
    try:
        from stcloud.workers.matching import normalize_requirements
    except ImportError:  # the worker package is not installed in this build
        if not isinstance(raw, dict):
            raise BadRequest("requirements must be an object", extra={"field": "requirements"}) from None
        return dict(raw)
    try:
        return normalize_requirements(raw) or None
    except ValueError as exc:
        raise BadRequest(str(exc), extra={"field": "requirements"}) from None


# ---- packaging glue --------------------------------------------------------------------------

def _packaging_error(exc: Exception) -> StcloudError:
    from stcloud import packaging

    if isinstance(exc, packaging.ArchiveTooLargeError):
        return TooLarge(str(exc), extra={"size_bytes": exc.size, "limit_bytes": exc.max_bytes})
    if isinstance(exc, packaging.DatasetChangedError):
        return Conflict(str(exc))
    return BadRequest(str(exc), extra={"field": "dataloader_config",
                                       **({"dataset": exc.dataset_id} if getattr(exc, "dataset_id", None) else {})})


def scan(dataloader_config: list):
    """The packaging summary of the local datasets. Raises BadRequest / Conflict."""
    from stcloud import packaging

    try:
        return packaging.scan(dataloader_config, base_dir=data_base_dir())
    except packaging.PackagingError as exc:
        raise _packaging_error(exc) from None


def preview(body: dict) -> dict:
    """``POST /api/cloud/data-preview``: what a submit would upload, without uploading."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    provider = body.get("provider") or "replicate"
    if not isinstance(provider, str) or provider not in registry.names():
        raise BadRequest(f"unknown provider {provider!r}; expected one of {', '.join(registry.names())}",
                         extra={"field": "provider"})
    dataloader = parse_dataloader(body.get("dataloader_config"))
    summary = scan(dataloader)
    has_local = summary.dataset_count > 0
    consent = consent_setting()
    cloud = provider in CLOUD_PROVIDERS
    limit = max_upload_bytes() if cloud else None
    return {
        "provider": provider,
        "summary": summary.to_dict(),
        "has_local_data": has_local,
        "consent": consent,
        "consent_label": CONSENT_CHOICES[consent],
        "consent_required": bool(cloud and has_local and consent == "ask"),
        "upload_blocked": bool(cloud and has_local and consent == "deny"),
        "upload_limit_bytes": limit,
        "estimated_archive_bytes": summary.estimated_archive_bytes,
        "within_limit": limit is None or summary.min_archive_bytes <= limit,
    }


# ---- idempotency --------------------------------------------------------------------------

def _fresh(row: IdempotencyKey) -> bool:
    return utcnow() - row.created_at < IDEMPOTENCY_TTL


def job_for_key(key: str) -> dict | None:
    """The job submitted with ``key`` within 24 h (for progress polling), or None."""
    with db.session() as s:
        row = s.get(IdempotencyKey, key)
        if row is None or not _fresh(row):
            return None
        job = s.get(Job, row.job_id)
        visible = job is not None and scope.may_see(job.owner_id)  # keys are global; jobs are not
        return jobs_service.to_dict(job, include_config=False) if visible else None


def _replay(key: str, req: SubmitRequest) -> SubmitResult | None:
    with db.session() as s:
        row = s.get(IdempotencyKey, key)
        if row is None or not _fresh(row):
            return None
        job = s.get(Job, row.job_id)
        if job is None:
            return None
        if not scope.may_see(job.owner_id):
            raise Conflict(f"idempotency key {key!r} is already in use; use a new key")
        first = (job.provider_data or {}).get("submit_fingerprint")
        if first and first != req.fingerprint():
            raise Conflict(f"idempotency key {key!r} was already used for a different submission "
                           f"(job {job.id}); use a new key", extra={"job_id": job.id})
        return SubmitResult(jobs_service.to_dict(job), True, [], 200)


# ---- progress -------------------------------------------------------------------------------

class _Progress:
    """Writes the submit stage on the job (``progress.stage`` and bytes), at most every
    ``interval`` seconds per stage, in short transactions of their own."""

    def __init__(self, job_id: str, interval: float = 0.4):
        self.job_id = job_id
        self.interval = interval
        self.stage: str | None = None
        self.last = 0.0

    def __call__(self, stage: str, done: int, total: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and stage == self.stage and now - self.last < self.interval and done < total:
            return
        self.stage, self.last = stage, now
        lo, hi = STAGE_SPAN.get(stage, (0, 100))
        frac = (done / total) if total else 1.0
        prog: dict[str, Any] = {"stage": stage, "stage_done": int(done), "stage_total": int(total),
                                "submit_percent": round(lo + (hi - lo) * min(1.0, max(0.0, frac)), 1)}
        if stage == "upload":
            prog.update(upload_bytes=int(done), upload_total=int(total))
        try:
            jobs_service.apply_update(self.job_id, JobUpdate(progress=prog), source="submit")
        except Exception:  # noqa: BLE001 - progress is informative; never fail a submit for it
            log.debug("could not record submit progress for %s", self.job_id, exc_info=True)


# ---- the pipeline ---------------------------------------------------------------------------

class _Cancelled(Exception):
    """The job was cancelled (by the user) while it was being submitted."""


def submit(body: dict, *, source: str = "api") -> SubmitResult:
    """Submit a job. Returns ``SubmitResult`` (201, or 200 for an idempotent replay).

    Raises (all ``StcloudError``): BadRequest / NotConfigured (400: bad body, missing
    dataset, "REPLICATE_API_TOKEN not set"), Forbidden (403: consent "Never Upload"),
    Conflict (409: consent needed — ``summary`` in the body —, dataset changed since the
    original run, idempotency key reused for another body), PaymentRequired (402: spend
    limit), TooLarge (413), RateLimited (429), ProviderError (502, or 402 for insufficient
    Replicate credit). Errors raised after the job row exists carry ``job`` in ``extra``;
    the job is then ``failed`` with the reason.
    """
    from stcloud.costs import service as costs
    from stcloud.publishing import service as publishing

    req = parse_body(body)
    if req.idempotency_key:
        replay = _replay(req.idempotency_key, req)
        if replay is not None:
            return replay

    cloud = req.provider in CLOUD_PROVIDERS
    if cloud:
        from stcloud.providers import factories

        factories.replicate_service()  # "REPLICATE_API_TOKEN not set" before anything is written

    summary = scan(req.dataloader_config)
    has_local = summary.dataset_count > 0
    if cloud and has_local:
        _check_consent(req, summary)
        limit = max_upload_bytes()
        if summary.min_archive_bytes > limit:
            raise TooLarge(
                f"Dataset archive is {summary.min_archive_bytes / 1024 / 1024:.1f} MiB; Replicate accepts at "
                f"most {limit / 1024 / 1024:.0f} MiB. Nothing was uploaded. Make the dataset smaller or "
                f"run it on a worker.", extra={"size_bytes": summary.min_archive_bytes, "limit_bytes": limit,
                                               "summary": summary.to_dict()})

    job_id = new_id("job")
    prebuilt = None
    if req.expected_dataset_sha256 and has_local:
        # Exact re-run: compare the data first, so a changed dataset is refused before any
        # row, snapshot or credential exists.
        prebuilt = _build_archive(job_id, req, None)
    try:
        run_config, extra_inputs, delivery_record = publishing.prepare_for_submit(
            job_id, req.provider, req.delivery, req.config)
        with db.session() as s:
            est = costs.estimate(s, req.provider, req.hardware, run_config)
        profile = hardware_profiles().get(req.hardware or "", {}) if cloud else {}
        name = req.name or req.config.get("tracker_run_name") or req.config_name or \
            f"{req.provider}-{utcnow().strftime('%Y%m%d-%H%M%S')}"
        try:
            with db.transaction() as s:
                if req.idempotency_key:
                    row = s.get(IdempotencyKey, req.idempotency_key)
                    if row is not None:
                        if _fresh(row):
                            raise _KeyTaken()
                        s.delete(row)
                        s.flush()
                check = costs.check_and_reserve(s, req.provider, est.estimated_cost_usd)
                job = Job(
                    id=job_id, name=str(name)[:200], provider=req.provider, status=states.PENDING,
                    config=run_config, dataloader_config=req.dataloader_config, hardware=req.hardware,
                    gpu_count=int(profile.get("gpu_count") or 1), **est.job_fields(),
                    max_cost_usd=req.max_cost_usd, config_name=req.config_name or str(name)[:200],
                    idempotency_key=req.idempotency_key, data_summary=summary.to_dict(),
                    delivery=delivery_record, requirements=req.requirements, rerun_of=req.rerun_of,
                    progress={"stage": "scan", "submit_percent": STAGE_SPAN["scan"][1]},
                    provider_data={"submit_fingerprint": req.fingerprint()},
                )
                s.add(job)
                s.flush()
                jobs_service.transition(s, job, states.UPLOADING, source=source,
                                        detail=f"submitted ({source})")
                if req.idempotency_key:
                    s.add(IdempotencyKey(key=req.idempotency_key, job_id=job_id, created_at=utcnow()))
                    s.flush()
        except (_KeyTaken, IntegrityError):
            if not req.idempotency_key:
                raise
            # Another request with the same key got in first: answer with its job.
            replay = _replay(req.idempotency_key, req)
            if prebuilt is not None:
                Path(prebuilt.path).unlink(missing_ok=True)
            publishing.discard_for_submit(job_id)
            if replay is None:
                raise Conflict("a concurrent submit with the same idempotency key failed; try again") from None
            return replay
    except BaseException:
        if prebuilt is not None:
            Path(prebuilt.path).unlink(missing_ok=True)
        if not _job_exists(job_id):
            publishing.discard_for_submit(job_id)  # no orphan storage key or stored secret
        raise
    warnings = list(getattr(check, "warnings", ()) or ())

    progress = _Progress(job_id)
    archive_path: Path | None = None
    try:
        _snapshot(job_id, req, name)
        archive = None
        if has_local:
            archive = _package(job_id, req, progress, prebuilt)
            archive_path = Path(archive.path)
        if cloud:
            job = _submit_replicate(job_id, req, archive, extra_inputs, progress, source)
        else:
            job = _queue_for_workers(job_id, archive, source)
    except _Cancelled:
        with db.session() as s:
            job = jobs_service.to_dict(jobs_service.get_job(s, job_id))
    except Exception as exc:  # noqa: BLE001 - every failure ends as a failed job + a clear error
        raise _fail(job_id, exc, source) from None
    finally:
        if cloud and archive_path is not None:
            archive_path.unlink(missing_ok=True)  # uploaded (or failed): never kept for Replicate
    return SubmitResult(job, False, warnings, 201)


def _job_exists(job_id: str) -> bool:
    with db.session() as s:
        return s.get(Job, job_id) is not None


class _KeyTaken(Exception):
    pass


def _human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _check_consent(req: SubmitRequest, summary) -> None:
    consent = consent_setting()
    totals = summary.to_dict()["totals"]
    what = f"{totals['files']} files ({_human(totals['bytes'])}) from {totals['datasets']} local dataset(s)"
    if consent == "deny":
        raise Forbidden(
            f"Uploading local data to {req.provider} is disabled (consent setting: Never Upload). This job would "
            f"upload {what}. Change the setting on the Settings page, or run the job on a worker.",
            extra={"consent": consent, "summary": summary.to_dict()})
    if consent == "ask" and not req.data_consent:
        raise Conflict(
            f"This job uploads {what} to {req.provider}. Review the summary and submit again with "
            f"data_consent: true to confirm.",
            title="Consent required",
            extra={"consent": consent, "consent_required": True, "summary": summary.to_dict()})


def _snapshot(job_id: str, req: SubmitRequest, name: str) -> None:
    try:
        from stcloud.snapshots.service import snapshot_for_submit

        sha, error = snapshot_for_submit(current_app.config["STCLOUD_HOME"], req.config_name or name,
                                         req.config, req.dataloader_config, job_id, req.snapshot_message)
    except Exception as exc:  # noqa: BLE001 - the contract says it never raises; never block a submit
        sha, error = None, f"snapshot failed: {exc}"
    if sha or error:
        with db.transaction() as s:
            job = s.get(Job, job_id)
            job.snapshot, job.snapshot_error = sha, error


def _build_archive(job_id: str, req: SubmitRequest, progress):
    """Package the local datasets to ``uploads/<job_id>.zip``; for an exact re-run, check
    the archive against the original's sha256 (409 and nothing kept on a mismatch)."""
    from stcloud import packaging

    cloud = req.provider in CLOUD_PROVIDERS
    dest = Path(current_app.config["STCLOUD_HOME"]) / "uploads"
    archive = packaging.build_archive(
        req.dataloader_config, dest, base_dir=data_base_dir(),
        max_bytes=max_upload_bytes() if cloud else None,
        progress=(lambda stage, done, total: progress(stage, done, total)) if progress else None,
        archive_name=f"{job_id}.zip", limit_name="Replicate" if cloud else "the upload target")
    if req.expected_dataset_sha256 and archive.sha256 != req.expected_dataset_sha256:
        Path(archive.path).unlink(missing_ok=True)
        raise Conflict(
            f"dataset changed since the original run (archive sha256 {archive.sha256[:12]}…, the original "
            f"was {req.expected_dataset_sha256[:12]}…)",
            extra={"reason": "dataset_changed", "dataset_sha256": archive.sha256,
                   "expected_dataset_sha256": req.expected_dataset_sha256})
    return archive


def _package(job_id: str, req: SubmitRequest, progress: _Progress, prebuilt=None):
    archive = prebuilt or _build_archive(job_id, req, progress)
    progress("package", archive.size, archive.size, force=True)
    with db.transaction() as s:
        job = s.get(Job, job_id)
        job.dataset_sha256 = archive.sha256
        job.data_summary = archive.summary.to_dict()
        job.provider_data = {**(job.provider_data or {}), "archive_size": archive.size,
                             "archive_dataloader_config": archive.dataloader_config}
    return archive


def _ensure_active(job_id: str) -> None:
    with db.session() as s:
        if states.is_terminal(jobs_service.get_job(s, job_id).status):
            raise _Cancelled()


def _submit_replicate(job_id: str, req: SubmitRequest, archive, extra_inputs: dict,
                      progress: _Progress, source: str) -> dict:
    from stcloud.providers import factories, replicate_map

    service = factories.replicate_service()
    inputs = dict(extra_inputs or {})
    uploaded = None
    if archive is not None:
        _ensure_active(job_id)
        progress("upload", 0, archive.size, force=True)
        uploaded = service.upload_file(archive.path, job_id=job_id,
                                       progress=lambda done, total: progress("upload", done, total))
        progress("upload", archive.size, archive.size, force=True)
        inputs["images"] = uploaded.url
        with db.transaction() as s:
            job = s.get(Job, job_id)
            job.provider_data = {**(job.provider_data or {}), "file_id": uploaded.id, "file_url": uploaded.url}
    try:
        _ensure_active(job_id)
    except _Cancelled:
        if uploaded is not None:
            service.delete_file(uploaded.id)
        raise
    progress("submit", 0, 1, force=True)
    dataloader = archive.dataloader_config if archive is not None else req.dataloader_config
    with db.session() as s:
        run_config = dict(jobs_service.get_job(s, job_id).config or {})
    try:
        created = service.create_prediction(
            job_id=job_id, input=service.build_input(run_config, dataloader, inputs),
            webhook=provider_config.webhook_endpoint())
    except ReplicateAPIError as exc:
        # Any error but "uncertain" means Replicate has no prediction for this job (create
        # looks it up by our job id before giving up), so nothing will read the file.
        if uploaded is not None and exc.kind != "uncertain":
            service.delete_file(uploaded.id)
        raise
    pred = created.prediction
    info = replicate_map.info_from_prediction(pred)
    update = replicate_map.update_from_info(
        info, detail=f"prediction {info.provider_job_id} created" + (" (found after a failed attempt)"
                                                                    if created.adopted else ""))
    cancel_now = False
    with db.transaction() as s:
        job = s.get(Job, job_id)
        job.provider_job_id = info.provider_job_id
        job.provider_data = {**(job.provider_data or {}), "version": pred.get("version"),
                             "urls": pred.get("urls") or {}, "create_attempts": created.attempts,
                             "adopted": created.adopted}
        if states.is_terminal(job.status):
            cancel_now = True  # cancelled while we were creating it
        else:
            jobs_service.apply_update_in(s, job, update, source=source)
            if job.status == states.UPLOADING:  # unknown provider status: it exists, so it is queued
                jobs_service.transition(s, job, states.QUEUED, source=source, detail=update.detail)
            job.progress = {**(job.progress or {}), "stage": "submitted", "submit_percent": 100.0}
            from stcloud.providers.poller import next_delay

            job.next_poll_at = utcnow() + timedelta(seconds=next_delay(job.status, bool(provider_config.webhook_endpoint())))
        result = jobs_service.to_dict(job)
    if cancel_now:
        try:
            service.cancel_job(info.provider_job_id)
        except ReplicateAPIError as exc:
            log.warning("job %s was cancelled during submit; cancelling prediction %s failed: %s",
                        job_id, info.provider_job_id, exc)
        raise _Cancelled()
    return result


def _queue_for_workers(job_id: str, archive, source: str) -> dict:
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if states.is_terminal(job.status):
            if archive is not None:
                Path(archive.path).unlink(missing_ok=True)
            raise _Cancelled()
        job.archive_path = str(archive.path) if archive is not None else None
        jobs_service.transition(s, job, states.QUEUED, source=source, detail="waiting for a worker")
        job.progress = {**(job.progress or {}), "stage": "submitted", "submit_percent": 100.0}
        return jobs_service.to_dict(job)


def _as_error(exc: Exception) -> tuple[StcloudError, bool]:
    """(the error to answer with, whether a prediction may exist that we could not see)."""
    from stcloud import packaging

    if isinstance(exc, StcloudError):
        return exc, False
    if isinstance(exc, packaging.PackagingError):
        return _packaging_error(exc), False
    if isinstance(exc, ReplicateAPIError):
        msg = f"Replicate: {exc.message}"
        if exc.kind == "too_large":
            return TooLarge(msg), False
        if exc.kind == "payment":
            return ProviderError(msg, status=402, title="Insufficient credit on Replicate"), False
        if exc.kind == "rate_limited":
            headers = {"Retry-After": str(int(exc.retry_after))} if exc.retry_after else None
            return RateLimited(msg, headers=headers), False
        if exc.kind == "uncertain":
            return ProviderError(msg), True
        return ProviderError(msg), False
    log.exception("submit failed unexpectedly")
    return ProviderError(f"submit failed: {type(exc).__name__}: {exc}", status=500,
                         title="Internal server error"), False


def _fail(job_id: str, exc: Exception, source: str) -> StcloudError:
    """Mark the job failed with a clear reason; returns the error to raise (with the job)."""
    err, uncertain = _as_error(exc)
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

