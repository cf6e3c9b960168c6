"""Crash-safe submits (scheduler job ``reconcile_submits``: at start-up, then every
``STCLOUD_RECONCILE_SECONDS``, default 30).

A submit runs in the web process that took the request; killed mid-way (kill -9, power cut,
OOM) it leaves its job in ``pending``/``uploading`` — and maybe a remote job that trains and
bills, an uploaded archive on the provider, a half-written archive on disk. Each round:

1. **Interrupted submits.** Every submit records who runs it (``provider_data.submit_owner``:
   host, boot id, pid and the process's start time; written with the job row and again with
   every progress write, so a process that carries a submit on owns it). A job caught in ``pending``/``uploading``
   whose owner is dead (same host and boot, no such process any more; or the machine was
   rebooted) is reconciled at once; one whose owner cannot be checked (another host) or that
   has been silent for ``SILENT_AFTER`` is reconciled too. A live submit is never touched.
   The provider is asked for a remote job made under our job id (``find_orphan``):

   * found, ``orphan_policy`` ``adopt`` (default): the job takes it over — tracked by the
     poller, billed at its recorded rate, its reservation counted against the spend limits;
   * found, ``cancel``: the remote job is cancelled (a finished one is recorded as it ended);
   * not found: the job fails with the stage it died in. When it died while uploading or
     creating, the poller keeps looking for a create still in flight for an hour and
     cancels it if it lands (``provider_data.create_uncertain``).

   Each outcome is a status change through ``jobs.service`` with the reason as its event.
2. **Uploaded data.** A job that ends queues the deletion of its uploaded dataset
   (``jobs.upload_cleanup``); here each due row asks the adapter which uploads are left
   (``find_uploads``) and deletes them (``delete_upload``), retrying with back-off. Setting
   ``keep_uploads`` keeps the data of jobs that ran; an upload no remote job ever used
   (``orphan``) is deleted whatever the setting.
3. **Half-written archives.** ``STCLOUD_HOME/uploads`` loses every archive (finished or
   partial) of a job that is no longer being submitted and does not serve it to a worker.
"""
from __future__ import annotations

import logging
import os
import re
import socket
from datetime import datetime, timedelta
from pathlib import Path

from flask import current_app
from sqlalchemy import select

from stcloud import db, scheduler, settings, states
from stcloud.errors import BadRequest
from stcloud.jobs import poller, upload_cleanup
from stcloud.jobs import service as jobs_service
from stcloud.models import Job, UploadCleanup, utcnow
from stcloud.providers import registry
from stcloud.providers.base import CloudJobInfo, CloudTrainerService

log = logging.getLogger(__name__)

SOURCE = "reconciler"
DEFAULT_SECONDS = 30
SILENT_AFTER = timedelta(minutes=15)  # an owner that cannot be checked, or a live one this silent
IN_FLIGHT_STAGES = ("upload", "submit")  # a create may still land after a death in these stages
CLEANUP_BATCH = 50
CLEANUP_MAX_ATTEMPTS = 10
ORPHAN_POLICIES = {"adopt": "adopt the remote job (track and bill it)", "cancel": "cancel the remote job"}
_ARCHIVE_RE = re.compile(r"^(?:\.stcloud-archive-)?(job_[0-9A-Za-z]+)\.zip(?:\..*\.partial)?$")
_UNNAMED_PARTIAL_RE = re.compile(r"^\.stcloud-archive-[^.]+\.partial$")
UNNAMED_PARTIAL_AGE = timedelta(hours=1)  # leftovers no job row explains


def interval_seconds() -> int:
    """Seconds between rounds: ``STCLOUD_RECONCILE_SECONDS`` (tests shorten it), default 30."""
    return scheduler.env_seconds("STCLOUD_RECONCILE_SECONDS", DEFAULT_SECONDS)


# ---- settings ---------------------------------------------------------------------------------

def view() -> dict:
    return {"orphan_policy": settings.get("orphan_policy", "adopt"),
            "keep_uploads": bool(settings.get("keep_uploads", False)),
            "orphan_policies": dict(ORPHAN_POLICIES),
            "reconcile_seconds": interval_seconds()}


def save(body: dict) -> dict:
    """``{orphan_policy?: adopt|cancel, keep_uploads?: bool}``. Raises BadRequest naming the field."""
    if not isinstance(body, dict) or not ({"orphan_policy", "keep_uploads"} & set(body)):
        raise BadRequest('send orphan_policy ("adopt" | "cancel") and/or keep_uploads (true | false)',
                         extra={"field": "orphan_policy"})
    policy, keep = body.get("orphan_policy"), body.get("keep_uploads")
    if "orphan_policy" in body and policy not in ORPHAN_POLICIES:
        raise BadRequest(f"orphan_policy must be one of {', '.join(ORPHAN_POLICIES)}", extra={"field": "orphan_policy"})
    if "keep_uploads" in body and not isinstance(keep, bool):
        raise BadRequest("keep_uploads must be true or false", extra={"field": "keep_uploads"})
    with db.transaction() as s:
        if "orphan_policy" in body:
            settings.put("orphan_policy", policy, s)
        if "keep_uploads" in body:
            settings.put("keep_uploads", keep, s)
    return view()


# ---- who runs a submit ---------------------------------------------------------------------------

def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat field 22): with the
    pid it names one process, even after the pid is reused. None when there is no such process
    (or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:  # the command name (field 2) may hold spaces and parentheses: split after the last ")"
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def submit_owner() -> dict:
    """Who runs this submit; recorded on the job row when it is created."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": pid, "start": _start_ticks(pid)}


def owner_alive(owner) -> bool | None:
    """True: the submitting process still runs; False: it is gone; None: cannot tell (another
    host, or nothing recorded)."""
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return None
    if owner.get("host") != socket.gethostname():
        return None
    boot = _boot_id()
    if owner.get("boot") and boot and owner["boot"] != boot:
        return False  # this machine was restarted since
    start = _start_ticks(owner["pid"])
    if owner.get("start") is not None and Path("/proc/self/stat").exists():
        return start == owner["start"]
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _interrupted(job: Job, now: datetime) -> bool:
    """The submit of ``job`` (pending/uploading) is over: its process is gone — nothing of it
    can write any more, so no grace period is needed —, or it has been silent too long."""
    if owner_alive((job.provider_data or {}).get("submit_owner")) is False:
        return True
    return (job.updated_at or job.created_at) < now - SILENT_AFTER


# ---- one round -----------------------------------------------------------------------------------

def run(now: datetime | None = None) -> dict:
    """One round (the scheduler's ``reconcile_submits``). Returns counts for logs and tests."""
    # each step reads the clock itself (unless told): what the first settled is due for the next
    out = {"reconciled": reconcile_interrupted(now), "uploads_deleted": delete_uploads_due(now),
           "archives_removed": sweep_archives(now)}
    if any(out.values()):
        log.info("reconcile: %s", out)
    return out


def reconcile_interrupted(now: datetime | None = None) -> int:
    """Reconcile every job whose submit died. Returns how many were settled."""
    now = now or utcnow()
    with db.session() as s:
        candidates = [j.id for j in s.scalars(select(Job).where(Job.status.in_((states.PENDING, states.UPLOADING))))
                      if _interrupted(j, now)]
    done = 0
    for job_id in candidates:
        try:
            done += bool(reconcile_job(job_id, now))
        except Exception:  # noqa: BLE001 - one job's fault must not stop the round
            log.exception("could not reconcile interrupted job %s", job_id)
    return done


def _stage(job: Job) -> str:
    return str((job.progress or {}).get("stage") or "scan")


def reconcile_job(job_id: str, now: datetime | None = None) -> bool:
    """Settle one interrupted submit against its provider. Returns True when the job left
    ``pending``/``uploading``."""
    now = now or utcnow()
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None or job.status not in (states.PENDING, states.UPLOADING) or not _interrupted(job, now):
            return False
        provider, remote_id, created_at, stage = job.provider, job.provider_job_id, job.created_at, _stage(job)
    try:
        service = registry.get(provider)
    except Exception as exc:  # noqa: BLE001 - an unknown or broken provider: say so on the job
        return _fail(job_id, f"submit was interrupted while {_doing(stage)}; provider {provider} is not "
                             f"available to check for a remote job ({exc})", uncertain=False, now=now)
    label = service.label
    reason = service.not_ready_reason()
    if reason:
        return _fail(job_id, f"submit was interrupted while {_doing(stage)}; could not check {label} for a job "
                             f"it may have created ({reason}); stcloud keeps looking and cancels it if it appears",
                     uncertain=True, now=now)
    try:
        info = service.get_job_status(remote_id) if remote_id else service.find_orphan(job_id, created_at)
    except Exception as exc:  # noqa: BLE001 - provider down: fail now, the poller keeps looking
        return _fail(job_id, f"submit was interrupted while {_doing(stage)}; {label} could not be asked for a job "
                             f"it may have created ({exc}); stcloud keeps looking and cancels it if it appears",
                     uncertain=True, now=now)
    if info is None:
        may_land = stage in IN_FLIGHT_STAGES
        return _fail(job_id, f"submit was interrupted while {_doing(stage)}; {label} has no job for it"
                             + ("; its uploaded data is deleted" if stage != "package" else "")
                             + "; submit again", uncertain=may_land, now=now, orphan=True)
    if settings.get("orphan_policy", "adopt") == "cancel":
        return _cancel_remote(job_id, service, info, now)
    return _adopt(job_id, service, info, now)


def _doing(stage: str) -> str:
    return {"scan": "scanning the datasets", "package": "packaging the datasets",
            "upload": "uploading the dataset", "submit": "creating the remote job"}.get(stage, f"at stage {stage}")


def _fail(job_id: str, message: str, *, uncertain: bool, now: datetime, orphan: bool = False) -> bool:
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None or states.is_terminal(job.status):
            return False
        jobs_service.transition(s, job, states.FAILED, source=SOURCE, detail=message[:500])
        job.error = message
        job.progress = {**(job.progress or {}), "stage": "failed"}
        if uncertain and not job.provider_job_id:
            job.provider_data = {**(job.provider_data or {}), "create_uncertain": True}
            job.next_poll_at = now  # the poller's orphan search (jobs.poller) takes over
        if orphan:
            upload_cleanup.queue(s, job, reason=upload_cleanup.ORPHAN)
    log.warning("job %s: %s", job_id, message)
    return True


def _adopt(job_id: str, service: CloudTrainerService, info: CloudJobInfo, now: datetime) -> bool:
    detail = (f"adopted {service.label} job {info.provider_job_id} created by an interrupted submit "
              f"(orphan_policy adopt)")
    update = jobs_service.update_from_info(info, provider=service.provider_name, detail=detail)
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None or job.status not in (states.PENDING, states.UPLOADING):
            return False
        jobs_service.apply_update_in(s, job, update, source=SOURCE)
        if job.status in (states.PENDING, states.UPLOADING):  # a status we do not map: it exists, so queued
            jobs_service.transition(s, job, states.QUEUED, source=SOURCE, detail=detail)
        job.provider_data = {**(job.provider_data or {}), "adopted_after_crash": True}
        job.progress = {**(job.progress or {}), "stage": "submitted", "submit_percent": 100.0}
        job.poll_failures = 0
        job.next_poll_at = poller.next_poll_at(service, job.status, now)
    log.warning("job %s: %s", job_id, detail)
    return True


def _cancel_remote(job_id: str, service: CloudTrainerService, info: CloudJobInfo, now: datetime) -> bool:
    remote = info.provider_job_id
    remote_done = info.status is not None and info.status.value in states.TERMINAL
    if remote_done:  # nothing left to cancel: record how it ended
        return _adopt(job_id, service, info, now)
    try:
        service.cancel_job(remote)
    except Exception as exc:  # noqa: BLE001 - the poller's orphan search cancels it later
        return _fail(job_id, f"submit was interrupted; {service.label} job {remote} was created for it and "
                             f"could not be cancelled yet ({exc}); stcloud keeps trying", uncertain=True, now=now)
    try:
        final = service.get_job_status(remote)  # the seconds it billed before the cancel
    except Exception as exc:  # noqa: BLE001 - cancelled all the same; bill what was seen
        log.warning("job %s: could not read %s job %s after cancelling it: %s", job_id, service.label, remote, exc)
        final = info
    detail = (f"cancelled {service.label} job {remote} created by an interrupted submit "
              f"(orphan_policy cancel)")
    update = jobs_service.update_from_info(final, provider=service.provider_name, detail=detail)
    update = jobs_service.JobUpdate(
        status=states.CANCELLED, detail=detail, logs_full=update.logs_full, billed_seconds=update.billed_seconds,
        cost_usd=update.cost_usd, started_at=update.started_at, completed_at=update.completed_at,
        provider_job_id=remote, provider_data=update.provider_data)
    with db.transaction() as s:
        job = s.get(Job, job_id)
        if job is None or states.is_terminal(job.status):
            return False
        jobs_service.apply_update_in(s, job, update, source=SOURCE)
        job.progress = {**(job.progress or {}), "stage": "cancelled"}
        job.next_poll_at = None
    log.warning("job %s: %s", job_id, detail)
    return True


# ---- uploaded data -------------------------------------------------------------------------------

def delete_uploads_due(now: datetime | None = None, limit: int = CLEANUP_BATCH) -> int:
    """Delete the provider-side data of ended jobs (``upload_cleanups`` rows that are due).
    Returns how many files were deleted."""
    now = now or utcnow()
    with db.session() as s:
        due = list(s.scalars(select(UploadCleanup.job_id).where(UploadCleanup.done_at.is_(None),
                                                                  UploadCleanup.due_at <= now)
                             .order_by(UploadCleanup.due_at).limit(limit)))
    if not due:
        return 0
    keep = bool(settings.get("keep_uploads", False))
    deleted = 0
    for job_id in due:
        try:
            deleted += _clean_one(job_id, keep, now)
        except Exception:  # noqa: BLE001 - one row's fault must not stop the round
            log.exception("upload cleanup of job %s failed", job_id)
    return deleted


def _finish(job_id: str, result: str, now: datetime, *, note: str | None = None) -> None:
    with db.transaction() as s:
        row = s.get(UploadCleanup, job_id)
        if row is not None:
            row.done_at, row.result = now, result[:1000]
        job = s.get(Job, job_id) if note else None
        if job is not None:
            jobs_service.append_log(s, job, f"[stcloud] {note}\n")
            job.provider_data = {**(job.provider_data or {}), "uploads_cleanup": result[:200]}


def _clean_one(job_id: str, keep: bool, now: datetime) -> int:
    with db.session() as s:
        row = s.get(UploadCleanup, job_id)
        job = s.get(Job, job_id)
        provider, reason = row.provider, row.reason
        provider_data = dict((job.provider_data or {}) if job is not None else {})
        since = job.created_at if job is not None else None
    if reason == upload_cleanup.ENDED and keep:
        _finish(job_id, "kept (keep_uploads)", now)
        return 0
    try:
        service = registry.get(provider)
    except Exception as exc:  # noqa: BLE001 - the provider is gone: nothing can be deleted
        _finish(job_id, f"provider {provider} is not available: {exc}", now)
        return 0
    if not service.uploads_data:
        _finish(job_id, "nothing uploaded (the provider takes no uploads)", now)
        return 0
    try:
        if service.not_ready_reason():
            raise RuntimeError(service.not_ready_reason())
        ids = service.find_uploads(job_id, provider_data, since)
        gone = [i for i in ids if service.delete_upload(i)]
    except Exception as exc:  # noqa: BLE001 - retry with back-off, then give up (uploads expire)
        _retry(job_id, service.label, exc, now)
        return 0
    if not ids:
        _finish(job_id, "nothing left on the provider", now)
    else:
        _finish(job_id, f"deleted {', '.join(ids)}", now,
                note=f"deleted the uploaded dataset from {service.label} ({', '.join(ids)})")
    return len(gone)


def _retry(job_id: str, label: str, exc: Exception, now: datetime) -> None:
    with db.transaction() as s:
        row = s.get(UploadCleanup, job_id)
        if row is None:
            return
        row.attempts = (row.attempts or 0) + 1
        row.last_error = str(exc)[:1000]
        if row.attempts >= CLEANUP_MAX_ATTEMPTS:
            row.done_at, row.result = now, f"gave up after {row.attempts} attempts: {exc}"[:1000]
            job = s.get(Job, job_id)
            if job is not None:
                jobs_service.append_log(s, job, f"[stcloud] could not delete the uploaded dataset from {label}: "
                                                 f"{exc}\n")
        else:
            row.due_at = now + timedelta(seconds=poller.error_delay(row.attempts))
    log.warning("could not delete the uploads of job %s from %s: %s", job_id, label, exc)


# ---- archives on disk ----------------------------------------------------------------------------

def uploads_dir() -> Path:
    return Path(current_app.config["STCLOUD_HOME"]) / "uploads"


def sweep_archives(now: datetime | None = None) -> int:
    """Remove archives (finished or half-written) in ``STCLOUD_HOME/uploads`` that belong to no
    live submit and serve no worker. Returns how many files were removed."""
    now = now or utcnow()
    folder = uploads_dir()
    try:
        entries = [p for p in folder.iterdir() if p.is_file()]
    except OSError:
        return 0
    by_job: dict[str, list[Path]] = {}
    removed = 0
    for path in entries:
        m = _ARCHIVE_RE.match(path.name)
        if m:
            by_job.setdefault(m.group(1), []).append(path)
        elif _UNNAMED_PARTIAL_RE.match(path.name) and _older_than(path, now - UNNAMED_PARTIAL_AGE):
            removed += _unlink(path)
    if not by_job:
        return removed
    with db.session() as s:
        jobs = {j.id: j for j in s.scalars(select(Job).where(Job.id.in_(list(by_job))))}
        keep: set[Path] = set()
        for job_id, paths in by_job.items():
            job = jobs.get(job_id)
            if job is None:  # an exact re-run packages before its row exists: only old ones go
                keep.update(p for p in paths if not _older_than(p, now - UNNAMED_PARTIAL_AGE))
                continue
            if job.status in (states.PENDING, states.UPLOADING) and not _interrupted(job, now):
                keep.update(paths)  # a live submit is writing or uploading it
            elif job.archive_path:
                keep.add(Path(job.archive_path))  # served to whoever runs the job
    for paths in by_job.values():
        for path in paths:
            if path not in keep:
                removed += _unlink(path)
    return removed


def _older_than(path: Path, when: datetime) -> bool:
    try:
        return path.stat().st_mtime < when.timestamp()
    except OSError:
        return False


def _unlink(path: Path) -> int:
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
        return 0
    log.info("removed leftover archive %s", path)
    return 1
