"""A fake of the Replicate HTTP API (``https://api.replicate.com/v1``) served on 127.0.0.1.

The official ``replicate`` Python client (1.0.x) talks to it without changes::

    with FakeReplicate() as fake:
        client = replicate.Client(api_token="r8_test_token", base_url=fake.base_url)
        p = client.predictions.create(version=fake.latest_version_id(), input={"x": 1})
        fake.start(p.id, logs="step 1\\n")
        fake.succeed(p.id, output=["https://example.invalid/lora.safetensors"])
        p.reload()                      # -> status "succeeded"

Tests drive the lifecycle of a prediction; wall-clock time does not. Faults (429, 5xx,
402, HTML 413 from a proxy, dropped connections, "created but answered 500") are
injected per request with :meth:`FakeReplicate.inject`. Webhooks are signed the way
Replicate signs them (Standard Webhooks).

The wire shapes follow Replicate's public contract: the HTTP API reference (as mirrored
in the docstrings of replicate/replicate-python-beta, which is generated from the
OpenAPI spec) and responses recorded in the replicate-python test cassettes.
Nothing here is copied from another project.

What replicate-python 1.0.7 does (read from site-packages/replicate, release 1.0.7)
---------------------------------------------------------------------------------
* base_url: ``Client(base_url=...)``, or env ``REPLICATE_BASE_URL``, or
  ``https://api.replicate.com``. It becomes ``httpx.Client(base_url=...)`` and every call
  passes an absolute path ``/v1/...``, so base_url must NOT end in ``/v1``; httpx keeps
  any path prefix (``http://h/p`` + ``/v1/x`` -> ``http://h/p/v1/x``). The env var and the
  token (``REPLICATE_API_TOKEN``) are read when the client makes its first request, not
  in ``Client()``. Cursor URLs (``Page.next``) are requested as absolute URLs, so
  ``next`` has to point at this fake's host, which it does.
* Auth header: ``Authorization: Bearer <token>``. The fake also takes ``Token <token>``.
* Default timeout: ``httpx.Timeout(5.0, read=30.0, write=30.0, connect=5.0, pool=10.0)``;
  ``files.create`` passes ``timeout=None``, so an upload has no timeout at all.
* Retries: every client wraps its transport in ``RetryTransport``. It retries only
  **HEAD/GET/PUT/DELETE/OPTIONS/TRACE** answered with **429, 503 or 504**, making up to
  10 attempts. It sleeps for ``Retry-After`` seconds when the header is all digits;
  **there is no cap on that value** (a date is capped at 60 s). Without the header it
  backs off 0.1 * 2**(n-1) s with jitter. **POST is never retried** (create prediction,
  cancel, files.create). 500 and 502 are never retried. A connection error is never
  retried either: ``httpx.HTTPTransport()`` is built with retries=0 and RetryTransport
  only looks at status codes.
* Errors: any 4xx/5xx response raises ``replicate.exceptions.ReplicateError`` (a
  ``ReplicateException``) with ``.status`` (always the HTTP status code) and ``.type``,
  ``.title``, ``.detail``, ``.instance`` from the JSON problem body. A body that is not
  JSON (for example an HTML 413 page) leaves all four as None. ``str(err)`` starts with
  "ReplicateError Details:". A dropped connection is NOT wrapped: the raw
  ``httpx.RemoteProtocolError`` ("Server disconnected without sending a response") comes
  through. It is an ``httpx.TransportError`` and an ``httpx.RequestError``, not an
  ``httpx.ConnectError``.
* ``Prediction.status`` is a pydantic ``Literal["starting", "processing", "succeeded",
  "failed", "canceled"]``. A prediction in the ``aborted`` state therefore fails to
  parse (pydantic ``ValidationError``), and ``Prediction.wait()`` only stops on those
  three terminal states. ``wait()``/``reload()`` poll ``GET /v1/predictions/{id}`` every
  ``client.poll_interval`` seconds (env ``REPLICATE_POLL_INTERVAL``, default 0.5).
* ``Versions.list()`` (``client.models.get(...).versions.list()``) takes **no cursor**,
  so it cannot be handed to ``replicate.paginate``. To read later pages, request
  ``page.next`` yourself (see ``test_versions_pagination``). ``predictions.list(cursor)``
  and ``models.list(cursor)`` do take a cursor. ``files.list()`` returns only the first
  page, as a plain list.
* ``files.create`` sends multipart/form-data with the file in part ``content`` (filename
  and content type on the part) and the optional form field ``metadata`` (a JSON
  string). ``encode_json`` turns a file-like input into ``files.create(f).urls["get"]``.
* Webhooks: ``client.webhooks.default.secret()`` -> ``GET /v1/webhooks/default/secret``
  -> ``{"key": "whsec_..."}``. ``replicate.webhooks.validate`` (``Webhooks.validate``)
  checks the same HMAC as ``standardwebhooks``.

The trainer inside a prediction
------------------------------
The fake runs no trainer: tests drive the lifecycle. What the trainer does to the outside
world is reproduced where stcloud depends on it: :meth:`FakeReplicate.push_checkpoint` (and
``fail(..., checkpoint_dir=...)``) uploads a checkpoint folder the way SimpleTuner's publishing
does, with boto3, to every ``s3`` entry of the ``config_json`` input's ``publishing_config``
that has ``publish_checkpoints: true`` (``<base_path><folder name>/<file>``).

Where the fake simplifies (on purpose)
--------------------------------------
* ``Prefer: wait`` is ignored and create answers at once (still 201, status ``starting``).
* No throttling of ``output``/``logs`` webhooks (Replicate sends them at most once per
  500 ms). The ``start`` event is queued when the prediction is created; the real
  service's exact timing is not documented more precisely than "immediately on
  prediction start".
* No SSE streaming, no trainings/deployments endpoints, no input validation against
  ``openapi_schema``. Input file URLs are resolved only when a test asks
  (:meth:`FakeReplicate.fetch_input`: what the model's container does at start).
* Files: ``urls.get`` is ``<base>/v1/files/<id>``, as in Replicate's recorded
  responses. The bytes are served by ``GET /v1/files/<id>/download?owner=&expiry=&signature=``
  (signature = base64 HMAC-SHA256 of "{owner} {id} {expiry}", as documented). Build one
  with :meth:`FakeReplicate.file_download_url`. A valid API token also works there.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import os
import queue
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

__all__ = [
    "FakeReplicate",
    "Injection",
    "RecordedRequest",
    "WebhookDelivery",
    "TRAINER_MODEL",
    "TERMINAL_STATUSES",
    "FAULT_KINDS",
    "sign_webhook",
]

TRAINER_MODEL = "simpletuner/advanced-trainer"
STATUSES = ("starting", "processing", "succeeded", "failed", "canceled", "aborted")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})
WEBHOOK_EVENTS = ("start", "output", "logs", "completed")
FAULT_KINDS = frozenset(
    {"429", "500", "502", "503", "504", "402", "413_html", "drop",
     "after_create_500", "after_create_drop", "custom", "hold", "hold_after_create"}
)
MiB = 1024 * 1024

_JSON = "application/json; charset=UTF-8"
_PROBLEM = "application/problem+json"
_UNSET: Any = object()
_CREATE_PATH_RE = re.compile(r"^/v1/(predictions|models/[^/]+/[^/]+/predictions)$")
_B32 = "abcdefghijklmnopqrstuvwxyz234567"

DEFAULT_HARDWARE = (
    {"name": "CPU", "sku": "cpu"},
    {"name": "Nvidia T4 GPU", "sku": "gpu-t4"},
    {"name": "Nvidia A40 (Large) GPU", "sku": "gpu-a40-large"},
    {"name": "Nvidia L40S GPU", "sku": "gpu-l40s"},
    {"name": "2x Nvidia L40S GPU", "sku": "gpu-l40s-2x"},
    {"name": "Nvidia A100 (80GB) GPU", "sku": "gpu-a100-large"},
    {"name": "2x Nvidia A100 (80GB) GPU", "sku": "gpu-a100-large-2x"},
    {"name": "Nvidia H100 GPU", "sku": "gpu-h100"},
)


# --------------------------------------------------------------------------- helpers


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(dt: datetime) -> str:
    """Prediction/version style timestamp: ``2023-09-08T16:19:34.765994Z``."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _iso_ms(dt: datetime) -> str:
    """Files API style timestamp: ``2024-08-22T12:26:51.079Z``."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _parse_iso(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _b32_id() -> str:
    """26 lowercase base32 characters, like ``gm3qorzdhgbfurvjtvhg6dckhu``."""
    return "".join(secrets.choice(_B32) for _ in range(26))


def _msg_id() -> str:
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return "msg_" + "".join(secrets.choice(alphabet) for _ in range(27))


def _new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def sign_webhook(secret: str, msg_id: str, timestamp: int | str, body: str) -> str:
    """Standard Webhooks ``v1`` signature over ``{id}.{timestamp}.{body}``."""
    key = base64.b64decode(secret.split("_", 1)[1] if secret.startswith("whsec_") else secret)
    mac = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def _encode_cursor(direction: str, seq: int) -> str:
    raw = f"{direction}={seq}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, int]:
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    direction, _, seq = raw.partition("=")
    if direction not in ("b", "a"):
        raise ValueError(cursor)
    return direction, int(seq)


# --------------------------------------------------------------------------- records


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    time: float
    body: bytes | None = None  # JSON/form bodies only, never file uploads

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Injection:
    method: str
    path_regex: str
    kind: str
    times: int | None = 1  # None = every matching request
    retry_after: int | str | None = None
    status: int | None = None  # for kind="custom"
    body: Any = None  # for kind="custom": dict (JSON) or str/bytes
    headers: dict[str, str] = field(default_factory=dict)
    hits: int = 0
    # kinds "hold" / "hold_after_create": set when a matching request arrived (and, for
    # hold_after_create, was handled); the request waits for ``released`` (or ``hold_timeout``).
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    hold_timeout: float = 120.0

    def release(self) -> None:
        """Let a held request go on (its answer goes to a client that may be gone)."""
        self.released.set()

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method not in ("*", method.upper()):
            return False
        return re.search(self.path_regex, path) is not None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


@dataclass
class WebhookDelivery:
    msg_id: str
    url: str
    prediction_id: str
    event: str
    body: str
    timestamp: int
    signature: str
    headers: dict[str, str]
    attempt: int = 1
    status_code: int | None = None
    response_text: str | None = None
    error: str | None = None
    sent_at: float = 0.0
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class _CappedSpool:
    """File-like sink for werkzeug's multipart parser. It writes to a temp file on disk
    and hashes as it goes. After ``limit`` bytes it stops storing data but keeps
    counting, so an oversized upload never fills the disk."""

    def __init__(self, directory: str, limit: int):
        fd, self.path = tempfile.mkstemp(dir=directory, prefix="upload-")
        self._f = os.fdopen(fd, "w+b")
        self.limit = limit
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5()  # noqa: S324 - mirrors Replicate's checksums/etag

    @property
    def too_large(self) -> bool:
        return self.size > self.limit

    def write(self, data: bytes) -> int:
        n = len(data)
        if self.size + n <= self.limit:
            self._f.write(data)
            self.sha256.update(data)
            self.md5.update(data)
        self.size += n
        return n

    def seek(self, *args: Any) -> int:
        return self._f.seek(*args)

    def tell(self) -> int:
        return self._f.tell()

    def read(self, *args: Any) -> bytes:
        return self._f.read(*args)

    def close(self) -> None:
        self._f.close()

    def discard(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _FakeRequest(Request):
    """Streams multipart file parts to capped temp files (werkzeug's upload hook)."""

    upload_dir: str | None = None
    upload_limit: int = 100 * 1024 * 1024
    max_form_memory_size = 1024 * 1024  # plain form fields (metadata) stay small

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):  # type: ignore[override]
        if self.upload_dir is None:
            return super()._get_file_stream(total_content_length, content_type, filename, content_length)
        spool = _CappedSpool(self.upload_dir, self.upload_limit)
        self.__dict__.setdefault("spools", []).append(spool)
        return spool  # type: ignore[return-value]


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:  # no per-request stderr noise
        pass


class _DropConnection(ConnectionAbortedError):
    """Raised inside the WSGI app after the socket was shut down. werkzeug treats
    ConnectionError as 'client went away' and stays silent."""


# --------------------------------------------------------------------------- the fake


class FakeReplicate:
    """An in-process fake Replicate API. See the module docstring for the contract."""

    def __init__(
        self,
        tokens: Iterable[str] = ("r8_test_token",),
        *,
        username: str = "stcloud-test",
        account_name: str = "stcloud test",
        max_file_bytes: int = 100 * MiB,
        page_size: int = 100,
        auto_webhooks: bool = False,
        default_events_filter: Iterable[str] = WEBHOOK_EVENTS,
        webhook_timeout: float = 5.0,
        hardware: Iterable[dict] = DEFAULT_HARDWARE,
        preload: bool = True,
    ) -> None:
        self.tokens = set(tokens)
        self.username = username
        self.account_name = account_name
        self.max_file_bytes = max_file_bytes
        self.page_size = page_size
        self.auto_webhooks = auto_webhooks
        self.default_events_filter = list(default_events_filter)
        self.webhook_timeout = webhook_timeout
        self.hardware = [dict(h) for h in hardware]

        self._lock = threading.RLock()
        self._seq = 0
        # public state (API-shaped dicts); mutate only through the helpers
        self.models: dict[str, dict] = {}  # "owner/name" -> model json (without latest_version)
        self.versions: dict[str, list[dict]] = {}  # "owner/name" -> versions, oldest first
        self.predictions: dict[str, dict] = {}  # id -> prediction json exactly as served
        self.files: dict[str, dict] = {}  # id -> file json exactly as served
        self.requests: list[RecordedRequest] = []
        self.injections: list[Injection] = []
        self.deliveries: list[WebhookDelivery] = []
        self.create_calls = 0  # POSTs that reached a create-prediction endpoint (any outcome)
        self.predictions_created = 0  # predictions that were actually created
        self.fetched_inputs: dict[str, dict[str, dict]] = {}  # pred id -> input name -> what fetch_input got

        self._pred_meta: dict[str, dict] = {}
        self._file_meta: dict[str, dict] = {}
        self._version_index: dict[str, str] = {}  # version id -> "owner/name"
        self._seqs: dict[str, int] = {}
        self.webhook_secret = _new_webhook_secret()
        self.files_signing_secret = secrets.token_bytes(32)

        self._tmpdir: str | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._wh_queue: queue.Queue[tuple | None] = queue.Queue()
        self._wh_pending = 0
        self._wh_cond = threading.Condition()
        self._wh_thread: threading.Thread | None = None
        self.base_url = ""

        self._url_map = Map(
            [
                Rule("/v1/account", endpoint="account", methods=["GET"]),
                Rule("/v1/hardware", endpoint="hardware", methods=["GET"]),
                Rule("/v1/models", endpoint="models_list", methods=["GET"]),
                Rule("/v1/models/<owner>/<name>", endpoint="model_get", methods=["GET"]),
                Rule("/v1/models/<owner>/<name>/versions", endpoint="versions_list", methods=["GET"]),
                Rule("/v1/models/<owner>/<name>/versions/<version_id>", endpoint="version_get", methods=["GET"]),
                Rule("/v1/models/<owner>/<name>/predictions", endpoint="model_predictions_create", methods=["POST"]),
                Rule("/v1/files", endpoint="files_list", methods=["GET"]),
                Rule("/v1/files", endpoint="files_create", methods=["POST"]),
                Rule("/v1/files/<file_id>", endpoint="file_get", methods=["GET"]),
                Rule("/v1/files/<file_id>", endpoint="file_delete", methods=["DELETE"]),
                Rule("/v1/files/<file_id>/download", endpoint="file_download", methods=["GET"]),
                Rule("/v1/predictions", endpoint="predictions_list", methods=["GET"]),
                Rule("/v1/predictions", endpoint="predictions_create", methods=["POST"]),
                Rule("/v1/predictions/<prediction_id>", endpoint="prediction_get", methods=["GET"]),
                Rule("/v1/predictions/<prediction_id>/cancel", endpoint="prediction_cancel", methods=["POST"]),
                Rule("/v1/webhooks/default/secret", endpoint="webhook_secret", methods=["GET"]),
            ],
            strict_slashes=False,
        )

        if preload:
            self.add_model(TRAINER_MODEL, description="SimpleTuner LoRA / full fine-tune trainer")
            base = _now() - timedelta(days=30)
            for i in range(3):
                self.add_version(
                    TRAINER_MODEL,
                    version_id=hashlib.sha256(f"{TRAINER_MODEL}:{i}".encode()).hexdigest(),
                    created_at=base + timedelta(days=10 * i),
                    cog_version=f"0.9.{10 + i}",
                )

    # ------------------------------------------------------------------ lifecycle

    def start(self, pred_id: str | None = None, *, logs: str | None = None) -> Any:
        """``fake.start()`` starts the HTTP server and returns the fake.
        ``fake.start(pred_id, logs=...)`` moves a prediction to ``processing``
        (same as :meth:`start_prediction`) and returns its JSON."""
        if pred_id is not None:
            return self.start_prediction(pred_id, logs=logs)
        if self._server is not None:
            return self
        self._tmpdir = tempfile.mkdtemp(prefix="fake-replicate-")
        self._server = make_server("127.0.0.1", 0, self, threaded=True, request_handler=_QuietHandler)
        self.base_url = f"http://127.0.0.1:{self._server.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-replicate", daemon=True
        )
        self._thread.start()
        self._wh_thread = threading.Thread(target=self._webhook_worker, name="fake-replicate-webhooks", daemon=True)
        self._wh_thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        with self._lock:
            for inj in self.injections:
                inj.released.set()  # no request stays held past the fake's life
        self._wh_queue.put(None)
        if self._wh_thread:
            self._wh_thread.join(timeout=self.webhook_timeout + 1)
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        self._server = None
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> FakeReplicate:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def url(self, path: str) -> str:
        return self.base_url + path

    def client(self, token: str | None = None, **kwargs: Any):
        """A ``replicate.Client`` pointed at this fake (short timeouts, fast polling)."""
        import replicate  # local import: the fake itself does not need the client

        kwargs.setdefault("timeout", httpx.Timeout(10.0, connect=2.0))
        c = replicate.Client(api_token=token or next(iter(sorted(self.tokens))), base_url=self.base_url, **kwargs)
        c.poll_interval = 0.02
        return c

    # ------------------------------------------------------------------ catalogue

    def _next_seq(self, key: str) -> int:
        self._seq += 1
        self._seqs[key] = self._seq
        return self._seq

    def add_model(
        self,
        model: str,
        *,
        description: str | None = None,
        visibility: str = "public",
        github_url: str | None = None,
        run_count: int = 0,
    ) -> dict:
        owner, name = model.split("/", 1)
        with self._lock:
            obj = {
                "url": f"https://replicate.com/{owner}/{name}",
                "owner": owner,
                "name": name,
                "description": description,
                "visibility": visibility,
                "github_url": github_url,
                "paper_url": None,
                "license_url": None,
                "run_count": run_count,
                "cover_image_url": None,
                "default_example": None,
            }
            self.models[model] = obj
            self.versions.setdefault(model, [])
            self._next_seq("model:" + model)
            return obj

    def add_version(
        self,
        model: str = TRAINER_MODEL,
        *,
        version_id: str | None = None,
        created_at: datetime | None = None,
        cog_version: str = "0.9.13",
        openapi_schema: dict | None = None,
    ) -> dict:
        """Add a version (it becomes ``latest_version`` if it is the newest). Returns its JSON."""
        with self._lock:
            if model not in self.models:
                self.add_model(model)
            vid = version_id or secrets.token_hex(32)
            if not re.fullmatch(r"[0-9a-f]{64}", vid):
                raise ValueError("version ids are 64 lowercase hex characters")
            obj = {
                "id": vid,
                "created_at": _iso(created_at or _now()),
                "cog_version": cog_version,
                "openapi_schema": openapi_schema if openapi_schema is not None else _minimal_schema(),
            }
            self.versions[model].append(obj)
            self.versions[model].sort(key=lambda v: v["created_at"])
            self._version_index[vid] = model
            self._next_seq("version:" + vid)
            return obj

    def latest_version_id(self, model: str = TRAINER_MODEL) -> str:
        with self._lock:
            return self.versions[model][-1]["id"]

    def _model_json(self, model: str) -> dict:
        obj = copy.deepcopy(self.models[model])
        versions = self.versions.get(model) or []
        obj["latest_version"] = copy.deepcopy(versions[-1]) if versions else None
        return obj

    # ------------------------------------------------------------------ faults

    def inject(
        self,
        method: str,
        path_regex: str,
        kind: str,
        times: int | None = 1,
        retry_after: int | str | None = None,
        *,
        status: int | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Injection:
        """Make the next ``times`` matching requests fail (``times=None``: all of them).

        ``path_regex`` is ``re.search``-ed against the URL path (no query string), e.g.
        ``r"^/v1/predictions$"``. Kinds:

        * ``"429"``: problem JSON like Replicate's throttle answer plus ``Retry-After``
          when ``retry_after`` is given.
        * ``"500"``, ``"503"``, ``"504"``: problem JSON (503/504 get ``Retry-After`` if given).
          ``"502"``: an HTML "Bad gateway" page, the way an edge proxy sends it.
        * ``"402"``: ``{"title": "Insufficient credit", ...}``.
        * ``"413_html"``: an nginx-style HTML 413 page (not JSON).
        * ``"drop"``: read the request, then close the socket without answering.
        * ``"after_create_500"`` / ``"after_create_drop"``: run the real handler (the
          prediction or file IS created), then answer 500 or drop the connection.
        * ``"custom"``: answer with ``status``, ``body`` (dict -> JSON) and ``headers``.
        * ``"hold"``: keep the request in flight (not yet handled) until
          ``Injection.release()``; then handle it as usual. ``"hold_after_create"``: handle
          it (the prediction or file IS created), then keep the answer in flight until
          released. ``Injection.arrived`` is set when the request is being held: a test
          kills its client then (a crash with the request in flight), as a real server
          carries on with a request whose client went away.

        Faults fire before authentication, the way an edge proxy or rate limiter would.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        inj = Injection(method.upper(), path_regex, kind, times, retry_after, status, body, dict(headers or {}))
        with self._lock:
            self.injections.append(inj)
        return inj

    def clear_faults(self) -> None:
        with self._lock:
            self.injections.clear()

    def _take_injection(self, method: str, path: str) -> Injection | None:
        with self._lock:
            for inj in self.injections:
                if inj.matches(method, path):
                    inj.hits += 1
                    return inj
        return None

    def _fault_response(self, inj: Injection) -> Response:
        kind = inj.kind
        hdrs = dict(inj.headers)
        if inj.retry_after is not None and kind in ("429", "503", "504"):
            hdrs["Retry-After"] = str(inj.retry_after)
        if kind == "429":
            ra = inj.retry_after if inj.retry_after is not None else 1
            body = {
                "detail": "Request was throttled. Your rate limit for creating predictions is reduced to "
                "6 requests per minute with a burst of 1 requests. "
                f"Your rate limit resets in ~{ra}s.",
                "status": 429,
                "retry_after": int(ra) if str(ra).isdigit() else ra,
            }
            return self._json(body, 429, hdrs, problem=True)
        if kind == "402":
            return self._problem(
                402,
                "Insufficient credit",
                "You have insufficient credit to run this model. Go to https://replicate.com/account/billing#billing "
                "to purchase credit. Once you purchase credit, please wait a few minutes before trying again.",
                hdrs,
            )
        if kind in ("500", "after_create_500"):
            return self._problem(500, "Internal Server Error", "Something went wrong on our end.", hdrs)
        if kind == "503":
            return self._problem(503, "Service Unavailable", "The service is temporarily unavailable.", hdrs)
        if kind == "504":
            return self._problem(504, "Gateway Timeout", "The upstream service timed out.", hdrs)
        if kind == "502":
            html = (
                "<!DOCTYPE html>\n<html><head><title>502 Bad gateway</title></head>"
                "<body><h1>Bad gateway</h1><p>Error code 502</p></body></html>\n"
            )
            return Response(html, 502, hdrs, content_type="text/html; charset=UTF-8")
        if kind == "413_html":
            html = (
                "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
                "<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n"
                "</body>\r\n</html>\r\n"
            )
            return Response(html, 413, hdrs, content_type="text/html")
        if kind == "custom":
            status = inj.status or 500
            if isinstance(inj.body, (dict, list)):
                return self._json(inj.body, status, hdrs)
            return Response(inj.body or b"", status, hdrs)
        raise AssertionError(kind)

    @staticmethod
    def _drop(request: Request) -> None:
        # Read what the client sent, so the close is a clean FIN and not an RST, then hang up.
        stream = request.stream
        while stream.read(1 << 20):
            pass
        sock = request.environ.get("werkzeug.socket")
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        raise _DropConnection("fault injection: connection dropped")

    # ------------------------------------------------------------------ WSGI

    def __call__(self, environ: dict, start_response: Any) -> Iterable[bytes]:
        request = _FakeRequest(environ)
        response = self._handle(request)
        return response(environ, start_response)

    def _record(self, request: Request) -> None:
        body = None
        ctype = request.mimetype or ""
        if request.method in ("POST", "PUT", "PATCH") and ctype in ("application/json", "application/x-www-form-urlencoded"):
            if (request.content_length or 0) <= MiB:
                body = request.get_data(cache=True)
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=request.query_string.decode("latin-1"),
            headers={k: v for k, v in request.headers.items()},
            time=time.time(),
            body=body,
        )
        with self._lock:
            self.requests.append(rec)
            if request.method == "POST" and _CREATE_PATH_RE.match(request.path):
                self.create_calls += 1

    def _handle(self, request: Request) -> Response:
        self._record(request)
        inj = self._take_injection(request.method, request.path)
        after: str | None = None
        if inj is not None:
            if inj.kind == "drop":
                self._drop(request)
            elif inj.kind in ("after_create_500", "after_create_drop", "hold_after_create"):
                after = inj.kind
            elif inj.kind == "hold":
                inj.arrived.set()
                inj.released.wait(inj.hold_timeout)
                inj = None
            else:
                return self._fault_response(inj)

        adapter = self._url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except MethodNotAllowed:
            return self._problem(405, "Method Not Allowed", "Method not allowed.")
        except NotFound:
            return self._not_found()
        except HTTPException as e:  # pragma: no cover - redirects etc.
            return self._problem(e.code or 400, e.name, e.description or "")

        if endpoint != "file_download" and not self._authorized(request):
            return self._problem(401, "Unauthenticated", "You did not pass a valid authentication token")

        response = getattr(self, "_ep_" + endpoint)(request, **args)
        if after == "after_create_500":
            return self._fault_response(inj)  # type: ignore[arg-type]
        if after == "after_create_drop":
            self._drop(request)
        if after == "hold_after_create":
            inj.arrived.set()  # type: ignore[union-attr]
            inj.released.wait(inj.hold_timeout)  # type: ignore[union-attr]
        return response

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() in ("bearer", "token") and token.strip() in self.tokens

    # ------------------------------------------------------------------ responses

    @staticmethod
    def _json(obj: Any, status: int = 200, headers: dict | None = None, *, problem: bool = False) -> Response:
        return Response(json.dumps(obj), status, headers or {}, content_type=_PROBLEM if problem else _JSON)

    def _problem(self, status: int, title: str, detail: str, headers: dict | None = None) -> Response:
        return self._json({"title": title, "detail": detail, "status": status}, status, headers, problem=True)

    def _not_found(self) -> Response:
        return self._json({"detail": "Not found.", "status": 404}, 404, problem=True)

    def _page(self, request: Request, items: list[dict], keys: list[str], path: str) -> Response | dict:
        """Newest-first cursor pagination. ``items[i]`` has sequence ``self._seqs[keys[i]]``."""
        seqs = [self._seqs[k] for k in keys]
        order = sorted(range(len(items)), key=lambda i: seqs[i], reverse=True)
        cursor = request.args.get("cursor")
        try:
            direction, pivot = _decode_cursor(cursor) if cursor else ("b", None)
        except Exception:
            return self._problem(400, "Invalid cursor", "The cursor parameter is not valid.")
        size = max(1, self.page_size)
        if direction == "b":
            pool = [i for i in order if pivot is None or seqs[i] < pivot]
            chosen = pool[:size]
        else:
            pool = [i for i in order if seqs[i] > pivot]
            chosen = pool[-size:]
        nxt = prev = None
        if chosen:
            last, first = seqs[chosen[-1]], seqs[chosen[0]]
            if any(seqs[i] < last for i in order):
                nxt = f"{self.base_url}{path}?{urlencode({'cursor': _encode_cursor('b', last)})}"
            if any(seqs[i] > first for i in order):
                prev = f"{self.base_url}{path}?{urlencode({'cursor': _encode_cursor('a', first)})}"
        return {"next": nxt, "previous": prev, "results": [copy.deepcopy(items[i]) for i in chosen]}

    # ------------------------------------------------------------------ endpoints: account etc.

    def _ep_account(self, request: Request) -> Response:
        return self._json(
            {
                "type": "user",
                "username": self.username,
                "name": self.account_name,
                "github_url": f"https://github.com/{self.username}",
            }
        )

    def _ep_hardware(self, request: Request) -> Response:
        return self._json(self.hardware)

    def _ep_webhook_secret(self, request: Request) -> Response:
        return self._json({"key": self.webhook_secret})

    def rotate_secret(self) -> str:
        """Replace the default webhook signing secret; returns the new ``whsec_...`` key."""
        with self._lock:
            self.webhook_secret = _new_webhook_secret()
            return self.webhook_secret

    # ------------------------------------------------------------------ endpoints: models

    def _ep_models_list(self, request: Request) -> Response:
        with self._lock:
            names = list(self.models)
            page = self._page(request, [self._model_json(m) for m in names], ["model:" + m for m in names], "/v1/models")
        return page if isinstance(page, Response) else self._json(page)

    def _ep_model_get(self, request: Request, owner: str, name: str) -> Response:
        with self._lock:
            key = f"{owner}/{name}"
            if key not in self.models:
                return self._not_found()
            return self._json(self._model_json(key))

    def _ep_versions_list(self, request: Request, owner: str, name: str) -> Response:
        key = f"{owner}/{name}"
        with self._lock:
            if key not in self.models:
                return self._not_found()
            vs = self.versions[key]
            page = self._page(request, vs, ["version:" + v["id"] for v in vs], f"/v1/models/{owner}/{name}/versions")
        return page if isinstance(page, Response) else self._json(page)

    def _ep_version_get(self, request: Request, owner: str, name: str, version_id: str) -> Response:
        key = f"{owner}/{name}"
        with self._lock:
            for v in self.versions.get(key, []):
                if v["id"] == version_id:
                    return self._json(copy.deepcopy(v))
        return self._not_found()

    # ------------------------------------------------------------------ endpoints: files

    def _ep_files_create(self, request: _FakeRequest) -> Response:
        assert self._tmpdir is not None
        request.upload_dir = self._tmpdir
        request.upload_limit = self.max_file_bytes
        try:
            form, files = request.form, request.files
        except HTTPException as e:
            for sp in request.__dict__.get("spools", []):
                sp.discard()
            return self._problem(e.code or 400, "Invalid request", e.description or "")

        upload = files.get("content")
        keep: _CappedSpool | None = upload.stream if upload is not None else None  # type: ignore[assignment]
        for sp in request.__dict__.get("spools", []):
            if sp is not keep:
                sp.discard()
        if upload is None or not isinstance(keep, _CappedSpool):
            return self._problem(422, "Invalid request", "The request must include a file in the `content` field.")
        if keep.too_large:
            keep.discard()
            return self._problem(
                413,
                "Request Entity Too Large",
                f"File size exceeds the maximum allowed size of {self.max_file_bytes} bytes.",
            )
        keep.close()

        metadata: Any = {}
        if form.get("metadata"):
            try:
                metadata = json.loads(form["metadata"])
            except ValueError:
                os.unlink(keep.path)
                return self._problem(422, "Invalid request", "`metadata` must be valid JSON.")
        name = form.get("filename") or upload.filename or "file"
        if len(name.encode("utf-8")) > 255:
            os.unlink(keep.path)
            return self._problem(422, "Invalid request", "`filename` must be at most 255 bytes.")
        content_type = form.get("type") or upload.content_type or "application/octet-stream"
        created = _now()
        fid = _b32_id()
        md5 = keep.md5.hexdigest()
        obj = {
            "id": fid,
            "name": name,
            "content_type": content_type,
            "size": keep.size,
            "etag": md5,
            "checksums": {"sha256": keep.sha256.hexdigest(), "md5": md5},
            "metadata": metadata,
            "created_at": _iso_ms(created),
            "expires_at": _iso_ms(created + timedelta(days=1)),
            "urls": {"get": f"{self.base_url}/v1/files/{fid}"},
        }
        with self._lock:
            self.files[fid] = obj
            self._file_meta[fid] = {"path": keep.path}
            self._next_seq("file:" + fid)
        return self._json(obj, 201)

    def _ep_files_list(self, request: Request) -> Response:
        with self._lock:
            ids = list(self.files)
            page = self._page(request, [self.files[i] for i in ids], ["file:" + i for i in ids], "/v1/files")
        return page if isinstance(page, Response) else self._json(page)

    def _ep_file_get(self, request: Request, file_id: str) -> Response:
        with self._lock:
            if file_id not in self.files:
                return self._not_found()
            return self._json(copy.deepcopy(self.files[file_id]))

    def _ep_file_delete(self, request: Request, file_id: str) -> Response:
        with self._lock:
            if file_id not in self.files:
                return self._not_found()
            del self.files[file_id]
            meta = self._file_meta.pop(file_id)
        try:
            os.unlink(meta["path"])
        except FileNotFoundError:
            pass
        return Response(b"", 204)

    def _file_signature(self, owner: str, file_id: str, expiry: int | str) -> str:
        mac = hmac.new(self.files_signing_secret, f"{owner} {file_id} {expiry}".encode(), hashlib.sha256)
        return base64.b64encode(mac.digest()).decode("ascii")

    def file_download_url(self, file_id: str, expires_in: int = 3600) -> str:
        """A signed ``/v1/files/{id}/download`` URL (no token needed), as Replicate documents it."""
        expiry = int(time.time()) + expires_in
        q = urlencode({"expiry": expiry, "owner": self.username,
                       "signature": self._file_signature(self.username, file_id, expiry)})
        return f"{self.base_url}/v1/files/{file_id}/download?{q}"

    def _ep_file_download(self, request: Request, file_id: str) -> Response:
        args = request.args
        signed = False
        if {"expiry", "owner", "signature"} <= set(args):
            try:
                fresh = int(args["expiry"]) >= time.time()
            except ValueError:
                fresh = False
            expected = self._file_signature(args["owner"], file_id, args["expiry"])
            signed = fresh and hmac.compare_digest(expected, args["signature"])
        if not signed and not self._authorized(request):
            return self._problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        with self._lock:
            obj = copy.deepcopy(self.files.get(file_id))
            meta = self._file_meta.get(file_id)
        if obj is None or meta is None:
            return self._not_found()
        fh = open(meta["path"], "rb")
        resp = Response(_iter_file(fh), 200, content_type=obj["content_type"], direct_passthrough=True)
        resp.headers["Content-Length"] = str(obj["size"])
        resp.headers["ETag"] = f'"{obj["etag"]}"'
        return resp

    def file_path(self, file_id: str) -> str:
        with self._lock:
            return self._file_meta[file_id]["path"]

    def file_bytes(self, file_id: str) -> bytes:
        with open(self.file_path(file_id), "rb") as fh:
            return fh.read()

    # ------------------------------------------------------------------ endpoints: predictions

    def _resolve_version(self, spec: Any) -> tuple[str, str] | None:
        if not isinstance(spec, str):
            return None
        m = re.fullmatch(r"(?:([^/\s:]+/[^/\s:]+):)?([0-9a-f]{64})", spec)
        if not m:
            return None
        model, vid = m.group(1), m.group(2)
        owner_model = self._version_index.get(vid)
        if owner_model is None or (model is not None and model != owner_model):
            return None
        return owner_model, vid

    def _create_prediction(self, request: Request, model: str | None) -> Response:
        body = request.get_json(silent=True, cache=True)
        if not isinstance(body, dict):
            return self._problem(400, "Invalid request", "The request body must be a JSON object.")
        with self._lock:
            if model is not None:
                if model not in self.models:
                    return self._not_found()
                if not self.versions.get(model):
                    return self._problem(422, "Invalid version or not permitted", "This model has no versions.")
                resolved = (model, self.versions[model][-1]["id"])
            else:
                resolved = self._resolve_version(body.get("version"))
                if resolved is None:
                    return self._problem(
                        422,
                        "Invalid version or not permitted",
                        "The specified version does not exist (or perhaps you don't have permission to use it?)",
                    )
            events = body.get("webhook_events_filter")
            if events is not None and (not isinstance(events, list) or any(e not in WEBHOOK_EVENTS for e in events)):
                return self._problem(422, "Input validation failed", "webhook_events_filter: invalid event type")
            inp = body.get("input")
            if inp is None:
                inp = {}
            if not isinstance(inp, dict):
                return self._problem(422, "Input validation failed", "input: must be an object")
            pid = _b32_id()
            pred = {
                "id": pid,
                "model": resolved[0],
                "version": resolved[1],
                "input": copy.deepcopy(inp),
                "logs": "",
                "output": None,
                "data_removed": False,
                "error": None,
                "source": "api",
                "status": "starting",
                "created_at": _iso(_now()),
                "started_at": None,
                "completed_at": None,
                "urls": {
                    "cancel": f"{self.base_url}/v1/predictions/{pid}/cancel",
                    "get": f"{self.base_url}/v1/predictions/{pid}",
                    "web": f"https://replicate.com/p/{pid}",
                },
            }
            self.predictions[pid] = pred
            self._pred_meta[pid] = {
                "webhook": body.get("webhook"),
                "webhook_completed": body.get("webhook_completed"),
                "events": list(events) if events is not None else list(self.default_events_filter),
                "prefer": request.headers.get("Prefer"),
            }
            self._next_seq("prediction:" + pid)
            self.predictions_created += 1
            out = copy.deepcopy(pred)
        self._auto_webhook(pid, {"start"})
        return self._json(out, 201)

    def _ep_predictions_create(self, request: Request) -> Response:
        return self._create_prediction(request, None)

    def _ep_model_predictions_create(self, request: Request, owner: str, name: str) -> Response:
        return self._create_prediction(request, f"{owner}/{name}")

    def _ep_predictions_list(self, request: Request) -> Response:
        with self._lock:
            ids = list(self.predictions)
            page = self._page(
                request, [self.predictions[i] for i in ids], ["prediction:" + i for i in ids], "/v1/predictions"
            )
        return page if isinstance(page, Response) else self._json(page)

    def _ep_prediction_get(self, request: Request, prediction_id: str) -> Response:
        with self._lock:
            if prediction_id not in self.predictions:
                return self._not_found()
            return self._json(copy.deepcopy(self.predictions[prediction_id]))

    def _ep_prediction_cancel(self, request: Request, prediction_id: str) -> Response:
        with self._lock:
            if prediction_id not in self.predictions:
                return self._not_found()
            if self.predictions[prediction_id]["status"] not in TERMINAL_STATUSES:
                self.set_status(prediction_id, "canceled")
            return self._json(copy.deepcopy(self.predictions[prediction_id]))

    # ------------------------------------------------------------------ state machine (test side)

    def get_prediction(self, pred_id: str) -> dict:
        with self._lock:
            return copy.deepcopy(self.predictions[pred_id])

    def set_status(
        self,
        pred_id: str,
        status: str,
        *,
        logs_append: str | None = None,
        output: Any = _UNSET,
        error: Any = _UNSET,
        predict_time: float | None = None,
        force: bool = False,
    ) -> dict:
        """Move a prediction to ``status`` and return its new JSON.

        Sets ``started_at`` on entering ``processing`` (or on finishing if it never
        started, except for canceled/aborted), ``completed_at`` and ``metrics`` on
        reaching a terminal state. Leaving a terminal state raises ValueError unless
        ``force=True``. With ``auto_webhooks`` the matching webhook events
        (logs/output/completed) are queued for delivery.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        events: set[str] = set()
        with self._lock:
            p = self.predictions[pred_id]
            if p["status"] in TERMINAL_STATUSES and not force:
                raise ValueError(f"prediction {pred_id} is already {p['status']}")
            now = _now()
            if logs_append:
                p["logs"] = (p["logs"] or "") + logs_append
                events.add("logs")
            if output is not _UNSET and output != p["output"]:
                p["output"] = copy.deepcopy(output)
                events.add("output")
            if error is not _UNSET:
                p["error"] = error
            prev = p["status"]
            p["status"] = status
            if status == "processing" and p["started_at"] is None:
                p["started_at"] = _iso(now)
            if status in TERMINAL_STATUSES:
                if p["started_at"] is None and status in ("succeeded", "failed"):
                    p["started_at"] = _iso(now)
                p["completed_at"] = _iso(now)
                metrics: dict[str, Any] = {}
                if predict_time is not None:
                    metrics["predict_time"] = float(predict_time)
                elif p["started_at"] is not None:
                    metrics["predict_time"] = round((now - _parse_iso(p["started_at"])).total_seconds(), 6)
                metrics["total_time"] = round((now - _parse_iso(p["created_at"])).total_seconds(), 6)
                p["metrics"] = metrics
                if prev not in TERMINAL_STATUSES or force:
                    events.add("completed")
            else:
                p["completed_at"] = None
                p.pop("metrics", None)
            result = copy.deepcopy(p)
        if events:
            self._auto_webhook(pred_id, events)
        return result

    def start_prediction(self, pred_id: str, *, logs: str | None = None) -> dict:
        """starting -> processing (sets ``started_at``); optionally appends logs."""
        return self.set_status(pred_id, "processing", logs_append=logs)

    def append_logs(self, pred_id: str, text: str) -> dict:
        with self._lock:
            status = self.predictions[pred_id]["status"]
        return self.set_status(pred_id, status, logs_append=text)

    def set_output(self, pred_id: str, output: Any) -> dict:
        """Intermediate output while running (fires the ``output`` webhook event)."""
        with self._lock:
            status = self.predictions[pred_id]["status"]
        return self.set_status(pred_id, status, output=output)

    def fetch_input(self, pred_id: str, name: str = "images", timeout: float = 300) -> dict:
        """Download a URL input of a prediction the way the model's container does when it
        starts: a plain GET, no Replicate token (the link must authorise itself). Returns and
        records ``{url, status, size, sha256}``; raises ``RuntimeError`` when the download
        fails."""
        with self._lock:
            url = (self.predictions[pred_id].get("input") or {}).get(name)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise RuntimeError(f"input {name!r} of {pred_id} is not a URL: {url!r}")
        h, size = hashlib.sha256(), 0
        with httpx.Client(timeout=timeout, trust_env=False) as http, http.stream("GET", url) as resp:
            status = resp.status_code
            if status == 200:
                for chunk in resp.iter_bytes(1024 * 1024):
                    h.update(chunk)
                    size += len(chunk)
        got = {"url": url, "status": status, "size": size, "sha256": h.hexdigest() if status == 200 else None}
        with self._lock:
            self.fetched_inputs.setdefault(pred_id, {})[name] = got
        if status != 200:
            raise RuntimeError(f"GET {url} answered {status}")
        return got

    def succeed(
        self, pred_id: str, output: Any = None, predict_time: float | None = None, *, logs: str | None = None
    ) -> dict:
        return self.set_status(pred_id, "succeeded", output=output, predict_time=predict_time, logs_append=logs)

    def fail(
        self, pred_id: str, error: str = "Prediction failed", *, logs: str | None = None,
        predict_time: float | None = None, checkpoint_dir: str | os.PathLike | None = None,
    ) -> dict:
        """Fail the prediction; with ``checkpoint_dir``, the trainer first pushed that
        checkpoint (:meth:`push_checkpoint`), as a run that saved one before it died does."""
        if checkpoint_dir is not None:
            self.push_checkpoint(pred_id, checkpoint_dir)
        return self.set_status(pred_id, "failed", error=error, logs_append=logs, predict_time=predict_time)

    def push_checkpoint(self, pred_id: str, checkpoint_dir: str | os.PathLike) -> list[str]:
        """What the trainer inside the prediction does when it saves a checkpoint with
        checkpoint pushes on: SimpleTuner's publishing uploads the folder under its base name
        (``<base_path><folder>/<file>``, e.g. ``job_x/checkpoint-20/optimizer.safetensors``) to
        every ``s3`` entry of ``publishing_config`` in the ``config_json`` input that has
        ``publish_checkpoints: true``, with boto3 and that entry's endpoint, bucket and keys.
        Logs a ``checkpoint saved`` line like the trainer. Returns the object keys written."""
        import boto3
        from botocore.config import Config

        with self._lock:
            pred = copy.deepcopy(self.predictions[pred_id])
        raw = (pred.get("input") or {}).get("config_json") or "{}"
        config = json.loads(raw) if isinstance(raw, str) else dict(raw)
        entries = config.get("publishing_config") or []
        entries = [entries] if isinstance(entries, dict) else entries
        folder = os.path.abspath(os.fspath(checkpoint_dir))
        name = os.path.basename(folder.rstrip(os.sep))
        files = sorted(os.path.relpath(os.path.join(d, f), folder)
                       for d, _dirs, fs in os.walk(folder) for f in fs)
        written: list[str] = []
        for entry in entries:
            if not (isinstance(entry, dict) and entry.get("provider") in ("s3", "s3-compatible")
                    and entry.get("publish_checkpoints")):
                continue
            client = boto3.client(
                "s3", endpoint_url=entry.get("endpoint_url"), region_name=entry.get("region") or "us-east-1",
                aws_access_key_id=entry["access_key"], aws_secret_access_key=entry["secret_key"],
                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))
            base = (entry.get("base_path") or "").strip("/")
            for rel in files:
                key = "/".join(p for p in (base, name, rel.replace(os.sep, "/")) if p)
                client.upload_file(os.path.join(folder, rel), entry["bucket"], key)
                written.append(key)
        if written:
            self.append_logs(pred_id, f"checkpoint saved: /src/output/{name}\n")
        return written

    def cancel(self, pred_id: str) -> dict:
        return self.set_status(pred_id, "canceled")

    def abort(self, pred_id: str) -> dict:
        return self.set_status(pred_id, "aborted")

    # ------------------------------------------------------------------ webhooks

    def _auto_webhook(self, pred_id: str, events: set[str]) -> None:
        if not self.auto_webhooks:
            return
        with self._lock:
            meta = self._pred_meta.get(pred_id) or {}
            pred = self.predictions[pred_id]
            body = json.dumps(pred)
            jobs = []
            if meta.get("webhook"):
                # one request per state change; label it with the most significant event
                chosen = [e for e in ("completed", "output", "logs", "start") if e in events and e in meta["events"]]
                if chosen:
                    jobs.append((meta["webhook"], chosen[0]))
            if meta.get("webhook_completed") and "completed" in events:
                jobs.append((meta["webhook_completed"], "completed"))
        for url, event in jobs:
            with self._wh_cond:
                self._wh_pending += 1
            self._wh_queue.put((pred_id, event, url, body))

    def _webhook_worker(self) -> None:
        while True:
            job = self._wh_queue.get()
            if job is None:
                return
            pred_id, event, url, body = job
            try:
                self._deliver(pred_id, event, url, body, _msg_id(), None, None, 1)
            finally:
                with self._wh_cond:
                    self._wh_pending -= 1
                    self._wh_cond.notify_all()

    def flush_webhooks(self, timeout: float = 10.0) -> None:
        """Wait until every automatically queued webhook has been delivered (or failed)."""
        deadline = time.monotonic() + timeout
        with self._wh_cond:
            while self._wh_pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self._wh_pending} webhook deliveries still pending")
                self._wh_cond.wait(left)

    def _deliver(
        self,
        pred_id: str,
        event: str,
        url: str,
        body: str,
        msg_id: str,
        timestamp: int | None,
        signature: str | None,
        attempt: int,
    ) -> WebhookDelivery:
        ts = int(time.time()) if timestamp is None else int(timestamp)
        sig = signature if signature is not None else sign_webhook(self.webhook_secret, msg_id, ts, body)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Replicate-Webhooks/1.0 (fake)",
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sig,
        }
        d = WebhookDelivery(msg_id, url, pred_id, event, body, ts, sig, headers, attempt)
        d.sent_at = time.time()
        t0 = time.monotonic()
        try:
            with httpx.Client(timeout=self.webhook_timeout, follow_redirects=False) as c:
                r = c.post(url, content=body.encode("utf-8"), headers=headers)
            d.status_code, d.response_text = r.status_code, r.text[:2000]
        except httpx.HTTPError as e:
            d.error = f"{type(e).__name__}: {e}"
        d.elapsed = time.monotonic() - t0
        with self._lock:
            self.deliveries.append(d)
        return d

    def send_webhook(
        self,
        pred_id: str,
        event: str | None = None,
        *,
        url: str | None = None,
        timestamp: int | None = None,
        signature: str | None = None,
        msg_id: str | None = None,
        retries: int = 0,
        retry_delay: float = 0.0,
    ) -> WebhookDelivery:
        """POST the prediction's current JSON to its webhook URL now (synchronously).

        ``event`` defaults from the status (starting -> start, processing -> logs,
        terminal -> completed); it is recorded, not sent (Replicate sends no event header).
        ``timestamp``/``signature``/``msg_id`` override the headers for stale or forged
        deliveries. With ``retries`` > 0, a non-2xx answer or a transport error is retried
        after ``retry_delay`` s with the SAME ``webhook-id``, the way Replicate retries.
        Returns the last attempt; every attempt is appended to ``self.deliveries``.
        """
        with self._lock:
            pred = self.predictions[pred_id]
            meta = self._pred_meta.get(pred_id) or {}
            target = url or meta.get("webhook") or meta.get("webhook_completed")
            body = json.dumps(pred)
            if event is None:
                s = pred["status"]
                event = "start" if s == "starting" else "completed" if s in TERMINAL_STATUSES else "logs"
        if not target:
            raise ValueError(f"prediction {pred_id} has no webhook URL; pass url=")
        mid = msg_id or _msg_id()
        d = self._deliver(pred_id, event, target, body, mid, timestamp, signature, 1)
        for attempt in range(2, retries + 2):
            if d.ok:
                break
            time.sleep(retry_delay)
            d = self._deliver(pred_id, event, target, body, mid, None, signature, attempt)
        return d

    def redeliver(
        self, delivery: WebhookDelivery, *, timestamp: int | None = None, keep_timestamp: bool = False
    ) -> WebhookDelivery:
        """Send the same message again: same ``webhook-id`` and body, re-signed with the
        current secret over a fresh timestamp (or the old one with ``keep_timestamp``)."""
        ts = delivery.timestamp if keep_timestamp else timestamp
        return self._deliver(
            delivery.prediction_id, delivery.event, delivery.url, delivery.body, delivery.msg_id, ts, None,
            delivery.attempt + 1,
        )

    # ------------------------------------------------------------------ assertions helpers

    def requests_to(self, method: str, path_regex: str) -> list[RecordedRequest]:
        with self._lock:
            return [
                r for r in self.requests
                if method.upper() in ("*", r.method) and re.search(path_regex, r.path)
            ]


def _iter_file(fh: Any, chunk: int = 1 << 16) -> Iterable[bytes]:
    try:
        while True:
            data = fh.read(chunk)
            if not data:
                return
            yield data
    finally:
        fh.close()


def _minimal_schema() -> dict:
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {},
        "components": {
            "schemas": {
                "Input": {
                    "type": "object",
                    "title": "Input",
                    "properties": {
                        "dataset": {"type": "string", "format": "uri", "title": "Dataset", "x-order": 0},
                        "config": {"type": "string", "title": "Config", "x-order": 1},
                    },
                },
                "Output": {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output"},
            }
        },
    }
