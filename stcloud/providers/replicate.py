"""Replicate adapter on the official ``replicate`` client. No Flask, no database: the factory
(``providers/replicate_factory.py``) hands it the token, base URL, model, version pin and the
webhook endpoint.

``run_job`` is Replicate's whole launch: upload the packaged dataset (``POST /v1/files``),
create the prediction with the guarded retry below (never two predictions), and delete the
uploaded file again when no prediction will read it.

Traps this module deals with (replicate-python 1.0.7):

* The client never retries POST (create prediction, files, cancel). ``create_prediction``
  adds a bounded retry on 429 / 5xx / connection errors, and before every retry that might
  follow a request the server *did* process (5xx, dropped connection, timeout) it looks for a
  prediction carrying our job id in its input (``input["stcloud_job_id"]``) and adopts it —
  so a retry never creates a second prediction.
* ``ReplicateError`` drops the response headers, so ``Retry-After`` is read by an httpx
  response hook.
* The client's own transport retries GETs on 429/503/504 and sleeps for ``Retry-After``
  seconds with no upper bound (a poller thread could sleep for an hour). Our inner transport
  caps the header it sees and keeps the original in ``x-stcloud-retry-after``.
* ``files.create`` passes ``timeout=None`` (no timeout at all); the inner transport fills in
  per-operation connect/read/write timeouts, so a stalled upload fails instead of hanging.
* ``Prediction.status`` is a closed Literal: an ``aborted`` prediction fails to parse. Reads
  fall back to the raw JSON through the client's own request method (same base URL and auth).
"""
from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import replicate
from replicate.exceptions import ReplicateError
from replicate.version import Versions

from stcloud import net
from stcloud.providers.base import (
    CloudJobInfo,
    CloudTrainerService,
    HardwareProfile,
    ProviderFailure,
    RunRequest,
)
from stcloud.providers.replicate_map import info_from_prediction
from stcloud.providers.replicate_webhook import fetch_secret
from stcloud.timeutil import parse_iso

try:  # replicate's resources are pydantic v1 models
    from pydantic.v1 import ValidationError as _PydanticValidationError
except ImportError:  # pragma: no cover - pydantic 1 installed
    from pydantic import ValidationError as _PydanticValidationError  # type: ignore

log = logging.getLogger(__name__)

DEFAULT_MODEL = "simpletuner/advanced-trainer"
DEFAULT_BASE_URL = "https://api.replicate.com"
DEFAULT_HARDWARE = "gpu-l40s"
MAX_UPLOAD_BYTES = 100 * 1024 * 1024  # Replicate's file API limit
WEBHOOK_EVENTS = ("start", "output", "logs", "completed")
JOB_ID_INPUT = "stcloud_job_id"
TOKEN_MISSING = "REPLICATE_API_TOKEN not set"

TOKEN_HELP = (f"{TOKEN_MISSING}: export REPLICATE_API_TOKEN=r8_... before starting stcloud, "
              "or save a token on the Providers page")
# (seconds until the next poll) by status: (without webhooks, with webhooks). With webhooks
# the poll is a reconciliation that catches missed deliveries.
POLL_INTERVALS = {"queued": (5, 15), "running": (15, 60), "uploading": (5, 15)}

# Hardware profiles with the seeds' prices (L40S ~$3.50/h, A100 80GB ~$5.00/h); a rate is
# for the whole machine. Replicate runs a model on the hardware the model is configured
# for; the profile recorded on a job is what its cost is computed with.
HARDWARE = (
    HardwareProfile("gpu-l40s", "Nvidia L40S (48 GB)", 3.50, 1, 48, "seeds: L40S ~$3.50/h"),
    HardwareProfile("gpu-a100-large", "Nvidia A100 (80 GB)", 5.00, 1, 80, "seeds: A100 80GB ~$5.00/h"),
    HardwareProfile("gpu-l40s-2x", "2x Nvidia L40S", 7.00, 2, 96, "whole machine: 2 GPUs"),
    HardwareProfile("gpu-a100-large-2x", "2x Nvidia A100 (80GB)", 10.00, 2, 160, "whole machine: 2 GPUs"),
)
_HTTP_STATUS = {"payment": 402, "too_large": 413, "rate_limited": 429}
_TITLES = {"payment": "Insufficient credit on Replicate"}


class ReplicateAPIError(ProviderFailure):
    """A Replicate call failed. ``kind``: auth, payment, too_large, rate_limited, server,
    connection, timeout, not_found, invalid, uncertain, other. The message is meant for
    people and never contains the token."""

    def __init__(self, message: str, *, kind: str = "other", status: int | None = None,
                 retry_after: float | None = None, detail: str | None = None):
        super().__init__(message, http_status=_HTTP_STATUS.get(kind, 502), retry_after=retry_after,
                         uncertain=kind == "uncertain", title=_TITLES.get(kind))
        self.kind = kind
        self.status = status
        self.detail = detail

    @property
    def maybe_processed(self) -> bool:
        """True when the server may have acted on the request before failing."""
        return self.kind in ("server", "connection", "timeout", "unparsed")

    @property
    def retryable(self) -> bool:
        return self.kind in ("rate_limited", "server", "connection", "timeout")


@dataclass(frozen=True)
class UploadedFile:
    id: str
    url: str  # urls["get"]: what the trainer's ``images`` input takes
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class CreateResult:
    prediction: dict
    attempts: int
    adopted: bool  # found by our job id after a failed attempt, not from a 201


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class _Transport(httpx.HTTPTransport):
    """Inner transport (the client wraps it in its RetryTransport): default timeouts where
    the client passed none, and a capped ``Retry-After`` so the client's GET retries stay
    short; the original value is kept in ``x-stcloud-retry-after``."""

    def __init__(self, *, timeouts: dict, retry_after_cap: float, proxy: str | None = None):
        super().__init__(proxy=proxy)
        self._timeouts = timeouts
        self._cap = retry_after_cap

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        ext = request.extensions.get("timeout")
        if isinstance(ext, dict):
            request.extensions["timeout"] = {k: (self._timeouts.get(k) if v is None else v) for k, v in ext.items()}
        response = net.send(super().handle_request, request)
        if response.status_code in (429, 503, 504):
            original = response.headers.get("Retry-After")
            seconds = _parse_retry_after(original)
            if original is not None:
                response.headers["x-stcloud-retry-after"] = original
            response.headers["Retry-After"] = str(int(min(seconds if seconds is not None else 1, self._cap)))
        return response


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _ProgressFile(io.FileIO):
    """A real file (so httpx sizes it with fstat and streams it in chunks) that reports
    how many bytes were read."""

    def __init__(self, path: str, callback: Callable[[int, int], None] | None):
        super().__init__(path, "rb")
        self._callback = callback
        self._total = os.fstat(self.fileno()).st_size
        self._done = 0

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        data = super().read(size)
        if data and self._callback is not None:
            self._done += len(data)
            try:
                self._callback(min(self._done, self._total), self._total)
            except Exception:  # noqa: BLE001 - progress must never break an upload
                log.debug("upload progress callback failed", exc_info=True)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:  # type: ignore[override]
        result = super().seek(pos, whence)
        if whence == 0 and pos == 0:
            self._done = 0
        return result


class ReplicateService(CloudTrainerService):
    """The Replicate provider. Every method raises ``ReplicateAPIError`` on failure."""

    def __init__(self, token: str | None, base_url: str | None = None, model: str | None = None,
                 version: str | None = None, *, timeout: float = 30.0, connect_timeout: float = 5.0,
                 upload_timeout: float = 120.0, retry_after_cap: float = 2.0,
                 create_attempts: int = 4, backoff: float = 1.0, max_retry_wait: float = 30.0,
                 webhook_url: str | None = None, max_upload_bytes: int = MAX_UPLOAD_BYTES,
                 default_hardware: str | None = None, sleep: Callable[[float], None] = time.sleep,
                 proxy: str | None = None):
        self._token = token or None
        self._proxy = proxy or None  # stcloud.net decides, per base URL
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.model = model or DEFAULT_MODEL
        self.version = version or None
        self.webhook_url = webhook_url or None
        self._max_upload_bytes = int(max_upload_bytes)
        self._default_hardware = default_hardware or DEFAULT_HARDWARE
        self.create_attempts = max(1, int(create_attempts))
        self.backoff = max(0.0, float(backoff))
        self.max_retry_wait = float(max_retry_wait)
        self._sleep = sleep
        self._local = threading.local()
        self._timeouts = (timeout, connect_timeout, upload_timeout, retry_after_cap)
        self._client: replicate.Client | None = None

    @property
    def client(self) -> replicate.Client:
        """The official client, built on first use. Raises ReplicateAPIError (no token)."""
        if self._token is None:
            raise ReplicateAPIError(TOKEN_MISSING, kind="auth")
        if self._client is None:
            timeout, connect_timeout, upload_timeout, retry_after_cap = self._timeouts
            transport = _Transport(
                timeouts={"connect": connect_timeout, "read": upload_timeout, "write": upload_timeout,
                          "pool": connect_timeout},
                retry_after_cap=retry_after_cap, proxy=self._proxy)
            self._client = replicate.Client(
                api_token=self._token, base_url=self.base_url,
                timeout=httpx.Timeout(timeout, connect=connect_timeout),
                transport=transport, event_hooks={"response": [self._on_response]})
        return self._client

    # ---- CloudTrainerService -------------------------------------------------------------

    @property
    def provider_name(self) -> str:
        return "replicate"

    @property
    def supports_cost_tracking(self) -> bool:
        return True

    @property
    def supports_live_logs(self) -> bool:
        return True

    @property
    def label(self) -> str:
        return "Replicate"

    @property
    def description(self) -> str:
        return f"Runs {self.model} on Replicate's cloud GPUs, billed per second of training."

    @property
    def max_upload_bytes(self) -> int | None:
        return self._max_upload_bytes

    @property
    def dataset_url_input(self) -> str | None:
        return "images"  # run_job uploads nothing when the input already has it

    @property
    def supports_webhooks(self) -> bool:
        return True

    def poll_interval(self, status: str) -> float | None:
        fast, slow = POLL_INTERVALS.get(status, (15, 60))
        return slow if self.webhook_url else fast

    def hardware_profiles(self) -> list[HardwareProfile]:
        return list(HARDWARE)

    @property
    def default_hardware(self) -> str | None:
        return self._default_hardware

    def not_ready_reason(self) -> str | None:
        return None if self._token else TOKEN_HELP

    def parse_webhook(self, payload: dict) -> CloudJobInfo:
        return info_from_prediction(payload)

    def webhook_job_id(self, payload: dict) -> str | None:
        """Our job id, as the launch put it in the prediction's input."""
        inp = payload.get("input")
        our_id = inp.get(JOB_ID_INPUT) if isinstance(inp, dict) else None
        return our_id if isinstance(our_id, str) and our_id else None

    def download_headers(self, url: str) -> dict:
        """Replicate's own output URLs need the token; others (replicate.delivery) do not."""
        if self._token and url.startswith(self.base_url + "/"):
            return {"Authorization": f"Bearer {self._token}"}
        return {}

    def webhook_secret(self) -> str:
        """The signing secret (``GET /v1/webhooks/default/secret``). Raises SecretUnavailable."""
        return fetch_secret(self._token, self.base_url, proxy=self._proxy)

    def find_orphan(self, job_id: str, since: datetime | None) -> CloudJobInfo | None:
        pred = self.find_prediction_for_job(job_id, since=since)
        return info_from_prediction(pred) if pred is not None else None

    def find_uploads(self, job_id: str, provider_data: dict, since: datetime | None) -> list[str]:
        """The archive's file id as the launch recorded it, else the files whose metadata
        carries our job id (``POST /v1/files`` tags them; ``GET /v1/files``, newest first)."""
        known = (provider_data or {}).get("file_id")
        if known:
            return [known]
        return [f["id"] for f in self.list_files_for_job(job_id, since=since)]

    def delete_upload(self, upload_id: str) -> bool:
        """``DELETE /v1/files/<id>``; False when Replicate no longer has it."""
        try:
            self._call(lambda: self.client.files.delete(upload_id), "delete the uploaded file")
        except ReplicateAPIError as exc:
            if exc.kind == "not_found":
                return False
            raise
        return True

    def validate_credentials(self) -> dict[str, Any]:
        """``GET /v1/account``: ``{type, username, name, github_url}``."""
        account = self._call(lambda: self.client.accounts.current(), "validate the token")
        return {"type": account.type, "username": account.username, "name": account.name,
                "github_url": account.github_url}

    def list_jobs(self, limit: int = 50) -> list[CloudJobInfo]:
        return [info_from_prediction(p) for p in self.list_predictions(limit=limit)]

    def run_job(self, request: RunRequest) -> CloudJobInfo:
        """Upload the archive (unless ``inputs`` already has ``images``), then create the
        prediction with the guarded retry. The uploaded file is deleted again when no
        prediction will read it: the job was cancelled meanwhile, or the create failed in a
        way that leaves no prediction (any failure but ``uncertain``, since create looks
        the prediction up by our job id before giving up)."""
        inputs = dict(request.inputs)
        uploaded = None
        if request.archive_path and "images" not in inputs:
            uploaded = self.upload_file(request.archive_path, job_id=request.job_id, progress=request.progress)
            inputs["images"] = uploaded.url
        if request.cancelled is not None and request.cancelled():
            if uploaded is not None:
                self.delete_file(uploaded.id)
            return CloudJobInfo(provider_job_id="", status=None, raw_status="not created: job cancelled")
        try:
            result = self.create_prediction(
                job_id=request.job_id, input=self.build_input(request.config, request.dataloader_config, inputs),
                webhook=request.webhook_url or self.webhook_url)
        except ReplicateAPIError as exc:
            if uploaded is not None and exc.kind != "uncertain":
                self.delete_file(uploaded.id)
            raise
        info = info_from_prediction(result.prediction)
        extra = {**info.extra, "create_attempts": result.attempts, "adopted": result.adopted}
        if uploaded is not None:
            extra.update(file_id=uploaded.id, file_url=uploaded.url)
        return replace(info, extra=extra)

    def cancel_job(self, provider_job_id: str) -> bool:
        """``POST /v1/predictions/<id>/cancel``; False when Replicate does not know the id."""
        try:
            self._call(lambda: self.client.predictions.cancel(provider_job_id), "cancel the prediction",
                       parse_fallback=True)
        except _ParseFallback:
            return True  # cancelled; only the answer's status did not parse (e.g. "aborted")
        except ReplicateAPIError as exc:
            if exc.kind == "not_found":
                return False
            raise
        return True

    def get_job_logs(self, provider_job_id: str) -> str:
        return self.get_prediction(provider_job_id).get("logs") or ""

    def get_job_status(self, provider_job_id: str) -> CloudJobInfo:
        return info_from_prediction(self.get_prediction(provider_job_id))

    # ---- Replicate specifics ---------------------------------------------------------------

    def list_versions(self, max_pages: int = 5) -> list[dict]:
        """The model's versions, newest first: ``[{id, created_at, cog_version}]``."""
        owner, _, name = self.model.partition("/")
        first = self._call(lambda: Versions(self.client, model=(owner, name)).list(),
                           f"list the versions of {self.model}")
        page = {"results": [v.dict() for v in first.results], "next": first.next}
        out: list[dict] = []
        for _ in range(max_pages):
            for v in page.get("results") or []:
                created = v.get("created_at")
                if isinstance(created, datetime):
                    created = _iso(created)
                out.append({"id": v.get("id"), "created_at": created, "cog_version": v.get("cog_version")})
            nxt = page.get("next")
            if not nxt:
                break
            # ``Versions.list()`` takes no cursor: request ``next`` ourselves (same client).
            page = self._call(lambda u=nxt: self.client._request("GET", u).json(), "list versions")
        out.sort(key=lambda v: v.get("created_at") or "", reverse=True)
        return out

    def resolve_version(self) -> str:
        """The pinned version, else the model's newest."""
        if self.version:
            return self.version
        model = self._call(lambda: self.client.models.get(self.model), f"look up {self.model}")
        latest = getattr(model, "latest_version", None)
        if latest is not None and getattr(latest, "id", None):
            return latest.id
        versions = self.list_versions(max_pages=1)
        if not versions:
            raise ReplicateAPIError(f"Replicate model {self.model} has no versions", kind="invalid")
        return versions[0]["id"]

    def list_hardware(self) -> list[dict]:
        items = self._call(lambda: self.client.hardware.list(), "list hardware")
        return [{"sku": h.sku, "name": h.name} for h in items]

    @staticmethod
    def build_input(config: dict, dataloader_config: list, extra: dict | None = None) -> dict:
        """The trainer's Cog inputs: ``config_json``/``dataloader_json`` are JSON *strings*."""
        inp = {"config_json": json.dumps(config, sort_keys=True),
               "dataloader_json": json.dumps(dataloader_config)}
        inp.update(extra or {})
        return inp

    def upload_file(self, path: str | os.PathLike, *, job_id: str | None = None,
                    progress: Callable[[int, int], None] | None = None, attempts: int = 3) -> UploadedFile:
        """``POST /v1/files`` (multipart, streamed from disk). Retries 429/5xx/connection
        errors a few times: a duplicate upload is harmless (files expire), unlike a
        duplicate prediction."""
        path = os.fspath(path)
        size = os.path.getsize(path)
        if size > MAX_UPLOAD_BYTES:
            raise ReplicateAPIError(
                f"archive too large: {size / 1024 / 1024:.1f} MiB; Replicate accepts at most 100 MiB",
                kind="too_large", status=413)
        params: dict[str, Any] = {"filename": os.path.basename(path), "content_type": "application/zip"}
        if job_id:
            params["metadata"] = {JOB_ID_INPUT: job_id}
        for attempt in range(1, attempts + 1):
            try:
                with _ProgressFile(path, progress) as fh:
                    f = self._call(lambda: self.client.files.create(fh, **params), "upload the dataset archive")
                return UploadedFile(id=f.id, url=f.urls.get("get"), size=f.size,
                                    sha256=(f.checksums or {}).get("sha256"))
            except ReplicateAPIError as exc:
                if not exc.retryable or attempt == attempts:
                    raise
                give_up = self._wait(exc, attempt)
                if give_up is not None:
                    raise give_up from None
        raise AssertionError("unreachable")

    def delete_file(self, file_id: str) -> bool:
        """Best effort: remove an uploaded archive we no longer need."""
        try:
            return bool(self._call(lambda: self.client.files.delete(file_id), "delete the uploaded file"))
        except ReplicateAPIError as exc:
            log.warning("could not delete Replicate file %s: %s", file_id, exc)
            return False

    def create_prediction(self, *, job_id: str, input: dict, webhook: str | None = None,
                          version: str | None = None) -> CreateResult:
        """Create the prediction for ``job_id`` — at most one, whatever fails.

        ``input[JOB_ID_INPUT]`` is set to ``job_id``. Retries 429 (waiting ``Retry-After``),
        5xx and connection errors up to ``create_attempts`` times; before retrying after an
        error the server may have acted on, and after the last attempt, it looks for a
        prediction with our job id and adopts it. Raises ReplicateAPIError; kind
        ``uncertain`` when it could not tell whether a prediction was created.
        """
        version = version or self.resolve_version()
        body_input = {**input, JOB_ID_INPUT: job_id}
        params: dict[str, Any] = {}
        if webhook:
            params["webhook"] = webhook
            params["webhook_events_filter"] = list(WEBHOOK_EVENTS)
        started = datetime.now(UTC)
        last: ReplicateAPIError | None = None
        for attempt in range(1, self.create_attempts + 1):
            if last is not None and last.maybe_processed:
                found = self._find_after_failure(job_id, started)
                if found is not None:
                    return CreateResult(found, attempt - 1, True)
            try:
                pred = self._call(
                    lambda: self.client.predictions.create(version=version, input=body_input, **params),
                    "create the prediction", unparsed_kind="unparsed")
                return CreateResult(self._to_dict(pred), attempt, False)
            except ReplicateAPIError as exc:
                last = exc
                if not exc.retryable or attempt == self.create_attempts:
                    break
                log.info("create prediction for %s failed (%s); attempt %d of %d", job_id, exc,
                         attempt, self.create_attempts)
                give_up = self._wait(exc, attempt)
                if give_up is not None:
                    last = give_up
                    break
        assert last is not None
        if last.maybe_processed:
            found = self._find_after_failure(job_id, started)
            if found is not None:
                return CreateResult(found, self.create_attempts, True)
        raise last

    def _find_after_failure(self, job_id: str, since: datetime) -> dict | None:
        """Look for our prediction; ``uncertain`` if the lookup itself keeps failing (then a
        retry could create a duplicate, so we must not retry)."""
        error: ReplicateAPIError | None = None
        for attempt in range(1, 4):
            try:
                return self.find_prediction_for_job(job_id, since=since)
            except ReplicateAPIError as exc:
                error = exc
                if attempt < 3 and self._wait(exc, attempt) is not None:
                    break
        raise ReplicateAPIError(
            f"could not tell whether Replicate created a prediction for job {job_id} "
            f"({error}); it would carry input.{JOB_ID_INPUT}={job_id} — stcloud keeps looking "
            f"for it and cancels it if it appears", kind="uncertain", status=error.status if error else None)

    def find_prediction_for_job(self, job_id: str, *, since: datetime | None = None,
                                max_pages: int = 5) -> dict | None:
        """The newest prediction whose input carries ``job_id``, looking back (newest first)
        until predictions older than ``since`` minus a margin."""
        horizon = (since - timedelta(minutes=10)) if since else None
        url = "/v1/predictions"
        for _ in range(max_pages):
            page = self._call(lambda u=url: self.client._request("GET", u).json(), "list predictions")
            for pred in page.get("results") or []:
                if ((pred.get("input") or {}).get(JOB_ID_INPUT)) == job_id:
                    return pred
            results = page.get("results") or []
            oldest = parse_iso(results[-1].get("created_at")) if results else None
            if not page.get("next") or (horizon and oldest and oldest < horizon):
                return None
            url = page["next"]
        return None

    def list_files_for_job(self, job_id: str, *, since: datetime | None = None,
                           max_pages: int = 10) -> list[dict]:
        """Uploaded files whose metadata carries ``job_id``, looking back (newest first)
        until files older than ``since`` minus a margin."""
        horizon = (since - timedelta(minutes=10)) if since else None
        found: list[dict] = []
        url = "/v1/files"
        for _ in range(max_pages):
            page = self._call(lambda u=url: self.client._request("GET", u).json(), "list uploaded files")
            results = page.get("results") or []
            found.extend(f for f in results if isinstance(f.get("metadata"), dict)
                         and f["metadata"].get(JOB_ID_INPUT) == job_id)
            oldest = parse_iso(results[-1].get("created_at")) if results else None
            if not page.get("next") or (horizon and oldest and oldest < horizon):
                break
            url = page["next"]
        return found

    def list_predictions(self, limit: int = 50) -> list[dict]:
        out: list[dict] = []
        url = "/v1/predictions"
        while url and len(out) < limit:
            page = self._call(lambda u=url: self.client._request("GET", u).json(), "list predictions")
            out.extend(page.get("results") or [])
            url = page.get("next")
        return out[:limit]

    def get_prediction(self, prediction_id: str) -> dict:
        """``GET /v1/predictions/<id>`` as a plain dict (any status, even ``aborted``)."""
        try:
            pred = self._call(lambda: self.client.predictions.get(prediction_id), "read the prediction",
                              parse_fallback=True)
            return self._to_dict(pred)
        except _ParseFallback:
            return self._call(lambda: self.client._request("GET", f"/v1/predictions/{prediction_id}").json(),
                              "read the prediction")

    # ---- internals ---------------------------------------------------------------------------

    def _on_response(self, response: httpx.Response) -> None:
        if response.status_code in (429, 503, 504):
            raw = response.headers.get("x-stcloud-retry-after") or response.headers.get("Retry-After")
            self._local.retry_after = _parse_retry_after(raw)
        else:
            self._local.retry_after = None

    def _wait(self, exc: ReplicateAPIError, attempt: int) -> ReplicateAPIError | None:
        """Sleep before retry ``attempt + 1``. Returns None after sleeping, or the error to
        give up with when Replicate asks us to wait longer than ``max_retry_wait``."""
        if exc.retry_after is not None:
            delay = exc.retry_after
            if delay > self.max_retry_wait:
                return ReplicateAPIError(
                    f"{exc.message}; Replicate asks to wait {delay:.0f} s, longer than stcloud waits "
                    f"within one request", kind=exc.kind, status=exc.status, retry_after=delay,
                    detail=exc.detail)
        else:
            delay = self.backoff * (2 ** (attempt - 1))
        self._sleep(min(delay, self.max_retry_wait))
        return None

    @staticmethod
    def _to_dict(resource) -> dict:
        return resource.dict() if hasattr(resource, "dict") else dict(resource)

    def _call(self, fn: Callable[[], Any], what: str, parse_fallback: bool = False,
              unparsed_kind: str = "other"):
        self._local.retry_after = None
        try:
            return fn()
        except ReplicateError as exc:
            raise self._map_error(exc, what) from None
        except httpx.TimeoutException as exc:
            raise ReplicateAPIError(f"Replicate did not answer in time while trying to {what} "
                                    f"({type(exc).__name__})", kind="timeout") from None
        except httpx.TransportError as exc:
            raise ReplicateAPIError(f"connection to Replicate at {self.base_url} failed while trying to "
                                    f"{what}: {exc or type(exc).__name__}", kind="connection") from None
        except _PydanticValidationError as exc:
            if parse_fallback:
                raise _ParseFallback() from exc
            # A 2xx whose object did not parse: for a create, the prediction may well exist.
            raise ReplicateAPIError(f"Replicate answered with an unexpected object while trying to {what}",
                                    kind=unparsed_kind) from None
        except ValueError as exc:  # a non-JSON 2xx body
            raise ReplicateAPIError(f"Replicate sent an unreadable answer while trying to {what}: {exc}",
                                    kind="other") from None

    def _map_error(self, exc: ReplicateError, what: str) -> ReplicateAPIError:
        status = exc.status
        detail = exc.detail or exc.title or ""
        suffix = f": {detail}" if detail else ""
        retry_after = getattr(self._local, "retry_after", None)
        if status == 401:
            return ReplicateAPIError(
                "invalid token: Replicate rejected the API token (HTTP 401). Tokens start with r8_; "
                "create one at https://replicate.com/account/api-tokens", kind="auth", status=401, detail=detail)
        if status == 402:
            return ReplicateAPIError(f"insufficient credit on Replicate (HTTP 402){suffix}", kind="payment",
                                     status=402, detail=detail)
        if status == 413:
            return ReplicateAPIError(
                "archive too large: Replicate refused the upload (HTTP 413); the file API accepts at most 100 MiB",
                kind="too_large", status=413, detail=detail)
        if status == 429:
            wait = f"; retry after {retry_after:.0f} s" if retry_after is not None else ""
            return ReplicateAPIError(f"rate limited by Replicate (HTTP 429) while trying to {what}{wait}",
                                     kind="rate_limited", status=429, retry_after=retry_after, detail=detail)
        if status == 404:
            return ReplicateAPIError(f"not found on Replicate while trying to {what}{suffix}", kind="not_found",
                                     status=404, detail=detail)
        if status == 403:
            return ReplicateAPIError(f"Replicate refused access (HTTP 403) while trying to {what}{suffix}",
                                     kind="auth", status=403, detail=detail)
        if status is not None and status >= 500:
            return ReplicateAPIError(f"Replicate server error (HTTP {status}) while trying to {what}{suffix}",
                                     kind="server", status=status, retry_after=retry_after, detail=detail)
        return ReplicateAPIError(f"Replicate refused to {what} (HTTP {status}){suffix}", kind="invalid",
                                 status=status, detail=detail)


class _ParseFallback(Exception):
    """Internal: the client could not parse an object; read the raw JSON instead."""


__all__ = [
    "DEFAULT_MODEL", "HARDWARE", "JOB_ID_INPUT", "MAX_UPLOAD_BYTES", "TOKEN_MISSING",
    "WEBHOOK_EVENTS", "CreateResult", "ReplicateAPIError", "ReplicateService", "UploadedFile",
]
