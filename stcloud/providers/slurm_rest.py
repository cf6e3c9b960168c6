"""The slurmrestd transport (OpenAPI ``v0.0.38``, Slurm 22.05), for a stcloud outside the
cluster. No Flask, no database.

Every request carries ``X-SLURM-USER-NAME`` and ``X-SLURM-USER-TOKEN`` (a JWT from ``scontrol
token``, checked by slurmctld with ``AuthAltTypes=auth/jwt``). slurmrestd answers errors in
an ``errors[]`` list, sometimes with HTTP 200 and sometimes with 500; both become
``SlurmError`` with Slurm's description.
"""
from __future__ import annotations

import requests

from stcloud.providers.slurm_cli import (
    BatchJob,
    SlurmError,
    check_job_id,
    job_from_json,
)
from stcloud.providers.slurm_map import SlurmJob
from stcloud.providers.slurm_options import OptionError, rest_properties

API_VERSION = "v0.0.38"
UNKNOWN_JOB_ERRNO = 2017  # ESLURM_INVALID_JOB_ID


class RestTransport:
    name = "rest"

    def __init__(self, base_url: str, user: str, token: str, *, timeout: float = 30.0,
                 session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.user = user
        self.token = token
        self.timeout = timeout
        self.session = session or requests.Session()

    def _url(self, path: str) -> str:
        return f"{self.base_url}/slurm/{API_VERSION}/{path.lstrip('/')}"

    def request(self, method: str, path: str, *, json_body=None, params=None,
                ok_unknown: bool = False, created_ok: bool = False) -> dict | None:
        headers = {"X-SLURM-USER-NAME": self.user, "X-SLURM-USER-TOKEN": self.token}
        try:
            resp = self.session.request(method, self._url(path), json=json_body, params=params,
                                        headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise SlurmError(f"slurmrestd at {self.base_url} unreachable: {exc.__class__.__name__}") from None
        if resp.status_code in (401, 403):
            raise SlurmError(f"slurmrestd refused the token of {self.user!r} (HTTP {resp.status_code}): "
                             "mint a new one with `scontrol token` and save it as rest_token")
        try:
            body = resp.json()
        except ValueError:
            raise SlurmError(f"slurmrestd answered HTTP {resp.status_code} without JSON "
                             f"({resp.text[:200]!r}); is {self.base_url} slurmrestd?") from None
        errors = [e for e in (body.get("errors") or []) if isinstance(e, dict)]
        if errors and created_ok and str(body.get("job_id") or "").isdigit():
            # A submit that made a job and also said something ("Job is in held state", as for
            # --hold): the job exists, so refusing it here would leave it untracked.
            return body
        if errors:
            if ok_unknown and any(e.get("error_number") == UNKNOWN_JOB_ERRNO for e in errors):
                return None
            first = errors[0]
            raise SlurmError("slurmrestd: " + (first.get("description") or first.get("error") or str(first)))
        if resp.status_code >= 400:
            raise SlurmError(f"slurmrestd answered HTTP {resp.status_code}")
        return body

    # ---- the transport interface -------------------------------------------------------

    def submit(self, job: BatchJob) -> str:
        props: dict = {"name": job.name, "environment": dict(job.environment),
                       "current_working_directory": job.working_dir or "/tmp",
                       "cpus_per_task": job.cpus, "requeue": True, "open_mode": "append"}
        for key, value in (("partition", job.partition), ("account", job.account), ("qos", job.qos),
                           ("time_limit", job.time_limit), ("memory_per_node", job.mem_mb),
                           ("standard_output", job.output), ("standard_error", job.error)):
            if value not in (None, ""):
                props[key] = value
        if job.gpus:
            props["gpus"] = str(job.gpus)
        try:  # slurmrestd ignores #SBATCH lines: the extra options go in as properties
            props.update(rest_properties(job.extra))
        except OptionError as exc:
            raise SlurmError(f"extra_sbatch: {exc}") from None
        body = self.request("POST", "job/submit", json_body={"script": job.script, "job": props}, created_ok=True)
        return check_job_id(str(body.get("job_id", "")))

    def status(self, job_id: str) -> SlurmJob | None:
        body = self.request("GET", f"job/{check_job_id(job_id)}", ok_unknown=True)
        for raw in (body or {}).get("jobs") or []:
            if str(raw.get("job_id")) == str(job_id):
                return job_from_json(raw, "rest")
        return None

    def list(self, name_prefix: str) -> list[SlurmJob]:
        body = self.request("GET", "jobs") or {}
        return [job_from_json(raw, "rest") for raw in body.get("jobs") or []
                if str(raw.get("name") or "").startswith(name_prefix)]

    def cancel(self, job_id: str, signal: str | None = None) -> None:
        params = {"signal": signal} if signal else None
        self.request("DELETE", f"job/{check_job_id(job_id)}", params=params, ok_unknown=True)

    def ping(self) -> dict:
        body = self.request("GET", "ping") or {}
        release = ((body.get("meta") or {}).get("Slurm") or {}).get("release")
        return {"transport": "rest", "ping": body.get("pings") or [], "version": release}
