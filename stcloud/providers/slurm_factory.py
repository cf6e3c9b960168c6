"""``create()``: the Slurm adapter built from this instance's settings (SPEC §13).

A zero-argument factory that runs inside an app context: it reads the Slurm settings, the
write-only ``rest_token`` from ``secrets.json`` and builds ``SlurmService`` with a callable
that mints the per-job agent credential — so the adapter itself never touches Flask or the
database. ``STCLOUD_SLURM_BIN_DIR`` (where sbatch & co. live) and ``SLURM_CONF`` come from
the app config or the environment.
"""
from __future__ import annotations

import os

from flask import current_app

from stcloud.errors import BadRequest
from stcloud.providers import slurm_settings
from stcloud.providers.base import JOB_TOKEN_MINTER
from stcloud.providers.slurm import SlurmConfig, SlurmService


def _app_or_env(key: str) -> str | None:
    return current_app.config.get(key) or os.environ.get(key) or None


def slurm_config() -> SlurmConfig:
    cfg = slurm_settings.effective()
    return SlurmConfig(
        server_url=cfg.get("server_url"), output_dir=cfg["output_dir"], transport=cfg.get("transport") or "cli",
        partition=cfg.get("partition"), account=cfg.get("account"), qos=cfg.get("qos"),
        time_limit=cfg.get("time_limit"), gpus_per_job=int(cfg.get("gpus_per_job") or 0),
        cpus_per_job=int(cfg.get("cpus_per_job") or 1), mem_per_job_mb=cfg.get("mem_per_job_mb"),
        extra_sbatch=tuple(cfg.get("extra_sbatch") or ()), trainer_command=cfg.get("trainer_command"),
        agent_python=cfg["agent_python"], rest_url=cfg.get("rest_url"), rest_user=cfg.get("rest_user"),
        rest_token=slurm_settings.rest_token(), gpu_hour_usd=float(cfg.get("gpu_hour_usd") or 0.0),
        bin_dir=_app_or_env("STCLOUD_SLURM_BIN_DIR"), slurm_conf=_app_or_env("SLURM_CONF"))


def create() -> SlurmService:
    """The adapter with the current settings (``not_ready_reason`` says what is missing)."""
    minter = current_app.extensions[JOB_TOKEN_MINTER]()  # the worker API's credentials
    return SlurmService(slurm_config(), mint_job_token=minter,
                        parse_override=_parse_override)


def _parse_override(options: dict) -> dict:
    try:
        return slurm_settings.parse_override(options)
    except BadRequest as exc:
        raise ValueError(exc.detail.removeprefix("slurm.")) from None
