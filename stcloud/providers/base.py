"""The provider seam (the seeds' ``CloudTrainerService``).

Adapters import no Flask and no database: they get their settings in the constructor (from a
factory registered under the ``stcloud.providers`` entry-point group, see ``registry``) and
return frozen dataclasses. The seeds' interface is async; ours is synchronous because every
caller (Flask request, scheduler job, worker thread) is synchronous — one fewer event loop.

The seeds' nine members (``provider_name``, ``supports_cost_tracking``, ``supports_live_logs``,
``validate_credentials``, ``list_jobs``, ``run_job``, ``cancel_job``, ``get_job_logs``,
``get_job_status``) are abstract. Everything added since has a default, so a provider written
against those nine keeps working: it is polled every ``DEFAULT_POLL_SECONDS``, consent applies
to its uploads, it has no hardware profiles, no settings and no webhooks.
"""
from __future__ import annotations

import abc
import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

DEFAULT_POLL_SECONDS = 15.0
AVAILABLE, COMING_SOON = "available", "coming soon"
SHARED_POOL, EMBEDDED_POOL = "shared", "embedded"  # see CloudTrainerService.worker_pool


class CloudJobStatus(str, enum.Enum):
    PENDING = "pending"
    UPLOADING = "uploading"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# app.extensions key under which the host app provides ``() -> ((job_id, submission) -> str)``:
# the minter of per-job agent credentials, for adapters that ``runs_own_agent``.
JOB_TOKEN_MINTER = "stcloud.job_token_minter"


@dataclass(frozen=True)
class CloudJobInfo:
    provider_job_id: str
    status: CloudJobStatus | None  # None: the provider said something we do not map
    raw_status: str | None = None
    logs: str | None = None  # the provider's whole log so far, when it has one
    output: Any = None  # the provider's raw output
    error: str | None = None
    billed_seconds: float | None = None  # -> cost with the rate recorded on the job
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    extra: dict = field(default_factory=dict)  # kept in job.provider_data
    outputs: list | None = None  # ``[{name, url, destination}]``: what the job page lists
    cost_usd: float | None = None  # the provider's own bill, when it reports money not time
    progress: dict | None = None  # ``{step, total_steps, loss, stage}`` beyond what logs say


@dataclass(frozen=True)
class RunRequest:
    """What a provider needs to start a job. ``job_id`` is stcloud's id: adapters tag the
    remote job with it (to find it again) and may derive per-job credentials from it."""

    job_id: str
    name: str
    config: dict
    dataloader_config: list
    hardware: str | None = None
    archive_path: str | None = None  # packaged dataset (zip) or None
    webhook_url: str | None = None
    inputs: dict = field(default_factory=dict)  # provider-specific extra inputs (publishing, hub id)
    archive_sha256: str | None = None
    requirements: dict | None = None
    options: dict = field(default_factory=dict)  # the job's own settings for this provider (validate_options)
    # Called with (bytes done, bytes total) while the archive uploads.
    progress: Callable[[int, int], None] | None = field(default=None, compare=False)
    # True once the user cancelled the job: stop before creating anything remote.
    cancelled: Callable[[], bool] | None = field(default=None, compare=False)


class ProviderFailure(Exception):
    """A provider call failed. Adapters raise this (or a subclass) with a message meant for
    people; stcloud answers with ``http_status`` (502 unless the provider's answer says more:
    402 credit, 413 too large, 429 rate limited with ``retry_after``). ``uncertain``: the
    remote job may exist although the call failed (see ``find_orphan``)."""

    http_status = 502

    def __init__(self, message: str, *, http_status: int | None = None, retry_after: float | None = None,
                 uncertain: bool = False, title: str | None = None):
        super().__init__(message)
        self.message = message
        if http_status is not None:
            self.http_status = http_status
        self.retry_after = retry_after
        self.uncertain = uncertain
        self.title = title

    def __str__(self) -> str:
        return self.message


class SecretUnavailable(Exception):
    """A webhook signing secret cannot be fetched right now (no token, provider down, bad
    answer); the receiver answers 503 so the provider redelivers later."""

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class HardwareProfile:
    """One machine a provider runs on, with the built-in (dated in ``note``) price of the
    whole machine. Rates edited by the user win (``costs.rates``)."""

    name: str
    label: str
    usd_per_hour: float
    gpu_count: int = 1
    vram_gb: float | None = None
    note: str | None = None


@dataclass(frozen=True)
class SettingField:
    """A setting an adapter declares; the Providers page renders it and
    ``PUT /api/cloud/providers/<name>`` validates against it.

    kind: ``string | text | secret | integer | number | boolean | choice | url | list`` (of
    strings; a form sends one per line). A ``secret`` is
    write-only: stored in ``secrets.json``, never shown again."""

    name: str
    label: str
    kind: str = "string"
    default: Any = None
    required: bool = False
    help: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    def parse(self, value: Any) -> Any:
        """The clean value (None clears it). Raises ValueError saying what is wrong."""
        if value is None or (value == "" and self.kind != "text"):
            if self.required:
                raise ValueError(f"{self.name} is required")
            return None
        kind = self.kind
        if kind == "list":
            if isinstance(value, str):
                value = [p.strip() for line in value.splitlines() for p in line.split(",") if p.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{self.name} must be a list of strings")
            return [v.strip() for v in value]
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return value.lower() in ("1", "true", "yes", "on")
            raise ValueError(f"{self.name} must be true or false")
        if kind in ("integer", "number"):
            if isinstance(value, bool):
                raise ValueError(f"{self.name} must be a number")
            try:
                num = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{self.name} must be a number, got {value!r}") from None
            if not math.isfinite(num):
                raise ValueError(f"{self.name} must be a finite number")
            if kind == "integer":
                if num != int(num):
                    raise ValueError(f"{self.name} must be a whole number")
                num = int(num)
            if self.minimum is not None and num < self.minimum:
                raise ValueError(f"{self.name} must be >= {self.minimum:g}")
            if self.maximum is not None and num > self.maximum:
                raise ValueError(f"{self.name} must be <= {self.maximum:g}")
            return num
        if not isinstance(value, str):
            raise ValueError(f"{self.name} must be a string")
        value = value.strip() if kind != "text" else value
        if len(value) > 4000:
            raise ValueError(f"{self.name} is too long (at most 4000 characters)")
        if kind == "choice" and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}")
        if kind == "url" and not value.startswith(("http://", "https://")):
            raise ValueError(f"{self.name} must be an http(s) URL")
        return value

    def to_dict(self) -> dict:
        return {"name": self.name, "label": self.label, "kind": self.kind, "default": self.default,
                "required": self.required, "help": self.help, "choices": list(self.choices),
                "minimum": self.minimum, "maximum": self.maximum}


@dataclass(frozen=True)
class PlacementOffer:
    """What ``placement_offer`` answers: free capacity now or within ``wait_seconds``."""

    available: bool
    wait_seconds: float = 0.0
    note: str = ""


class CloudTrainerService(abc.ABC):
    # ---- the seeds' nine members ---------------------------------------------------------

    @property
    @abc.abstractmethod
    def provider_name(self) -> str: ...

    @property
    @abc.abstractmethod
    def supports_cost_tracking(self) -> bool:
        """True: the provider reports what a job cost (``billed_seconds`` or ``cost_usd``).
        False: stcloud prices the job's run time at its recorded rate when it ends."""

    @property
    @abc.abstractmethod
    def supports_live_logs(self) -> bool: ...

    @abc.abstractmethod
    def validate_credentials(self) -> dict[str, Any]:
        """Check the credentials; return account info. Raises ProviderFailure."""

    @abc.abstractmethod
    def list_jobs(self, limit: int = 50) -> list[CloudJobInfo]: ...

    @abc.abstractmethod
    def run_job(self, request: RunRequest) -> CloudJobInfo:
        """Start a job: the provider's whole launch (upload of ``archive_path`` where the
        provider takes one, a create that never makes a second remote job, cleanup of what
        it made when it fails). Raises ProviderFailure with a clear message."""

    @abc.abstractmethod
    def cancel_job(self, provider_job_id: str) -> bool: ...

    @abc.abstractmethod
    def get_job_logs(self, provider_job_id: str) -> str: ...

    @abc.abstractmethod
    def get_job_status(self, provider_job_id: str) -> CloudJobInfo: ...

    # ---- added later: every member has a default -----------------------------------------

    @property
    def label(self) -> str:
        return self.provider_name.replace("_", " ").title()

    @property
    def description(self) -> str:
        return ""

    @property
    def status(self) -> str:
        """``available``, or ``coming soon`` (listed, refused at submit)."""
        return AVAILABLE

    @property
    def uploads_data(self) -> bool:
        """The packaged dataset leaves this machine: consent applies (and ``max_upload_bytes``).
        False: stcloud keeps the archive and serves it to whoever runs the job."""
        return True

    @property
    def max_upload_bytes(self) -> int | None:
        """The largest archive the provider accepts (refused before packaging), or None."""
        return None

    @property
    def dataset_url_input(self) -> str | None:
        """The input that may carry the dataset as a URL instead of an upload (``run_job``
        then uploads nothing): larger datasets go by presigned link (jobs/dataset_url.py).
        None: the provider takes uploads only."""
        return None

    @property
    def supports_webhooks(self) -> bool:
        """The provider posts job events to ``POST /api/webhooks/<provider name>``, signed with
        Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) under
        ``webhook_secret()``; ``parse_webhook`` reads them (``stcloud/webhooks/generic.py``)."""
        return False

    @property
    def supports_cancel(self) -> bool:
        return True

    @property
    def supports_checkpoint_on_cancel(self) -> bool:
        """A cancel asks the trainer to save a checkpoint first."""
        return False

    @property
    def runs_own_agent(self) -> bool:
        """True: the provider's batch system starts stcloud's worker agent for each job (one-job
        mode, per-job credential ``stj_…``). The agent reports logs, progress and the end;
        ``stcloud.workers.agent_jobs`` reconciles that with ``get_job_status`` every few seconds
        (instead of the poller), reading these ``CloudJobInfo.extra`` keys: ``reason`` (why it
        waits), ``restarts`` (the batch system requeued it), ``nodes``, ``retryable`` (ended by
        the infrastructure: submit again and resume) and ``rate_usd_per_second``. ``run_job``
        reads ``RunRequest.inputs["agent_submission"]`` (1, 2, … for resubmissions)."""
        return False

    @property
    def worker_pool(self) -> str | None:
        """Jobs wait in stcloud's queue for a self-hosted worker to claim them: ``shared``
        (any worker) or ``embedded`` (only the embedded worker of ``stcloud serve``). None:
        no worker claims them (a provider's own agent may, by job id)."""
        return None

    @property
    def claimed_by_workers(self) -> bool:
        return self.worker_pool is not None

    @property
    def accepts_requirements(self) -> bool:
        """Jobs may carry worker ``requirements`` (labels, min_gpus, min_vram_gb)."""
        return False

    def poll_interval(self, status: str) -> float | None:
        """Seconds until an active job (``queued``/``running``) is polled again; None: never
        polled (the job reports by itself)."""
        return DEFAULT_POLL_SECONDS

    def hardware_profiles(self) -> list[HardwareProfile]:
        return []

    @property
    def default_hardware(self) -> str | None:
        profiles = self.hardware_profiles()
        return profiles[0].name if profiles else None

    def profile(self, name: str) -> HardwareProfile | None:
        """The profile called ``name``: one of ``hardware_profiles()``, or one the adapter
        prices without listing it (Slurm: a job's own GPU count). None: unknown."""
        return next((p for p in self.hardware_profiles() if p.name == name), None)

    def hardware_for_options(self, hardware: str | None, options: dict) -> str | None:
        """The profile that prices a job submitted with ``hardware`` and the per-job settings
        ``options`` (``validate_options``' result), so its estimate, reservation and limits
        see what the job will really use. By default the profile the body named."""
        return hardware

    def settings_fields(self) -> tuple[SettingField, ...]:
        """Settings the generic panel shows; values reach the adapter through its factory."""
        return ()

    def validate_options(self, options: dict) -> dict:
        """Per-job settings sent in the submit body under the provider's name (e.g.
        ``{"slurm": {"partition": "gpu"}}``) -> the clean dict ``run_job`` gets in
        ``request.options``. Raises ValueError saying what is wrong (answered as 400)."""
        if options:
            raise ValueError(f"{self.provider_name} takes no per-job settings")
        return {}

    def not_ready_reason(self) -> str | None:
        """Why jobs cannot be submitted now (e.g. no token), or None."""
        return None

    @property
    def template(self) -> str | None:
        """The provider's own Providers-page template (shown in its tab), if it ships one."""
        return None

    def webhook_secret(self) -> str:
        """The Standard Webhooks signing secret (``whsec_…``) the provider signs events with.
        Raises SecretUnavailable (the receiver answers 503: the provider redelivers)."""
        raise SecretUnavailable(f"{self.provider_name} has no webhook signing secret")

    def parse_webhook(self, payload: dict) -> CloudJobInfo:
        """An authenticated webhook body -> the job's state. Only with ``supports_webhooks``."""
        raise NotImplementedError(f"{self.provider_name} does not take webhooks")

    def webhook_job_id(self, payload: dict) -> str | None:
        """stcloud's job id carried in a webhook body (to bind an event that arrives before
        ``run_job`` returned), or None."""
        return None

    def download_headers(self, url: str) -> dict:
        """Headers to download one of this provider's output URLs (e.g. its auth), or {}."""
        return {}

    def find_orphan(self, job_id: str, since: datetime | None) -> CloudJobInfo | None:
        """The remote job made for ``job_id`` (created no earlier than about ``since``), if
        any: after an ``uncertain`` run_job failure, and by the reconciler for a submit that
        died with its process (``jobs.reconcile``). Default: the provider cannot look."""
        return None

    def find_uploads(self, job_id: str, provider_data: dict, since: datetime | None) -> list[str]:
        """Ids of the data uploaded to the provider for ``job_id`` that may still be there:
        from ``provider_data`` when the launch recorded them, else looked up by our job id
        (a submit that died mid-upload). Raises ProviderFailure. Default: none."""
        return []

    def delete_upload(self, upload_id: str) -> bool:
        """Delete one uploaded file from the provider; False when it was already gone.
        Raises ProviderFailure. Default: nothing to delete."""
        return False

    def placement_offer(self, requirements: dict | None) -> PlacementOffer | None:
        """For ``provider: "auto"``: whether this provider has idle capacity of its own for a
        job with ``requirements`` (e.g. a Slurm partition with idle nodes), and how soon.
        None (the default): no such capacity; a cloud provider is placed by its estimate."""
        return None

    def capabilities(self) -> dict:
        """The public description of this provider (``GET /api/cloud/providers``)."""
        return {
            "name": self.provider_name, "label": self.label, "description": self.description,
            "status": self.status, "supports_cost_tracking": bool(self.supports_cost_tracking),
            "supports_live_logs": bool(self.supports_live_logs), "uploads_data": self.uploads_data,
            "max_upload_bytes": self.max_upload_bytes, "supports_webhooks": self.supports_webhooks,
            "supports_cancel": self.supports_cancel,
            "supports_checkpoint_on_cancel": self.supports_checkpoint_on_cancel,
            "runs_own_agent": self.runs_own_agent,
            "worker_pool": self.worker_pool, "accepts_requirements": self.accepts_requirements,
            "poll_interval_seconds": {s: self.poll_interval(s) for s in ("queued", "running")},
            "hardware_profiles": [
                {"name": p.name, "label": p.label, "usd_per_hour": p.usd_per_hour, "gpu_count": p.gpu_count,
                 "vram_gb": p.vram_gb, "note": p.note} for p in self.hardware_profiles()],
            "default_hardware": self.default_hardware,
            "settings": [f.to_dict() for f in self.settings_fields()],
            "configured": self.not_ready_reason() is None, "note": self.not_ready_reason(),
        }
