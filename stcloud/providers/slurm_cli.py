"""The Slurm command-line transport: ``sbatch --parsable``, ``squeue --json``, ``scontrol show
job``, ``scancel`` on the machine where stcloud runs (a login node). No Flask, no database.

Each command runs with a timeout and its own environment (``SLURM_CONF`` when configured, the
per-job credential for ``sbatch`` only); a command that fails raises ``SlurmError`` with
Slurm's own message.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from stcloud.providers.slurm_map import (
    SlurmJob,
    base_state,
    clean_reason,
    epoch,
    gpus_in_tres,
)

_JOB_ID_RE = re.compile(r"^\d+(?:_\d+)?$")
_UNKNOWN_JOB = ("Invalid job id", "invalid job id")
TIMEOUT = 30.0


class SlurmError(Exception):
    """A Slurm command or request failed; the message is Slurm's."""


@dataclass(frozen=True)
class BatchJob:
    """One batch job to submit: the script and the resources it asks for."""

    name: str
    script: str  # the whole script, #SBATCH lines included
    environment: dict  # exported to the job (the per-job credential, PATH)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_limit: int | None = None  # minutes
    gpus: int = 0
    cpus: int = 1
    mem_mb: int | None = None
    output: str | None = None
    error: str | None = None
    working_dir: str | None = None
    extra: tuple[str, ...] = ()  # the ``extra_sbatch`` options (already #SBATCH lines in ``script``)


def check_job_id(job_id: str) -> str:
    job_id = str(job_id).strip()
    if not _JOB_ID_RE.match(job_id):
        raise SlurmError(f"not a Slurm job id: {job_id!r}")
    return job_id


def _time(value: str | None):
    """scontrol's ``2026-12-06T19:23:00`` (local time of the cluster) -> aware datetime."""
    if not value or value in ("Unknown", "None", "N/A"):
        return None
    try:
        return datetime.fromisoformat(value).astimezone()
    except ValueError:
        return None


def parse_scontrol(text: str) -> SlurmJob | None:
    """``scontrol show job -o <id>`` (one line of ``Key=Value``) -> SlurmJob."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    if not line.startswith("JobId="):
        return None
    fields: dict[str, str] = {}
    for token in line.split(" "):
        key, sep, value = token.partition("=")
        if sep and key and key not in fields:
            fields[key] = value
    code, _, sig = (fields.get("ExitCode") or "").partition(":")
    return SlurmJob(
        job_id=fields["JobId"], name=fields.get("JobName"), state=base_state(fields.get("JobState")),
        reason=clean_reason(fields.get("Reason")),
        exit_code=int(code) if code.isdigit() else None, exit_signal=int(sig) if sig.isdigit() else None,
        restarts=int(fields.get("Restarts") or 0) if (fields.get("Restarts") or "0").isdigit() else 0,
        submit_time=_time(fields.get("SubmitTime")), start_time=_time(fields.get("StartTime")),
        end_time=_time(fields.get("EndTime")), nodes=(fields.get("NodeList") or None),
        partition=fields.get("Partition"), stdout=fields.get("StdOut"),
        gpus=gpus_in_tres(fields.get("TRES"), fields.get("TresPerJob")),
        source="scontrol")


def job_from_json(raw: dict, source: str) -> SlurmJob:
    """One entry of ``squeue --json`` / slurmrestd ``jobs[]`` (OpenAPI v0.0.38) -> SlurmJob."""
    status = raw.get("exit_code")
    code = sig = None
    if isinstance(status, int):  # a wait status: code in the high byte, signal in the low bits
        code, sig = (status >> 8) & 0xFF, status & 0x7F
    start = epoch(raw.get("start_time"))
    state = base_state(raw.get("job_state"))
    if state == "PENDING":
        start = None  # the scheduler's *expected* start time
    return SlurmJob(
        job_id=str(raw.get("job_id")), name=raw.get("name"), state=state,
        reason=clean_reason(raw.get("state_reason")), exit_code=code, exit_signal=sig,
        restarts=int(raw.get("restart_cnt") or 0), submit_time=epoch(raw.get("submit_time")),
        start_time=start, end_time=epoch(raw.get("end_time")) if state not in ("PENDING", "RUNNING") else None,
        nodes=raw.get("nodes") or None, partition=raw.get("partition"),
        stdout=raw.get("standard_output") or None,
        gpus=gpus_in_tres(raw.get("tres_alloc_str"), raw.get("tres_per_job")), source=source)


class CliTransport:
    name = "cli"

    def __init__(self, *, bin_dir: str | None = None, slurm_conf: str | None = None, timeout: float = TIMEOUT):
        self.bin_dir = bin_dir
        self.slurm_conf = slurm_conf
        self.timeout = timeout

    def _binary(self, cmd: str) -> str:
        return str(Path(self.bin_dir) / cmd) if self.bin_dir else cmd

    def _env(self, extra: dict | None = None) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STCLOUD_JOB_TOKEN")}
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        env.update(extra or {})
        return env

    def run(self, cmd: str, *args: str, stdin: str | None = None, env: dict | None = None,
            ok_unknown: bool = False) -> subprocess.CompletedProcess | None:
        """Run one Slurm command. Returns None for an unknown job when ``ok_unknown``."""
        argv = [self._binary(cmd), *args]
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=self.timeout,
                                  env=self._env(env))
        except FileNotFoundError:
            raise SlurmError(f"{argv[0]} not found: install the Slurm client commands or set their "
                             "directory (STCLOUD_SLURM_BIN_DIR)") from None
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{cmd} did not answer within {self.timeout:.0f}s (is slurmctld up?)") from None
        if proc.returncode != 0:
            msg = (proc.stderr or proc.stdout or "").strip()
            if ok_unknown and any(m in msg for m in _UNKNOWN_JOB):
                return None
            raise SlurmError(f"{cmd} failed (exit {proc.returncode}): {msg[:500] or 'no message'}")
        return proc

    # ---- the transport interface -------------------------------------------------------

    def submit(self, job: BatchJob) -> str:
        # The credential travels in sbatch's environment, exported to the job by name only:
        # never on a command line (ps) and never in the stored script.
        names = ",".join(sorted(job.environment))
        args = ["--parsable", f"--export={names}" if names else "--export=NONE"]
        if job.working_dir:
            args.append(f"--chdir={job.working_dir}")
        proc = self.run("sbatch", *args, stdin=job.script, env=job.environment)
        out = proc.stdout.strip().splitlines()
        job_id = out[-1].split(";", 1)[0].strip() if out else ""
        return check_job_id(job_id)

    def status(self, job_id: str) -> SlurmJob | None:
        """``squeue --json --jobs``; a job squeue no longer shows is read from ``scontrol
        show job``. None when Slurm has forgotten it (past ``MinJobAge``)."""
        job_id = check_job_id(job_id)
        proc = self.run("squeue", "--json", f"--jobs={job_id}", ok_unknown=True)
        if proc is not None:
            try:
                jobs = json.loads(proc.stdout or "{}").get("jobs") or []
            except ValueError:
                raise SlurmError("squeue --json answered something that is not JSON") from None
            for raw in jobs:
                if str(raw.get("job_id")) == job_id:
                    return job_from_json(raw, "squeue")
        proc = self.run("scontrol", "show", "job", "-o", job_id, ok_unknown=True)
        return parse_scontrol(proc.stdout) if proc is not None else None

    def list(self, name_prefix: str) -> list[SlurmJob]:
        proc = self.run("squeue", "--json")
        try:
            jobs = json.loads(proc.stdout or "{}").get("jobs") or []
        except ValueError:
            raise SlurmError("squeue --json answered something that is not JSON") from None
        return [job_from_json(raw, "squeue") for raw in jobs if str(raw.get("name") or "").startswith(name_prefix)]

    def cancel(self, job_id: str, signal: str | None = None) -> None:
        args = [f"--signal={signal}", "--batch"] if signal else []
        self.run("scancel", *args, check_job_id(job_id), ok_unknown=True)

    def idle_nodes(self, partition: str | None) -> int:
        """How many nodes of ``partition`` (or of every partition) are idle (``sinfo -t idle``)."""
        proc = self.run("sinfo", "--noheader", "--states=idle", "--format=%D",
                        *([f"--partition={partition}"] if partition else []))
        return sum(int(line) for line in proc.stdout.split() if line.strip().isdigit())

    def ping(self) -> dict:
        proc = self.run("scontrol", "ping")
        version = self.run("sinfo", "--version").stdout.strip()
        return {"transport": "cli", "ping": proc.stdout.strip(), "version": version}
