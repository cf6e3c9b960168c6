"""The Slurm provider (``slurm``): stcloud submits, Slurm places the work.

Each stcloud job becomes one batch job named ``stcloud-<job id>`` whose script runs the stcloud
worker agent in one-job mode (``python -m stcloud.workers.agent --server URL --job <id>
--once``): the agent claims exactly that job with a per-job credential (``STCLOUD_JOB_TOKEN``,
exported to the job by name, never on a command line), downloads the dataset archive, runs
the trainer, streams logs and progress, uploads checkpoints and outputs to the built-in S3
endpoint and reports the end state — the worker protocol.

Two transports behind this one adapter: the Slurm commands on a login node (``cli``,
default) and slurmrestd with a JWT (``rest``). No Flask, no database: settings come in the
constructor (``SlurmConfig``), results go out as frozen dataclasses.

Per-job overrides: ``RunRequest.options`` — the submit body's ``slurm`` object ``{"partition",
"time_limit", "gpus_per_job"}``, validated by ``validate_options`` (the settings' own rules).
``RunRequest.inputs["agent_submission"]`` (default 1) numbers resubmissions of the same job
(after NODE_FAIL / PREEMPTED): the per-job credential is bound to it.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stcloud.providers.base import (
    CloudJobInfo,
    CloudJobStatus,
    CloudTrainerService,
    HardwareProfile,
    PlacementOffer,
    ProviderFailure,
    RunRequest,
    SettingField,
)
from stcloud.providers.slurm_cli import BatchJob, CliTransport, SlurmError
from stcloud.providers.slurm_map import SlurmJob, rate_usd_per_second, to_info
from stcloud.providers.slurm_rest import RestTransport

PROVIDER = "slurm"
JOB_NAME_PREFIX = "stcloud-"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
OVERRIDABLE = ("partition", "time_limit", "gpus_per_job")
MAX_GPUS_PER_JOB = 64  # the settings' and the per-job override's bound
_PER_JOB_PROFILE = re.compile(r"slurm-(\d{1,2})gpu")


@dataclass(frozen=True)
class SlurmConfig:
    """The provider settings, as the adapter uses them (see ``slurm_settings``)."""

    server_url: str | None  # the stcloud URL compute nodes reach
    output_dir: str
    transport: str = "cli"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_limit: int | None = None  # minutes
    gpus_per_job: int = 0
    cpus_per_job: int = 1
    mem_per_job_mb: int | None = None
    extra_sbatch: tuple[str, ...] = ()
    trainer_command: str | None = None
    agent_python: str = "python3"
    rest_url: str | None = None
    rest_user: str | None = None
    rest_token: str | None = field(default=None, repr=False)
    gpu_hour_usd: float = 0.0
    bin_dir: str | None = None  # where sbatch & co. live (default: PATH)
    slurm_conf: str | None = None  # SLURM_CONF for the commands (default: Slurm's own lookup)
    work_dir: str = "${TMPDIR:-/tmp}"  # where the agent unpacks the job on the compute node


SETTINGS_FIELDS = (
    SettingField("transport", "Transport", "choice", "cli", choices=("cli", "rest"),
                 help="cli: sbatch & co. on this host (a login node); rest: slurmrestd with a JWT"),
    SettingField("partition", "Partition", help="empty: the cluster's default partition"),
    SettingField("account", "Account"),
    SettingField("qos", "QOS"),
    SettingField("time_limit", "Time limit (minutes)", "integer", minimum=1),
    SettingField("gpus_per_job", "GPUs per job", "integer", 1, minimum=0, help="0 for CPU-only jobs"),
    SettingField("cpus_per_job", "CPUs per job", "integer", 4, minimum=1),
    SettingField("mem_per_job_mb", "Memory per job (MB)", "integer", minimum=1),
    SettingField("extra_sbatch", "Extra sbatch options", help="e.g. --constraint=a100 --exclusive"),
    SettingField("trainer_command", "Trainer command", help="empty: the built-in reference trainer"),
    SettingField("server_url", "stcloud URL for the compute nodes", "url", help="empty: the public URL"),
    SettingField("agent_python", "Python with stcloud on the nodes", help="absolute path; empty: python3"),
    SettingField("output_dir", "Output directory", help="--output/--error of the batch jobs (absolute path)"),
    SettingField("rest_url", "slurmrestd URL", "url"),
    SettingField("rest_user", "slurmrestd user"),
    SettingField("rest_token", "slurmrestd token (JWT)", "secret", help="from `scontrol token`"),
    SettingField("gpu_hour_usd", "Price per GPU-hour (USD)", "number", 0.0, minimum=0),
)


def job_name(job_id: str) -> str:
    return f"{JOB_NAME_PREFIX}{job_id}"


class SlurmService(CloudTrainerService):
    def __init__(self, config: SlurmConfig, *, mint_job_token: Callable[[str, int], str],
                 transport: Any = None, parse_override: Callable[[dict], dict] | None = None):
        self.config = config
        self.mint_job_token = mint_job_token
        self.transport = transport or self._make_transport(config)
        # The settings service validates a job's ``slurm`` object (the same rules as the
        # settings); it raises ValueError naming the field.
        self._parse_override = parse_override

    @staticmethod
    def _make_transport(config: SlurmConfig):
        if config.transport == "rest":
            return RestTransport(config.rest_url or "", config.rest_user or "", config.rest_token or "")
        return CliTransport(bin_dir=config.bin_dir, slurm_conf=config.slurm_conf)

    def validate_options(self, options: dict) -> dict:
        if not options:
            return {}
        if self._parse_override is None:
            unknown = sorted(set(options) - set(OVERRIDABLE))
            if unknown:
                raise ValueError(f"only {', '.join(OVERRIDABLE)} can be set per job, not {', '.join(unknown)}")
            return dict(options)
        return self._parse_override(options)

    # ---- capabilities -----------------------------------------------------------------

    @property
    def provider_name(self) -> str:
        return PROVIDER

    @property
    def supports_cost_tracking(self) -> bool:
        return False  # stcloud prices the run time at the rate recorded on the job (gpu_hour_usd × GPUs)

    @property
    def supports_live_logs(self) -> bool:
        return True  # the agent streams them

    # ---- seam members with defaults ----------------------------------------------------

    @property
    def label(self) -> str:
        return "Slurm cluster"

    @property
    def description(self) -> str:
        return ("Submits each job to your Slurm cluster (sbatch or slurmrestd); the stcloud agent runs it "
                "inside the allocation and streams logs, checkpoints and outputs back here.")

    @property
    def uploads_data(self) -> bool:
        return False  # stcloud keeps the archive; the job's agent downloads it from here

    @property
    def supports_checkpoint_on_cancel(self) -> bool:
        return True  # scancel's SIGTERM: the built-in trainer saves the step it is on

    @property
    def runs_own_agent(self) -> bool:
        return True  # the batch script runs the agent in one-job mode

    def poll_interval(self, status: str) -> float | None:
        # Slurm's view is read by ``workers.agent_jobs`` (requeues, resubmissions and silent
        # agents need more than a status mapping), not by the generic poller.
        return None

    def hardware_profiles(self) -> list[HardwareProfile]:
        return [self._priced(PROVIDER, int(self.config.gpus_per_job or 0))]

    def _priced(self, name: str, gpus: int) -> HardwareProfile:
        return HardwareProfile(name, f"Slurm job ({gpus} GPU{'s' if gpus != 1 else ''})",
                               usd_per_hour=round(self.config.gpu_hour_usd * gpus, 6), gpu_count=gpus,
                               note="gpu_hour_usd × GPUs of the job, from the Slurm settings")

    def profile(self, name: str) -> HardwareProfile | None:
        """``slurm`` (the settings' GPU count) or ``slurm-<n>gpu`` (a job's own count, from
        ``hardware_for_options``), priced at ``gpu_hour_usd`` per GPU."""
        match = _PER_JOB_PROFILE.fullmatch(name or "")
        if match is not None and int(match.group(1)) <= MAX_GPUS_PER_JOB:
            return self._priced(name, int(match.group(1)))
        return super().profile(name)

    def hardware_for_options(self, hardware: str | None, options: dict) -> str | None:
        gpus = options.get("gpus_per_job") if options else None
        if gpus is None or int(gpus) == int(self.config.gpus_per_job or 0):
            return hardware
        return f"{PROVIDER}-{int(gpus)}gpu"

    def settings_fields(self) -> tuple[SettingField, ...]:
        """The Providers-page form (``slurm_routes`` validates and stores it, as for the API)."""
        return SETTINGS_FIELDS

    def not_ready_reason(self) -> str | None:
        cfg = self.config
        if not cfg.server_url:
            return "set server_url (the stcloud URL the compute nodes reach) or the public URL"
        if cfg.transport == "rest" and not (cfg.rest_url and cfg.rest_user and cfg.rest_token):
            return "the REST transport needs rest_url, rest_user and rest_token (from `scontrol token`)"
        return None

    # ---- the batch job ----------------------------------------------------------------

    def resources(self, overrides: dict | None = None) -> dict:
        """The job's partition, time limit and GPUs: the settings, then the per-job overrides."""
        cfg = self.config
        res = {"partition": cfg.partition, "time_limit": cfg.time_limit, "gpus_per_job": cfg.gpus_per_job}
        for key in OVERRIDABLE:
            if overrides and overrides.get(key) not in (None, ""):
                res[key] = overrides[key]
        return res

    def batch_job(self, request: RunRequest) -> BatchJob:
        """The batch script and resources for ``request`` (pure; also shown in tests/docs)."""
        cfg = self.config
        res = self.resources(request.options)
        submission = int((request.inputs or {}).get("agent_submission") or 1)
        out = Path(cfg.output_dir)
        output, error = str(out / "stcloud-%j.out"), str(out / "stcloud-%j.err")
        directives = [f"--job-name={job_name(request.job_id)}", f"--output={output}", f"--error={error}",
                      "--open-mode=append", "--requeue", "--nodes=1", "--ntasks=1",
                      f"--cpus-per-task={cfg.cpus_per_job}"]
        if res["partition"]:
            directives.append(f"--partition={res['partition']}")
        if cfg.account:
            directives.append(f"--account={cfg.account}")
        if cfg.qos:
            directives.append(f"--qos={cfg.qos}")
        if res["time_limit"]:
            directives.append(f"--time={int(res['time_limit'])}")
        if int(res["gpus_per_job"] or 0) > 0:
            directives.append(f"--gpus={int(res['gpus_per_job'])}")
        if cfg.mem_per_job_mb:
            directives.append(f"--mem={int(cfg.mem_per_job_mb)}M")
        directives += list(cfg.extra_sbatch)
        agent = [cfg.agent_python, "-m", "stcloud.workers.agent", "--server", cfg.server_url or "",
                 "--job", request.job_id, "--once"]
        if cfg.trainer_command:
            agent += ["--trainer-command", cfg.trainer_command]
        work_dir = f'"{cfg.work_dir}/stcloud-{request.job_id}-$SLURM_JOB_ID"'
        script = "\n".join([
            "#!/bin/bash",
            *(f"#SBATCH {d}" for d in directives),
            f"# stcloud job {request.job_id} ({_comment(request.name)}), submission {submission}.",
            "# The per-job credential arrives as STCLOUD_JOB_TOKEN in the environment.",
            f"export PATH=\"${{PATH:-{DEFAULT_PATH}}}\" PYTHONUNBUFFERED=1",
            (f'echo "[stcloud] Slurm job $SLURM_JOB_ID (restart ${{SLURM_RESTART_COUNT:-0}}) on $(hostname)'
             f' for stcloud job {request.job_id}"'),
            "exec " + " ".join(shlex.quote(a) for a in agent) + f" --work-dir {work_dir}",
            "",
        ])
        env = {"STCLOUD_JOB_TOKEN": self.mint_job_token(request.job_id, submission), "PATH": DEFAULT_PATH}
        return BatchJob(name=job_name(request.job_id), script=script, environment=env,
                        partition=res["partition"], account=cfg.account, qos=cfg.qos,
                        time_limit=int(res["time_limit"]) if res["time_limit"] else None,
                        gpus=int(res["gpus_per_job"] or 0), cpus=cfg.cpus_per_job, mem_mb=cfg.mem_per_job_mb,
                        output=output, error=error, working_dir=cfg.output_dir, extra=tuple(cfg.extra_sbatch))

    def gpus_for(self, request: RunRequest) -> int:
        return int(self.resources(request.options)["gpus_per_job"] or 0)

    # ---- CloudTrainerService ----------------------------------------------------------

    def placement_offer(self, requirements: dict | None) -> PlacementOffer | None:
        """Idle nodes in the configured partition (CLI transport: ``sinfo``); None when the
        transport cannot tell or Slurm does not answer."""
        idle_nodes = getattr(self.transport, "idle_nodes", None)
        if idle_nodes is None or self.not_ready_reason():
            return None
        try:
            n = idle_nodes(self.config.partition or None)
        except SlurmError:
            return None
        where = f"partition {self.config.partition}" if self.config.partition else "the cluster"
        return PlacementOffer(available=n > 0, wait_seconds=0.0 if n else float("inf"),
                              note=f"{where} has {n} idle node(s)")

    def validate_credentials(self) -> dict[str, Any]:
        try:
            return self.transport.ping()
        except SlurmError as exc:
            raise ProviderFailure(f"Slurm: {exc}") from None

    def run_job(self, request: RunRequest) -> CloudJobInfo:
        reason = self.not_ready_reason()
        if reason:
            raise ProviderFailure(f"Slurm is not configured: {reason}", http_status=400,
                                  title="Slurm not configured")
        batch = self.batch_job(request)
        try:
            Path(self.config.output_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if self.transport.name == "cli":  # with REST the directory lives on the cluster
                raise ProviderFailure(f"Slurm: cannot create output_dir {self.config.output_dir}: {exc}") from None
        try:
            slurm_id = self.transport.submit(batch)
        except SlurmError as exc:
            raise ProviderFailure(f"Slurm: {exc}") from None
        overrides = {k: v for k, v in (request.options or {}).items() if k in OVERRIDABLE}
        # Kept on the job (provider_data["slurm"]): what a resubmission and the cost need.
        return CloudJobInfo(
            provider_job_id=slurm_id, status=CloudJobStatus.QUEUED, raw_status="PENDING",
            extra={"slurm": {
                "job_id": slurm_id, "transport": self.transport.name, "job_name": batch.name,
                "partition": batch.partition, "time_limit": batch.time_limit, "gpus": batch.gpus,
                "overrides": overrides, "gpu_hour_usd": self.config.gpu_hour_usd,
                "rate_usd_per_second": rate_usd_per_second(self.config.gpu_hour_usd, batch.gpus),
                "submission": int((request.inputs or {}).get("agent_submission") or 1),
                "output": batch.output.replace("%j", slurm_id), "state": "PENDING"}})

    def get_job_status(self, provider_job_id: str) -> CloudJobInfo:
        try:
            job = self.transport.status(provider_job_id)
        except SlurmError as exc:
            raise ProviderFailure(f"Slurm: {exc}") from None
        if job is None:
            return CloudJobInfo(provider_job_id=str(provider_job_id), status=None, raw_status="UNKNOWN",
                                error=f"Slurm no longer knows job {provider_job_id} (past MinJobAge)",
                                extra={"reason": "unknown to Slurm"})
        return self._info(job)

    def _info(self, job: SlurmJob) -> CloudJobInfo:
        return to_info(job, gpus=self._gpus_of(job), gpu_hour_usd=self.config.gpu_hour_usd)

    def _gpus_of(self, job: SlurmJob) -> int:
        """The GPUs Slurm gave the job (its TRES), else the configured count."""
        return job.gpus if job.gpus is not None else int(self.config.gpus_per_job or 0)

    def list_jobs(self, limit: int = 50) -> list[CloudJobInfo]:
        try:
            jobs = self.transport.list(JOB_NAME_PREFIX)
        except SlurmError as exc:
            raise ProviderFailure(f"Slurm: {exc}") from None
        return [self._info(j) for j in jobs[:limit]]

    def cancel_job(self, provider_job_id: str) -> bool:
        """``scancel``: Slurm sends SIGTERM to the agent and the trainer (the built-in trainer
        saves a checkpoint at the step it is on, the agent uploads it), SIGKILL after
        ``KillWait``."""
        try:
            self.transport.cancel(provider_job_id)
        except SlurmError as exc:
            raise ProviderFailure(f"Slurm: {exc}") from None
        return True

    def get_job_logs(self, provider_job_id: str) -> str:
        """CLI: the job's ``--output`` / ``--error`` files (the agent's own lines; the
        trainer's output streams to stcloud through the agent). REST: the files live on the
        cluster, so the logs are the ones the agent streamed."""
        if self.transport.name != "cli":
            return ("[stcloud] slurmrestd does not serve job output files; the job log is what the "
                    "agent streamed to stcloud\n")
        parts = []
        for suffix in ("out", "err"):
            path = Path(self.config.output_dir) / f"stcloud-{provider_job_id}.{suffix}"
            try:
                parts.append(path.read_text(errors="replace"))
            except FileNotFoundError:
                continue
            except OSError as exc:
                parts.append(f"[stcloud] cannot read {path}: {exc}\n")
        return "".join(parts)


def _comment(text: str | None) -> str:
    return "".join(c if c.isprintable() else " " for c in (text or ""))[:120]
