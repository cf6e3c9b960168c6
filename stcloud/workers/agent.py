"""``stcloud worker``: the agent that runs training jobs on a machine of yours (SPEC §8).

It imports no Flask and no database; it speaks the worker API over HTTP:

1. ``POST /api/workers/register`` (GPUs, labels, hostname, the job it is still running);
2. a heartbeat thread (``POST /api/workers/heartbeat``) renews the job's lease and learns
   about cancel and drain;
3. ``POST /api/workers/claim`` pulls a job; the agent downloads the dataset archive
   (streamed, sha256-checked), unzips it into a fresh working directory, writes
   ``config.json`` + ``dataloader.json``, downloads the last checkpoint when resuming, and
   runs the trainer command;
4. trainer output is shipped in numbered batches (``POST .../logs``; a batch keeps its
   number across retries, so a network blip never duplicates lines); each
   ``checkpoint saved: <dir>`` line uploads that directory to the built-in S3 endpoint
   and reports it (``POST .../checkpoint``); at the end the outputs are uploaded and the
   end state is reported (``POST .../complete``).

Connection errors and 5xx answers are retried with capped exponential backoff, so the
agent rides out a server restart. A 401 (token rotated or worker deleted) stops it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections import deque
from pathlib import Path
from urllib.parse import urljoin

import click
import requests

from stcloud import __version__
from stcloud.trainer.protocol import STEP_RE
from stcloud.workers import dataset_cache
from stcloud.workers import gpu as gpu_mod
from stcloud.workers.matching import parse_labels

log = logging.getLogger("stcloud.worker")

DEFAULT_TRAINER = [sys.executable, "-m", "stcloud.trainer", "--config", "{config}", "--dataloader", "{dataloader}"]
CHECKPOINT_PREFIX = "checkpoint saved: "
LAST_LINES = 40
MAX_BUFFERED_LINES = 200_000
BATCH_LINES = 500
BATCH_BYTES = 256 * 1024
QUICK_FLUSH = 0.05  # seconds of quiet after which the first lines after a pause are shipped
CHUNK = 1024 * 1024
EXIT_TOKEN_REFUSED = 3
EXIT_JOB_NOT_COMPLETED = 1  # one-job mode: the job failed, was cancelled or stopped
JOB_HEADER = "X-Stcloud-Job"
CLAIM_WAIT = 10.0  # seconds an idle claim is held by the server (long-poll; see workers/claims.py)
CLAIM_WAIT_HEADER = "X-Stcloud-Claim-Wait"  # the server's answer: how long it held a 204


def held_claim(answer: requests.Response) -> bool:
    """Did the server hold this empty claim (so the next one may follow at once)?"""
    try:
        return float(answer.headers.get(CLAIM_WAIT_HEADER) or 0) > 0
    except ValueError:
        return False


class Transient(Exception):
    """Network error, 5xx or 429: try again later."""


class NotHeld(Exception):
    """403: this worker does not (or no longer) hold the job."""


class TokenRefused(Exception):
    """401: the token was rotated or the worker deleted."""


class ApiError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(f"{status} {detail}")
        self.status = status


class JobFailed(Exception):
    """The job cannot run here (bad archive, checksum mismatch, ...)."""


def backoff_delays(base: float = 0.5, cap: float = 30.0):
    delay = base
    while True:
        yield delay * (0.5 + random.random())  # jitter: several agents do not retry in step
        delay = min(cap, delay * 2)


class Api:
    """The worker API over HTTP. One ``requests.Session`` per thread."""

    def __init__(self, server: str, token: str, timeout: float = 30.0, job_id: str | None = None):
        self.server = server.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.job_id = job_id  # one-job mode: the per-job credential is for this job
        self._local = threading.local()

    def url(self, path: str) -> str:
        return urljoin(self.server + "/", path.lstrip("/"))

    def _session(self) -> requests.Session:
        sess = getattr(self._local, "session", None)
        if sess is None:
            sess = self._local.session = requests.Session()
            sess.headers["Authorization"] = f"Bearer {self.token}"
            sess.headers["User-Agent"] = f"stcloud-worker/{__version__}"
            if self.job_id:
                sess.headers[JOB_HEADER] = self.job_id
        return sess

    def request(self, method: str, path: str, *, json_body=None, timeout: float | None = None,
                stream: bool = False) -> requests.Response:
        """One attempt. Raises Transient, TokenRefused, NotHeld, ApiError."""
        try:
            resp = self._session().request(method, self.url(path), json=json_body, stream=stream,
                                           timeout=timeout or self.timeout)
        except requests.RequestException as exc:
            raise Transient(f"{method} {path}: {exc.__class__.__name__}") from None
        if resp.status_code < 400:
            return resp
        detail = resp.reason
        try:
            detail = resp.json().get("detail") or detail
        except ValueError:
            pass
        resp.close()
        if resp.status_code == 401:
            raise TokenRefused(detail)
        if resp.status_code == 403:
            raise NotHeld(detail)
        if resp.status_code in (408, 425, 429) or resp.status_code >= 500:
            raise Transient(f"{method} {path}: {resp.status_code} {detail}")
        raise ApiError(resp.status_code, detail)

    def call(self, method: str, path: str, *, json_body=None, stop: threading.Event | None = None,
             attempts: int | None = None, timeout: float | None = None) -> dict | None:
        """Retry transient failures with backoff (forever unless ``attempts``/``stop``).
        Returns the JSON answer, or None for 204."""
        delays = backoff_delays()
        tries = 0
        while True:
            tries += 1
            try:
                resp = self.request(method, path, json_body=json_body, timeout=timeout)
                if resp.status_code == 204 or not resp.content:
                    return None
                return resp.json()
            except Transient as exc:
                if (attempts is not None and tries >= attempts) or (stop is not None and stop.is_set()):
                    raise
                delay = next(delays)
                if tries in (1, 5) or tries % 20 == 0:
                    log.warning("%s; retrying in %.1fs", exc, delay)
                if stop is not None:
                    if stop.wait(delay):
                        raise
                else:
                    time.sleep(delay)


class LogShipper(threading.Thread):
    """Ships trainer output in numbered batches. A batch gets its number once and keeps it
    across retries; the server ignores numbers it already stored.

    When: a full batch at once; otherwise lines gather for ``interval`` seconds from the
    first one buffered — except after a quiet spell (nothing sent for ``interval``), when
    the lines go as soon as the output pauses for ``QUICK_FLUSH`` seconds, and except the
    trainer's first step line (``step N/M``), which goes ``QUICK_FLUSH`` seconds after it
    came even while the output streams on: the first step of a job shows without waiting
    out the interval, and a steady stream still makes at most one request per interval
    (plus that one)."""

    def __init__(self, api: Api, job_id: str, first_seq: int, interval: float = 0.5):
        super().__init__(name=f"logs-{job_id}", daemon=True)
        self.api, self.job_id, self.next_seq, self.interval = api, job_id, first_seq, interval
        self._buf: deque[str] = deque()
        self._pending: deque[tuple[int, list[str]]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self.lost = False  # the server says we no longer hold the job
        self.dropped = 0
        self._sent_at = float("-inf")  # when the last batch went out
        self._first_at = self._last_at = 0.0  # when the oldest / newest buffered line came
        self._stepped = False  # the first step line was seen
        self._urgent_at: float | None = None  # when the first step line came, until it is shipped

    def add(self, line: str) -> None:
        with self._cond:
            if len(self._buf) >= MAX_BUFFERED_LINES:  # a very long outage: keep the newest
                self._buf.popleft()
                self.dropped += 1
            now = time.monotonic()
            if not self._buf:
                self._first_at = now
            self._last_at = now
            self._buf.append(line.rstrip("\r\n"))
            if not self._stepped and STEP_RE.match(line):
                self._stepped, self._urgent_at = True, now
                self._cond.notify_all()
            if len(self._buf) == 1 or len(self._buf) >= BATCH_LINES:
                self._cond.notify_all()  # the run loop works out when they go

    def _due(self) -> float:
        """Seconds until the buffered lines go (0: now). Call under ``_cond``."""
        if self._pending or self._closing or len(self._buf) >= BATCH_LINES:
            return 0.0
        if not self._buf:
            return self.interval
        at = self._first_at + self.interval
        if self._first_at - self._sent_at >= self.interval:  # after a quiet spell
            at = min(at, self._last_at + QUICK_FLUSH)
        if self._urgent_at is not None:  # the first step line
            at = min(at, self._urgent_at + QUICK_FLUSH)
        return max(0.0, at - time.monotonic())

    def _next_batch(self) -> tuple[int, list[str]] | None:
        with self._cond:
            if self._pending:
                return self._pending[0]
            if not self._buf:
                return None
            lines, size = [], 0
            if self.dropped:
                lines.append(f"[stcloud worker] {self.dropped} log line(s) dropped while the server was unreachable")
                self.dropped = 0
            while self._buf and len(lines) < BATCH_LINES and size < BATCH_BYTES:
                line = self._buf.popleft()
                lines.append(line)
                size += len(line) + 1
            batch = (self.next_seq, lines)
            self.next_seq += 1
            self._urgent_at = None
            self._pending.append(batch)
            return batch

    def idle(self) -> bool:
        with self._cond:
            return not self._buf and not self._pending

    def run(self) -> None:
        delays = None
        while True:
            with self._cond:
                due = self.interval if self.lost else self._due()
                if due > 0 and self._buf and not self.lost:
                    self._cond.wait(due)  # more lines may join the batch
                    continue
            batch = None if self.lost else self._next_batch()
            if batch is None:
                with self._cond:
                    if self._closing and (self.lost or (not self._buf and not self._pending)):
                        return
                    self._cond.wait(self.interval)
                continue
            seq, lines = batch
            self._sent_at = time.monotonic()
            try:
                self.api.request("POST", f"/api/workers/jobs/{self.job_id}/logs",
                                 json_body={"seq": seq, "lines": lines}, timeout=30)
            except (Transient, ApiError) as exc:
                delays = delays or backoff_delays(0.5, 10.0)
                with self._cond:
                    self._cond.wait(next(delays))
                if isinstance(exc, ApiError):
                    log.warning("log batch %s refused: %s", seq, exc)
                    with self._cond:
                        self._pending.popleft()  # a 4xx will not get better by retrying
                continue
            except (NotHeld, TokenRefused):
                self.lost = True
                continue
            delays = None
            with self._cond:
                if self._pending and self._pending[0][0] == seq:
                    self._pending.popleft()
                self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until everything buffered was acknowledged (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
        while time.monotonic() < deadline:
            if self.idle() or self.lost:
                return True
            time.sleep(0.05)
        return False

    def close(self, timeout: float) -> None:
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self.lost = self.lost or not self.idle()  # give up on what is left
            self._cond.notify_all()
        self.join(2)


class Storage:
    """boto3 against the built-in endpoint with the job's credentials."""

    def __init__(self, server: str, info: dict):
        import boto3
        from botocore.config import Config

        endpoint = server.rstrip("/") + info["endpoint_path"] if info.get("endpoint_path") else info["endpoint_url"]
        self.bucket = info.get("bucket") or "outputs"
        self.prefix = info.get("prefix") or ""
        self.endpoint = endpoint
        self.client = boto3.client(
            "s3", endpoint_url=endpoint, region_name=info.get("region") or "us-east-1",
            aws_access_key_id=info["access_key_id"], aws_secret_access_key=info["secret_access_key"],
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                          connect_timeout=10, read_timeout=120,
                          retries={"max_attempts": 5, "mode": "standard"}))

    def upload(self, path: Path, key: str, *, patience: float = 180.0) -> None:
        """Upload one file. A server that is restarting (connection refused or dropped) is
        waited for, with backoff, up to ``patience`` seconds: a finished training must not be
        lost to a deploy of stcloud. Other errors raise at once."""
        from botocore.exceptions import ConnectionClosedError, ConnectTimeoutError, EndpointConnectionError

        deadline, delay = time.monotonic() + patience, 1.0
        while True:
            try:
                self.client.upload_file(str(path), self.bucket, key)
                return
            except (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError):
                if time.monotonic() + delay > deadline:
                    raise
                log.info("the server is not answering; uploading %s again in %.0f s", key, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def download(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        self.client.download_file(self.bucket, key, str(tmp))
        tmp.replace(dest)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def list_keys(self, prefix: str) -> list[str]:
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys


INPUT_MARK = "stcloud_input"  # {"stcloud_input": "<key under the job's prefix>"}: a file the server put there


def _fetch_inputs(config: dict, storage: Storage | None, wd: Path, say) -> None:
    """Config values the server pointed at a file in the job's own storage prefix (a
    pipeline parent's weights, ``docs/pipelines.md``) are downloaded and replaced by paths."""
    for name, value in list(config.items()):
        if not (isinstance(value, dict) and isinstance(value.get(INPUT_MARK), str)):
            continue
        rel = value[INPUT_MARK]
        if storage is None or ".." in Path(rel).parts or rel.startswith("/"):
            raise JobFailed(f"{name}: the input {rel} cannot be fetched (no storage credentials)")
        dest = wd / "inputs" / Path(rel).name
        storage.download(storage.prefix + rel, dest)
        config[name] = str(dest)
        say(f"{name}: fetched {rel}")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_extract(zip_path: Path, dest: Path) -> int:
    """Unzip refusing absolute paths, ``..`` and symlinks. Returns the number of files."""
    dest = dest.resolve()
    count = 0
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            name = info.filename
            target = (dest / name).resolve()
            if name.startswith("/") or not (target == dest or dest in target.parents):
                raise JobFailed(f"archive entry {name!r} escapes the working directory")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise JobFailed(f"archive entry {name!r} is a symlink")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
            count += 1
    return count


def _pdeathsig():
    """preexec_fn: the child gets SIGTERM when the process that started it dies (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    sig = int(signal.SIGTERM)

    def _set():  # runs in the child between fork and exec: nothing but a C call
        prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG

    return _set


def build_command(template: str | None, paths: dict[str, str]) -> list[str]:
    parts = shlex.split(template) if template else list(DEFAULT_TRAINER)
    out = []
    for part in parts:
        for key, value in paths.items():
            part = part.replace("{" + key + "}", value)
        out.append(part)
    return out


class Agent:
    def __init__(self, server: str, token: str, *, name: str | None = None, labels: dict | None = None,
                 trainer_command: str | None = None, work_dir: str | os.PathLike | None = None,
                 once: bool = False, poll_interval: float = 2.0, grace_seconds: float = 10.0,
                 exit_with_parent: bool = False, keep_work_dirs: bool = False, stay_when_drained: bool = False,
                 job_id: str | None = None, claim_wait: float = CLAIM_WAIT):
        self.api = Api(server, token, job_id=job_id)
        self.server = server.rstrip("/")
        # One-job mode (a batch job of a scheduler such as Slurm): claim exactly this job with
        # its per-job credential, run it once, exit with 0 only when it completed.
        self.job_id = job_id
        self.outcome: str | None = None
        self.name = name
        self.labels = labels or {}
        self.trainer_command = trainer_command
        self.work_dir = Path(work_dir or Path.home() / ".stcloud-worker").expanduser().resolve()
        self.once = once or bool(job_id)
        self.poll_interval = poll_interval
        self.claim_wait = 0.0 if job_id else max(0.0, float(claim_wait))  # long-poll (workers/claims.py)
        self.grace_seconds = grace_seconds
        self.keep_work_dirs = keep_work_dirs
        self.stay_when_drained = stay_when_drained
        self.parent_pid = os.getppid() if exit_with_parent else None
        self.stop = threading.Event()  # the agent is shutting down
        self.cancel = threading.Event()  # the current job must stop
        self.cancel_reason = ""
        self.draining = False
        self.fatal: str | None = None
        self.heartbeat_interval = 5.0
        self._job_lock = threading.Lock()
        self._current: str | None = None
        self._hb_thread: threading.Thread | None = None
        self._checkpoint_keys: list[str] = []  # the uploaded checkpoint a resume would use

    # ---- state shared with the heartbeat thread --------------------------------------

    @property
    def current_job(self) -> str | None:
        with self._job_lock:
            return self._current

    def _set_current(self, job_id: str | None) -> None:
        with self._job_lock:
            self._current = job_id
            self.cancel.clear()
            self.cancel_reason = ""

    def _cancel_job(self, reason: str) -> None:
        if not self.cancel.is_set():
            self.cancel_reason = reason
            self.cancel.set()

    # ---- protocol ---------------------------------------------------------------------

    def register(self) -> dict:
        gpus = gpu_mod.detect()
        body = {"hostname": socket.gethostname(), "agent_version": __version__, "gpus": gpus,
                "labels": self.labels, "name": self.name, "current_job_id": self.current_job}
        answer = self.api.call("POST", "/api/workers/register", json_body=body, stop=self.stop) or {}
        self.heartbeat_interval = float(answer.get("heartbeat_interval") or self.heartbeat_interval)
        self.draining = bool(answer.get("draining"))
        current = self.current_job
        if current and current in (answer.get("abandon") or []):
            self._cancel_job("the server gave this job to someone else")
        return answer

    def _heartbeat_loop(self) -> None:
        failures = 0
        while not self.stop.wait(self.heartbeat_interval if failures == 0 else min(5.0, self.heartbeat_interval)):
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                log.warning("the server process that started this agent is gone; stopping")
                self.stop.set()
                self._cancel_job("server stopped")
                return
            job_id = self.current_job
            try:
                answer = self.api.request("POST", "/api/workers/heartbeat", json_body={"job_id": job_id},
                                          timeout=max(5.0, self.heartbeat_interval * 2)).json()
            except Transient as exc:
                failures += 1
                if failures in (1, 10) or failures % 60 == 0:
                    log.warning("heartbeat failed (%s); retrying", exc)
                continue
            except TokenRefused as exc:
                if self.job_id and self.outcome is not None:
                    # One-job mode, its end reported (or being reported): the per-job credential
                    # dies with the job, so this refusal is that end, not a fault (the exit code
                    # must say how the job ended: Slurm records it).
                    log.info("job %s has ended; no more heartbeats (%s)", self.job_id, exc)
                    return
                self.fatal = f"token refused: {exc}"
                log.error("the server refused this worker's token (%s); stopping", exc)
                self._cancel_job("token refused")
                self.stop.set()
                return
            except (ApiError, NotHeld, ValueError) as exc:
                log.warning("heartbeat rejected: %s", exc)
                continue
            if failures:
                log.info("server reachable again after %d failed heartbeat(s); re-registering", failures)
                failures = 0
                try:
                    self.register()
                except (Transient, ApiError):
                    failures = 1
                    continue
                except TokenRefused:
                    continue  # the next heartbeat reports it
            self.heartbeat_interval = float(answer.get("heartbeat_interval") or self.heartbeat_interval)
            if job_id and job_id in (answer.get("cancel") or []) and job_id == self.current_job:
                self._cancel_job("cancelled on the server")
            if answer.get("drain") and not self.draining:
                log.info("drain requested: finishing the current job, then exiting")
            self.draining = bool(answer.get("drain"))

    # ---- main loop --------------------------------------------------------------------

    def run(self) -> int:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            info = self.register()
        except TokenRefused as exc:
            log.error("the server refused the worker token: %s", exc)
            return EXIT_TOKEN_REFUSED
        except Transient:
            return 0 if self.stop.is_set() else 1
        log.info("registered as %s (%s) with %s; heartbeat every %.1fs", info.get("name"), info.get("worker_id"),
                 self.server, self.heartbeat_interval)
        self._hb_thread = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._hb_thread.start()
        delays = None
        try:
            while not self.stop.is_set():
                if self.draining:
                    if self.stay_when_drained:  # the embedded worker waits to be resumed
                        self.stop.wait(self.poll_interval)
                        continue
                    log.info("worker drained: no new jobs; exiting")
                    break
                try:
                    answer = self._claim()
                except Transient as exc:
                    delays = delays or backoff_delays(1.0, 30.0)
                    d = next(delays)
                    log.warning("claim failed (%s); retrying in %.1fs", exc, d)
                    self.stop.wait(d)
                    continue
                except TokenRefused as exc:
                    self.fatal = f"token refused: {exc}"
                    break
                except NotHeld as exc:  # one-job mode: the job ended before this agent got it
                    log.warning("job %s cannot be claimed: %s", self.job_id, exc)
                    self.outcome = "not claimable"
                    break
                except ApiError as exc:
                    if exc.status == 409:  # the server thinks we still run a job: settle it
                        try:
                            self.register()
                        except TokenRefused as exc2:
                            self.fatal = f"token refused: {exc2}"
                            break
                        except Transient:
                            pass
                    else:
                        log.warning("claim rejected: %s", exc)
                    self.stop.wait(self.poll_interval)
                    continue
                delays = None
                if answer.status_code == 204:
                    if not held_claim(answer):  # a server without long-poll: wait, then ask again
                        self.stop.wait(self.poll_interval * (0.75 + random.random() / 2))
                    continue
                body = answer.json()
                if body.get("drain"):
                    self.draining = True
                    continue
                job = body["job"]
                try:
                    self.run_job(job)
                except Exception:  # a bug here must not kill the agent; the lease settles the job
                    log.exception("job %s: unexpected agent error", job.get("id"))
                    self._set_current(None)
                if self.once:
                    break
        finally:
            self.stop.set()
            try:
                self.api.request("POST", "/api/workers/goodbye", timeout=5)
            except Exception:
                pass
        if self.fatal:
            log.error("%s", self.fatal)
            return EXIT_TOKEN_REFUSED
        if self.job_id and self.outcome != "completed":
            return EXIT_JOB_NOT_COMPLETED
        return 0

    def _claim(self) -> requests.Response:
        """One claim, held by the server up to ``claim_wait`` s until a job is queued. The
        request runs on a helper thread so that a stop (SIGTERM) is not delayed by the hold.
        Raises what ``Api.request`` raises, and Transient when stopped while waiting."""
        if not self.claim_wait:
            return self.api.request("POST", "/api/workers/claim", timeout=30)
        box: dict = {}

        def claim():
            try:
                box["answer"] = self.api.request("POST", f"/api/workers/claim?wait={self.claim_wait:g}",
                                                 timeout=self.claim_wait + 30)
            except Exception as exc:  # noqa: BLE001 - handed to the main loop below
                box["error"] = exc

        helper = threading.Thread(target=claim, name="claim", daemon=True)
        helper.start()
        while helper.is_alive() and not self.stop.is_set():
            helper.join(0.1)
        if "error" in box:
            raise box["error"]
        if "answer" not in box:
            raise Transient("stopping while a claim was held")  # a job leased meanwhile goes back at lease expiry
        return box["answer"]

    # ---- one job ----------------------------------------------------------------------

    def run_job(self, job: dict) -> None:
        job_id, attempt = job["id"], int(job.get("attempt") or 1)
        self._set_current(job_id)
        wd = self.work_dir / f"{job_id}-attempt{attempt}"
        shipper = LogShipper(self.api, job_id, int(job.get("log_seq") or 0) + 1)
        shipper.start()
        say = lambda msg: shipper.add(f"[stcloud worker] {msg}")  # noqa: E731
        log.info("job %s (%s): attempt %s/%s", job_id, job.get("name"), attempt, job.get("max_attempts"))
        say(f"{socket.gethostname()}: attempt {attempt}/{job.get('max_attempts')} of job {job_id}")
        storage = None
        try:
            if job.get("storage") and job["storage"].get("access_key_id"):
                storage = Storage(self.server, job["storage"])
            else:
                say("no storage credentials from the server: outputs and checkpoints will not be uploaded")
            paths = self._prepare(job, wd, storage, say)
        except JobFailed as exc:
            say(f"error: {exc}")
            self._finish(job_id, shipper, {"status": "failed", "error": str(exc), "last_lines": [str(exc)]})
            self._cleanup(wd, failed=True)
            return
        except (NotHeld, TokenRefused):
            shipper.close(2)
            self._set_current(None)
            return
        except Exception as exc:  # S3/HTTP trouble while preparing: the job fails here, not the agent
            log.exception("preparing job %s failed", job_id)
            msg = f"preparing the job failed: {exc.__class__.__name__}: {exc}"
            say(f"error: {msg}")
            self._finish(job_id, shipper, {"status": "failed", "error": msg, "last_lines": [msg]})
            self._cleanup(wd, failed=True)
            return
        code, last_lines = self._run_trainer(job, wd, paths, storage, shipper, say)
        if self.stop.is_set() and self.job_id:
            # One-job mode: the scheduler stopped the batch job (scancel, time limit, requeue,
            # preemption). The checkpoint the trainer saved on SIGTERM is uploaded; what
            # happens to the job is read from the scheduler, not guessed here.
            say("stopped by the scheduler (SIGTERM): the job's fate is read from the scheduler")
            shipper.close(3)
            self.outcome = "stopped"
            self._set_current(None)
            return
        if self.stop.is_set():
            # The agent is shutting down (SIGTERM, preemption, server gone): give the job
            # back now so it resumes elsewhere from its last checkpoint instead of waiting
            # for the lease to run out.
            say("worker stopping: job handed back to the queue")
            shipper.close(3)
            try:
                self.api.request("POST", f"/api/workers/jobs/{job_id}/release",
                                 json_body={"reason": "agent shutting down"}, timeout=5)
            except Exception:
                pass
            self._set_current(None)
            return
        if self.cancel.is_set():
            say(f"trainer stopped: {self.cancel_reason}")
            self._finish(job_id, shipper, {"status": "cancelled", "exit_code": code, "last_lines": last_lines})
            self._cleanup(wd, failed=False)
            return
        outputs, upload_error = [], None
        if code == 0 and storage is not None:
            try:
                outputs = self._upload_outputs(job_id, Path(paths["output_dir"]), storage, say)
            except Exception as exc:
                upload_error = f"uploading outputs failed: {exc.__class__.__name__}: {exc}"
                say(f"error: {upload_error}")
        if code == 0 and upload_error is None:
            # The uploaded checkpoints stay: each is downloadable and can be continued from.
            body = {"status": "completed", "exit_code": 0, "last_lines": last_lines[-5:], "outputs": outputs}
        else:
            body = {"status": "failed", "exit_code": code, "last_lines": last_lines,
                    "error": upload_error or f"trainer exited with code {code}", "outputs": outputs}
        self._finish(job_id, shipper, body)
        self._cleanup(wd, failed=body["status"] != "completed")

    def _finish(self, job_id: str, shipper: LogShipper, body: dict) -> None:
        self.outcome = body["status"]
        shipper.close(30)
        try:
            self.api.call("POST", f"/api/workers/jobs/{job_id}/complete", json_body=body,
                          stop=None, attempts=60)
        except (NotHeld, TokenRefused, Transient, ApiError) as exc:
            log.warning("could not report the end of job %s: %s", job_id, exc)
        log.info("job %s: %s", job_id, body["status"])
        self._set_current(None)

    def _cleanup(self, wd: Path, failed: bool) -> None:
        if not self.keep_work_dirs and not failed:
            shutil.rmtree(wd, ignore_errors=True)

    def _prepare(self, job: dict, wd: Path, storage: Storage | None, say) -> dict[str, str]:
        if wd.exists():
            shutil.rmtree(wd)
        wd.mkdir(parents=True)
        archive = job.get("archive")
        if archive:
            # extracted datasets are cached by their sha256 (workers/dataset_cache.py)
            cache_root = self.work_dir / "datasets"
            cached = dataset_cache.lookup(cache_root, archive.get("sha256"))
            if cached is not None:
                n = dataset_cache.link_tree(cached, wd)
                say(f"dataset: {n} file(s) from this worker's cache (sha256 {archive['sha256'][:16]}…)")
            else:
                zip_path = wd / "dataset.zip"
                self._download_archive(job["id"], archive, zip_path, say)
                if archive.get("sha256"):  # verified against it: worth keeping
                    n = dataset_cache.link_tree(dataset_cache.store(cache_root, archive["sha256"], zip_path,
                                                                    safe_extract), wd)
                else:
                    n = safe_extract(zip_path, wd)
                zip_path.unlink()
                say(f"dataset: {n} file(s) unpacked")
        output_dir = wd / "output"
        output_dir.mkdir()
        config = dict(job.get("config") or {})
        config["output_dir"] = str(output_dir)
        dataloader_path = wd / "dataloader.json"
        config["data_backend_config"] = str(dataloader_path)
        if not self.trainer_command and storage is not None:
            # The built-in trainer saves a checkpoint at the step it is stopped at; the agent
            # uploads it before reporting, so a cancelled run (a spending cap, a user) keeps
            # its progress. Other trainers get their config untouched.
            config.setdefault("checkpoint_on_cancel", True)
        for entry in config.get("publishing_config") or []:
            if isinstance(entry, dict) and entry.get("stcloud_builtin"):
                entry["endpoint_url"] = storage.endpoint if storage else entry.get("endpoint_url")
        ckpt = job.get("checkpoint")
        if ckpt and storage is not None:
            step = int(ckpt.get("step") or 0)
            dest = output_dir / f"checkpoint-{step}"
            prefix = ckpt["key"].rstrip("/") + "/"
            keys = ckpt.get("files") or storage.list_keys(prefix)
            for key in keys:
                rel = key[len(prefix):] if key.startswith(prefix) else key.rsplit("/", 1)[-1]
                if not rel or rel.startswith("/") or ".." in Path(rel).parts:
                    continue
                storage.download(key, dest / rel)
            config["resume_from_checkpoint"] = str(dest)
            say(f"resuming from the checkpoint at step {step} ({prefix})")
        elif ckpt:
            say("a checkpoint exists but there are no storage credentials: starting from step 0")
        _fetch_inputs(config, storage, wd, say)
        (wd / "config.json").write_text(json.dumps(config, indent=2))
        dataloader_path.write_text(json.dumps(job.get("dataloader_config") or [], indent=2))
        return {"config": str(wd / "config.json"), "dataloader": str(dataloader_path),
                "output_dir": str(output_dir), "work_dir": str(wd), "job_id": job["id"]}

    def _download_archive(self, job_id: str, archive: dict, dest: Path, say) -> None:
        expected = archive.get("sha256")
        for attempt in range(1, 4):
            h = hashlib.sha256()
            size = 0
            try:
                resp = self.api.request("GET", archive["url"], stream=True, timeout=60)
                with resp, open(dest, "wb") as fh:
                    for chunk in resp.iter_content(CHUNK):
                        h.update(chunk)
                        fh.write(chunk)
                        size += len(chunk)
            except (Transient, requests.RequestException) as exc:
                say(f"archive download failed ({exc}); attempt {attempt}/3")
                time.sleep(attempt)
                continue
            if expected and h.hexdigest() != expected:
                say(f"archive checksum mismatch (got {h.hexdigest()[:12]}…, want {expected[:12]}…); attempt {attempt}/3")
                continue
            say(f"dataset archive: {size} bytes, sha256 {h.hexdigest()[:16]}… verified")
            return
        raise JobFailed("could not download a valid dataset archive (3 attempts)")

    def _run_trainer(self, job, wd: Path, paths: dict, storage: Storage | None, shipper: LogShipper, say):
        cmd = build_command(self.trainer_command, paths)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "STCLOUD_JOB_ID": job["id"],
               "STCLOUD_CONFIG": paths["config"], "STCLOUD_DATALOADER": paths["dataloader"],
               "STCLOUD_OUTPUT_DIR": paths["output_dir"]}
        say("running: " + " ".join(shlex.quote(c) for c in cmd))
        try:
            proc = subprocess.Popen(cmd, cwd=str(wd), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=_pdeathsig() if sys.platform.startswith("linux") else None)
        except OSError as exc:
            say(f"error: cannot start the trainer: {exc}")
            return 127, [f"cannot start the trainer: {exc}"]
        last = deque(maxlen=LAST_LINES)
        uploads: queue.Queue = queue.Queue()
        self._checkpoint_keys = list((job.get("checkpoint") or {}).get("files") or [])
        uploader = threading.Thread(target=self._checkpoint_uploader, args=(job["id"], storage, uploads, say,
                                                                            _total_limit(job.get("config"))),
                                    name="checkpoints", daemon=True)
        uploader.start()
        staging = wd / ".checkpoints"

        def read():
            for raw in iter(proc.stdout.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                shipper.add(line)
                last.append(line)
                if line.startswith(CHECKPOINT_PREFIX):
                    staged = self._stage_checkpoint(Path(line[len(CHECKPOINT_PREFIX):].strip()), staging)
                    if staged is not None:
                        uploads.put(staged)
            proc.stdout.close()

        reader = threading.Thread(target=read, name="trainer-output", daemon=True)
        reader.start()
        terminated_at = None
        while proc.poll() is None:
            if (self.cancel.is_set() or self.stop.is_set()) and terminated_at is None:
                say(f"stopping the trainer ({self.cancel_reason or 'worker shutting down'}): SIGTERM")
                self._signal(proc, signal.SIGTERM)
                terminated_at = time.monotonic()
            if terminated_at is not None and time.monotonic() - terminated_at > self.grace_seconds:
                say(f"trainer still running after {self.grace_seconds:.0f}s: SIGKILL")
                self._signal(proc, signal.SIGKILL)
                terminated_at = float("inf")
            time.sleep(0.1)
        reader.join(30)
        uploads.put(None)
        uploader.join(600 if not self.stop.is_set() else 10)
        code = proc.returncode
        if code is not None and code < 0:
            code = 128 - code  # killed by a signal: report it the way a shell does
        return code, list(last)

    @staticmethod
    def _signal(proc: subprocess.Popen, sig) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass

    @staticmethod
    def _stage_checkpoint(path: Path, staging: Path) -> tuple[int, Path] | None:
        """Hard-link the checkpoint's files aside at once, so the trainer pruning old
        checkpoints cannot pull them from under the upload."""
        name = path.name
        if not name.startswith("checkpoint-") or not path.is_dir():
            return None
        try:
            step = int(name.split("-", 1)[1])
        except ValueError:
            return None
        dest = staging / name
        shutil.rmtree(dest, ignore_errors=True)
        try:
            for src in sorted(path.rglob("*")):
                if src.is_dir():
                    continue
                target = dest / src.relative_to(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(src, target)
                except OSError:
                    shutil.copy2(src, target)
        except OSError:
            return None
        return step, dest

    def _checkpoint_uploader(self, job_id: str, storage: Storage | None, uploads: queue.Queue, say,
                             keep: int | None = None) -> None:
        """Upload each staged checkpoint and report it. Every uploaded checkpoint is kept (the
        job page offers each for download and to continue from), except beyond the config's
        ``checkpoints_total_limit`` (``keep``): then the oldest uploaded ones are deleted."""
        kept: list[list[str]] = []
        while True:
            item = uploads.get()
            if item is None:
                return
            if storage is None:
                continue
            # Each checkpoint is uploaded (the job page offers every one); only when the agent
            # is stopping and uploads fell behind does the newest alone matter (a resume).
            while self.stop.is_set() and not uploads.empty():
                nxt = uploads.get()
                if nxt is None:
                    uploads.put(None)
                    break
                shutil.rmtree(item[1], ignore_errors=True)
                item = nxt
            step, path = item
            key = f"{storage.prefix}checkpoints/checkpoint-{step}"
            files = sorted((p for p in path.rglob("*") if p.is_file()),
                           key=lambda p: (p.name == "trainer_state.json", str(p)))  # the marker last
            try:
                keys = []
                for f in files:
                    k = f"{key}/{f.relative_to(path).as_posix()}"
                    storage.upload(f, k)
                    keys.append(k)
                self.api.call("POST", f"/api/workers/jobs/{job_id}/checkpoint",
                              json_body={"key": key, "step": step, "files": keys, "bucket": storage.bucket},
                              stop=self.stop, attempts=20)
                say(f"checkpoint at step {step} uploaded ({len(keys)} file(s))")
                kept.append(keys)
                while keep and len(kept) > keep:
                    self._delete_keys(storage, [k for k in kept.pop(0) if k not in keys])
                self._checkpoint_keys = keys
            except (NotHeld, TokenRefused):
                return
            except Exception as exc:
                say(f"warning: checkpoint at step {step} not uploaded: {exc.__class__.__name__}: {exc}")
            finally:
                shutil.rmtree(path, ignore_errors=True)

    @staticmethod
    def _delete_keys(storage: Storage, keys: list[str]) -> None:
        for key in keys:
            try:
                storage.delete(key)
            except Exception:  # a leftover file is harmless
                pass

    def _upload_outputs(self, job_id: str, output_dir: Path, storage: Storage, say) -> list[dict]:
        outputs = []
        for path in sorted(output_dir.rglob("*")):
            rel = path.relative_to(output_dir)
            if not path.is_file() or any(p.startswith(("checkpoint-", ".")) for p in rel.parts):
                continue
            key = f"{storage.prefix}{rel.as_posix()}"
            storage.upload(path, key)
            outputs.append({"name": rel.as_posix(), "bucket": storage.bucket, "key": key,
                            "size": path.stat().st_size, "sha256": sha256_of(path),
                            "destination": "built-in S3"})
        say(f"uploaded {len(outputs)} output file(s) to s3://{storage.bucket}/{storage.prefix}")
        return outputs


def _total_limit(config) -> int | None:
    """``checkpoints_total_limit`` of a job config (plain or ``--flag`` key), None = keep all."""
    if not isinstance(config, dict):
        return None
    for key in ("checkpoints_total_limit", "--checkpoints_total_limit"):
        value = config.get(key)
        try:
            n = int(value) if value is not None and not isinstance(value, bool) else None
        except (TypeError, ValueError):
            n = None
        if n and n > 0:
            return n
    return None


# ---- CLI -------------------------------------------------------------------------------

def worker_token(token_arg: str | None, token_file: str | None) -> str | None:
    """The token from --token-file (refused when group/world can read it), --token (warns) or
    STCLOUD_WORKER_TOKEN. Raises click.UsageError."""
    if token_file:
        try:
            st = os.stat(token_file)
            if st.st_mode & 0o077:
                raise click.UsageError(f"--token-file {token_file} is readable by others (mode "
                                       f"{oct(st.st_mode & 0o777)}): chmod 600 it")
            with open(token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        except OSError as exc:
            raise click.UsageError(f"cannot read --token-file {token_file}: {exc.strerror or exc}") from None
        if not token:
            raise click.UsageError(f"--token-file {token_file} is empty")
        return token
    if token_arg:
        click.echo("warning: --token puts the worker token on the command line, where any user of this machine "
                   "can read it (ps); use STCLOUD_WORKER_TOKEN or --token-file", err=True)
        return token_arg
    return os.environ.get("STCLOUD_WORKER_TOKEN") or None


@click.command("worker")
@click.option("--server", envvar="STCLOUD_SERVER", required=True, help="stcloud base URL, e.g. http://host:8080")
@click.option("--token", "token_arg", default=None,
              help="the worker token on the command line (visible in ps: prefer STCLOUD_WORKER_TOKEN or --token-file)")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="a file holding the worker token (mode 0600 or stricter)")
@click.option("--job", "job_id", default=None,
              help="one-job mode: run exactly this job with its per-job credential (STCLOUD_JOB_TOKEN), "
                   "as the batch script of a Slurm job does; exits 0 only when the job completed")
@click.option("--job-token", envvar="STCLOUD_JOB_TOKEN", default=None, show_envvar=True,
              help="the per-job credential for --job (pass it in the environment, not on a command line)")
@click.option("--name", default=None, help="rename this worker on the server")
@click.option("--labels", default=None, help="k=v,k2=v2 — matched against job requirements (globs)")
@click.option("--trainer-command", envvar="STCLOUD_TRAINER_COMMAND", default=None,
              help="command to train with; placeholders {config} {dataloader} {output_dir} {work_dir} {job_id}. "
                   "Default: python -m stcloud.trainer --config {config} --dataloader {dataloader}")
@click.option("--work-dir", envvar="STCLOUD_WORKER_DIR", default=None,
              help="where jobs run (default ~/.stcloud-worker)")
@click.option("--once", is_flag=True, help="exit after one job")
@click.option("--poll-interval", default=2.0, show_default=True, type=float, help="seconds between claims when idle")
@click.option("--claim-wait", default=CLAIM_WAIT, show_default=True, type=float,
              help="seconds the server may hold an idle claim until a job is queued (0: poll)")
@click.option("--grace-seconds", default=10.0, show_default=True, type=float,
              help="SIGTERM -> SIGKILL delay when stopping a trainer")
@click.option("--keep-work-dirs", is_flag=True, help="keep each job's working directory")
@click.option("--stay-when-drained", is_flag=True, help="when drained, wait to be resumed instead of exiting")
@click.option("--exit-with-parent", is_flag=True, hidden=True)
def worker_command(server, token_arg, token_file, job_id, job_token, name, labels, trainer_command, work_dir, once,
                   poll_interval, claim_wait, grace_seconds, keep_work_dirs, stay_when_drained, exit_with_parent):
    """Run jobs from an stcloud server on this machine (register, claim, train, upload).

    The worker token comes from STCLOUD_WORKER_TOKEN or --token-file (--token still works,
    with a warning: a command line is visible to every user of the machine in ps)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s worker: %(message)s")
    token = worker_token(token_arg, token_file)
    if job_id:
        if not job_token:
            raise click.UsageError("--job needs the per-job credential in STCLOUD_JOB_TOKEN")
        token = job_token
    elif not token:
        raise click.UsageError("a worker token is required: STCLOUD_WORKER_TOKEN or --token-file")
    try:
        label_map = parse_labels(labels)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--labels") from None
    agent = Agent(server, token, name=name, labels=label_map, trainer_command=trainer_command, work_dir=work_dir,
                  once=once, poll_interval=poll_interval, grace_seconds=grace_seconds,
                  exit_with_parent=exit_with_parent, keep_work_dirs=keep_work_dirs,
                  stay_when_drained=stay_when_drained, job_id=job_id, claim_wait=claim_wait)

    def _stop(signum, _frame):
        log.info("signal %s: stopping%s", signum,
                 "" if job_id else " (the current job goes back to the queue)")
        agent.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sys.exit(agent.run())


if __name__ == "__main__":
    worker_command()
