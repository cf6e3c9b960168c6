"""The Slurm provider settings (``GET|PUT /api/cloud/providers/slurm``, SPEC §13): validation
and storage. Plain values live in the ``provider_configs`` row ``slurm``; ``rest_token`` is
write-only, kept in ``secrets.json`` (0600) like the Replicate token and never returned
(the view says ``rest_token_set``).

Every bad value is a 400 naming its field. A per-job ``slurm`` object in the submit body may
override ``partition``, ``time_limit`` and ``gpus_per_job`` (``parse_override``).
"""
from __future__ import annotations

import math
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import current_app

from stcloud import secrets
from stcloud import settings as settings_store
from stcloud.errors import BadRequest
from stcloud.providers import config as provider_config
from stcloud.providers.slurm_options import OptionError, rest_properties

PROVIDER = "slurm"
TOKEN_FIELD = "rest_token"
TOKEN_SECRET_KEY = f"provider:{PROVIDER}:{TOKEN_FIELD}"  # where declared ``secret`` settings live
TRANSPORTS = ("cli", "rest")
KEYS = ("transport", "partition", "account", "qos", "time_limit", "gpus_per_job", "cpus_per_job",
        "mem_per_job_mb", "extra_sbatch", "trainer_command", "server_url", "agent_python", "output_dir",
        "rest_url", "rest_user", "rest_token", "gpu_hour_usd")
DEFAULTS: dict[str, Any] = {
    "transport": "cli", "partition": None, "account": None, "qos": None, "time_limit": None,
    "gpus_per_job": 1, "cpus_per_job": 4, "mem_per_job_mb": None, "extra_sbatch": [],
    "trainer_command": None, "server_url": None, "agent_python": None, "output_dir": None,
    "rest_url": None, "rest_user": None, "gpu_hour_usd": 0.0,
}
MAX_TIME_LIMIT = 366 * 24 * 60  # minutes
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]{0,127}$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_.\-]{0,63}\$?$", re.I)
_OPTION_RE = re.compile(r"^--[a-z][a-z0-9\-]*(=\S.*)?$")


def _bad(field: str, message: str) -> BadRequest:
    return BadRequest(f"{field}: {message}", extra={"field": field})


def _opt_name(field: str, value) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _NAME_RE.match(value.strip()):
        raise _bad(field, "must be a Slurm name (letters, digits, _ . + -), or empty for the cluster default")
    return value.strip()


def _int(field: str, value, lo: int, hi: int, *, optional: bool) -> int | None:
    if value in (None, "") and optional:
        return None
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise _bad(field, f"must be a whole number between {lo} and {hi}")
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise _bad(field, f"must be a whole number between {lo} and {hi}, got {value!r}") from None
    if not lo <= n <= hi:
        raise _bad(field, f"must be between {lo} and {hi}, got {n}")
    return n


def _url(field: str, value) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise _bad(field, "must be an http(s) URL")
    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise _bad(field, f"must be an http(s) URL like http://host:port, got {value!r}")
    return value


def _abs_path(field: str, value) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not value.strip().startswith("/") or "\n" in value or "\x00" in value:
        raise _bad(field, "must be an absolute path")
    return value.strip()


def _extra_sbatch(value) -> list[str]:
    if value in (None, ""):
        return []
    if not isinstance(value, list):
        raise _bad("extra_sbatch", "must be a list of sbatch options, one per line (e.g. \"--constraint=a100\")")
    out = []
    for i, line in enumerate(value):
        if not isinstance(line, str):
            raise _bad("extra_sbatch", f"line {i + 1} is not a string")
        text = line.strip()
        if text.startswith("#SBATCH"):
            text = text[len("#SBATCH"):].strip()
        if not text:
            continue
        if not _OPTION_RE.match(text) or not text.isprintable() or len(text) > 500:
            raise _bad("extra_sbatch", f"line {i + 1} ({line!r}) must be one sbatch option such as "
                                       "--constraint=a100 (or \"#SBATCH --constraint=a100\")")
        if text.split("=", 1)[0] in ("--job-name", "--output", "--error", "--export", "--wrap", "--parsable"):
            raise _bad("extra_sbatch", f"line {i + 1}: {text.split('=', 1)[0]} is set by stcloud")
        out.append(text)
    return out[:100]


def _trainer_command(value) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or "\n" in value or "\x00" in value:
        raise _bad("trainer_command", "must be a one-line command")
    try:
        if not shlex.split(value):
            return None
    except ValueError as exc:
        raise _bad("trainer_command", f"cannot be parsed ({exc})") from None
    return value.strip()


def _money(value) -> float:
    if value in (None, ""):
        return 0.0
    try:
        if isinstance(value, bool):
            raise ValueError
        n = float(value)
    except (TypeError, ValueError):
        raise _bad("gpu_hour_usd", f"must be a number of dollars per GPU-hour, got {value!r}") from None
    if not math.isfinite(n) or n < 0 or n > 10000:
        raise _bad("gpu_hour_usd", "must be between 0 and 10000")
    return n


def _token(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad("rest_token", "must be the JWT from `scontrol token` (SLURM_JWT=...)")
    value = value.strip()
    if value.startswith("SLURM_JWT="):
        value = value[len("SLURM_JWT="):]
    if any(c.isspace() for c in value) or not value.isprintable() or len(value) > 8192 or value.count(".") != 2:
        raise _bad("rest_token", "does not look like a JWT (three dot-separated parts); paste the output "
                                 "of `scontrol token` again")
    return value


def _choice(value) -> str:
    if value in (None, ""):
        return "cli"
    if value not in TRANSPORTS:
        raise _bad("transport", f"must be one of {', '.join(TRANSPORTS)}, got {value!r}")
    return value


def _user(value) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _USER_RE.match(value.strip()):
        raise _bad("rest_user", "must be a user name on the cluster")
    return value.strip()


VALIDATORS = {
    "transport": _choice,
    "partition": lambda v: _opt_name("partition", v),
    "account": lambda v: _opt_name("account", v),
    "qos": lambda v: _opt_name("qos", v),
    "time_limit": lambda v: _int("time_limit", v, 1, MAX_TIME_LIMIT, optional=True),
    "gpus_per_job": lambda v: _int("gpus_per_job", v, 0, 64, optional=False),
    "cpus_per_job": lambda v: _int("cpus_per_job", v, 1, 1024, optional=False),
    "mem_per_job_mb": lambda v: _int("mem_per_job_mb", v, 1, 64 * 1024 * 1024, optional=True),
    "extra_sbatch": _extra_sbatch,
    "trainer_command": _trainer_command,
    "server_url": lambda v: _url("server_url", v),
    "agent_python": lambda v: _abs_path("agent_python", v),
    "output_dir": lambda v: _abs_path("output_dir", v),
    "rest_url": lambda v: _url("rest_url", v),
    "rest_user": _user,
    "gpu_hour_usd": _money,
}


def validate(changes: Any) -> tuple[dict, str | None]:
    """Clean ``changes`` -> (plain settings, new rest_token or None). Raises BadRequest."""
    if not isinstance(changes, dict):
        raise BadRequest("request body must be a JSON object of Slurm settings")
    clean: dict = {}
    token = None
    for key, value in changes.items():
        if key not in KEYS:
            raise _bad(key, f"unknown Slurm setting; expected one of {', '.join(KEYS)}")
        if key == "rest_token":
            if value not in (None, ""):
                token = _token(value)
            continue
        clean[key] = VALIDATORS[key](value)
    return clean, token


def parse_override(value: Any) -> dict:
    """The per-job ``slurm`` object of a submit body: ``partition``, ``time_limit``,
    ``gpus_per_job``. Raises BadRequest naming ``slurm.<key>``."""
    if value in (None, {}, ""):
        return {}
    if not isinstance(value, dict):
        raise BadRequest("slurm must be an object with partition, time_limit or gpus_per_job",
                         extra={"field": "slurm"})
    out = {}
    for key, raw in value.items():
        if key not in ("partition", "time_limit", "gpus_per_job"):
            raise BadRequest(f"slurm.{key}: only partition, time_limit and gpus_per_job can be set per job",
                             extra={"field": f"slurm.{key}"})
        try:
            out[key] = VALIDATORS[key](raw)
        except BadRequest as exc:
            raise BadRequest(f"slurm.{exc.detail}", extra={"field": f"slurm.{key}"}) from None
    return {k: v for k, v in out.items() if v is not None}


# ---- storage --------------------------------------------------------------------------

def _home() -> str:
    return current_app.config["STCLOUD_HOME"]


def rest_token() -> str | None:
    return provider_config.get_secret(PROVIDER, TOKEN_FIELD)


def public_url() -> str | None:
    url = settings_store.get("public_url") or current_app.config.get("STCLOUD_PUBLIC_URL")
    return str(url).rstrip("/") if url else None


def stored() -> dict:
    """The settings with defaults, ``rest_token`` excluded."""
    cfg = provider_config.get_config(PROVIDER)
    return {k: cfg.get(k, DEFAULTS.get(k)) for k in KEYS if k != "rest_token"}


def effective() -> dict:
    """``stored()`` with the defaults that depend on this instance filled in."""
    cfg = stored()
    cfg["server_url"] = cfg.get("server_url") or public_url() or current_app.config.get("STCLOUD_LOCAL_URL")
    cfg["output_dir"] = cfg.get("output_dir") or str(Path(_home()) / "slurm")
    cfg["agent_python"] = cfg.get("agent_python") or "python3"
    return cfg


def view() -> dict:
    cfg = stored()
    eff = effective()
    return {**cfg, "rest_token_set": bool(rest_token()),
            "defaults": {k: eff[k] for k in ("server_url", "output_dir", "agent_python") if cfg.get(k) in (None, "")}}


def update(changes: Any) -> dict:
    """Validate and store; the result must stay usable (``rest`` needs url, user and token)."""
    clean, token = validate(changes)
    merged = {**stored(), **clean}
    if merged.get("transport") == "rest":
        for key in ("rest_url", "rest_user"):
            if not merged.get(key):
                raise _bad(key, "is required with transport \"rest\"")
        if token is None and not rest_token():
            raise _bad("rest_token", "is required with transport \"rest\" (a JWT from `scontrol token`)")
        try:
            rest_properties(merged.get("extra_sbatch"))
        except OptionError as exc:
            raise _bad("extra_sbatch", str(exc)) from None
    provider_config.update_config(PROVIDER, clean, validator=lambda c: c)
    if token is not None:
        secrets.put(_home(), TOKEN_SECRET_KEY, token)
    return view()


def from_form(form, current: dict) -> dict:
    """The Providers-page form -> changes for ``update``. The form posts every field; only
    those whose text differs from what it showed are changes (an untouched list or number
    is not re-parsed from its text). ``extra_sbatch`` is one line of options (shell quoting);
    an empty token field keeps the stored token."""
    changes: dict = {}
    for key in KEYS:
        if key not in form:
            continue
        raw = form.get(key) or ""
        if key == TOKEN_FIELD:
            if raw.strip():
                changes[key] = raw
            continue
        shown = current.get(key)
        if raw == ("" if shown is None else str(shown)):
            continue
        if key == "extra_sbatch":
            try:
                changes[key] = shlex.split(raw)
            except ValueError as exc:
                raise _bad("extra_sbatch", f"cannot be parsed ({exc})") from None
        else:
            changes[key] = raw.strip() or None
    return changes


def delete_token() -> dict:
    secrets.delete(_home(), TOKEN_SECRET_KEY)
    return view()
