"""``extra_sbatch`` options as slurmrestd job properties (OpenAPI ``v0.0.38``).

``sbatch`` reads ``#SBATCH`` lines itself; slurmrestd does not: every resource request must
be a property of the submitted job. This table maps the long sbatch options that have a
v0.0.38 property; an option without one is refused (at settings time when the transport is
``rest``, and again at submit) instead of being silently dropped. Pure: no Flask, no database.
"""
from __future__ import annotations

import re

# option -> (property, kind); kind: "str", "int", "mb" (a size in MiB), "flag" (True when
# given without a value), "bool" (yes/no/1/0 value), "minutes" (sbatch time -> minutes).
OPTIONS: dict[str, tuple[str, str]] = {
    "--constraint": ("constraints", "str"),
    "--prefer": ("prefer", "str"),
    "--cluster-constraint": ("cluster_constraint", "str"),
    "--batch": ("batch_features", "str"),
    "--comment": ("comment", "str"),
    "--reservation": ("reservation", "str"),
    "--dependency": ("dependency", "str"),
    "--licenses": ("licenses", "str"),
    "--gres": ("gres", "str"),
    "--gres-flags": ("gres_flags", "str"),
    "--gpus-per-node": ("gpus_per_node", "str"),
    "--gpus-per-task": ("gpus_per_task", "str"),
    "--gpus-per-socket": ("gpus_per_socket", "str"),
    "--cpus-per-gpu": ("cpus_per_gpu", "str"),
    "--gpu-bind": ("gpu_binding", "str"),
    "--gpu-freq": ("gpu_frequency", "str"),
    "--cpu-freq": ("cpu_frequency", "str"),
    "--mem-bind": ("memory_binding", "str"),
    "--distribution": ("distribution", "str"),
    "--mail-type": ("mail_type", "str"),
    "--mail-user": ("mail_user", "str"),
    "--wckey": ("wckey", "str"),
    "--mcs-label": ("mcs_label", "str"),
    "--container": ("container", "str"),
    "--burst-buffer": ("burst_buffer", "str"),
    "--bb": ("burst_buffer", "str"),
    "--signal": ("signal", "str"),
    "--priority": ("priority", "str"),
    "--deadline": ("deadline", "str"),
    "--acctg-freq": ("account_gather_frequency", "str"),
    "--exclusive": ("exclusive", "exclusive"),
    "--nice": ("nice", "int"),
    "--core-spec": ("core_specification", "int"),
    "--thread-spec": ("thread_specification", "int"),
    "--sockets-per-node": ("sockets_per_node", "int"),
    "--cores-per-socket": ("cores_per_socket", "int"),
    "--threads-per-core": ("threads_per_core", "int"),
    "--ntasks-per-core": ("tasks_per_core", "int"),
    "--ntasks-per-socket": ("tasks_per_socket", "int"),
    "--mincpus": ("minimum_cpus_per_node", "int"),
    "--delay-boot": ("delay_boot", "minutes"),
    "--time-min": ("time_minimum", "minutes"),
    "--mem-per-cpu": ("memory_per_cpu", "mb"),
    "--mem-per-gpu": ("memory_per_gpu", "mb"),
    "--hold": ("hold", "flag"),
    "--oversubscribe": ("oversubscribe", "flag"),
    "--spread-job": ("spread_job", "flag"),
    "--no-kill": ("no_kill", "flag"),
    "--get-user-env": ("get_user_environment", "flag"),
    "--kill-on-invalid-dep": ("kill_on_invalid_dependency", "bool"),
    "--wait-all-nodes": ("wait_all_nodes", "bool"),
}

_SIZE_RE = re.compile(r"^(\d+)([KMGT]?)B?$", re.I)
_SIZE_MB = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


class OptionError(ValueError):
    """An option slurmrestd cannot take; the message names it."""


def _minutes(text: str) -> int:
    """sbatch's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S -> whole minutes (rounded up)."""
    m = _TIME_RE.match(text)
    if not m:
        raise ValueError(text)
    days, a, b, c = m.groups()
    if days is not None:  # D-H[:M[:S]]
        secs = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # H:M:S
        secs = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # M:S
        secs = int(a) * 60 + int(b)
    else:  # M
        secs = int(a) * 60
    return -(-secs // 60)


def _value(option: str, kind: str, value: str | None):
    if kind == "flag":
        if value is not None:
            raise OptionError(f"{option} takes no value")
        return True
    if kind == "exclusive":  # --exclusive[=user|mcs]
        if value in (None, ""):
            return "true"
        if value not in ("user", "mcs"):
            raise OptionError(f"{option}={value}: expected --exclusive, --exclusive=user or --exclusive=mcs")
        return value
    if value in (None, ""):
        raise OptionError(f"{option} needs a value ({option}=...)")
    try:
        if kind == "int":
            return int(value)
        if kind == "minutes":
            return _minutes(value)
        if kind == "mb":
            m = _SIZE_RE.match(value)
            if not m:
                raise ValueError(value)
            return max(1, int(int(m.group(1)) * _SIZE_MB[m.group(2).upper()]))
        if kind == "bool":
            lowered = value.lower()
            if lowered not in ("yes", "no", "1", "0", "true", "false"):
                raise ValueError(value)
            return lowered in ("yes", "1", "true")
    except ValueError:
        raise OptionError(f"{option}={value}: not a valid value for this option") from None
    return value


def rest_properties(lines) -> dict:
    """``["--constraint=a100", "--exclusive"]`` -> ``{"constraints": "a100", "exclusive": "true"}``.
    Raises OptionError naming the first option slurmrestd cannot take."""
    props: dict = {}
    for line in lines or ():
        option, sep, value = str(line).strip().partition("=")
        if option not in OPTIONS:
            raise OptionError(f"{option} has no slurmrestd (v0.0.38) job property; use the \"cli\" "
                              f"transport for it or remove it")
        prop, kind = OPTIONS[option]
        props[prop] = _value(option, kind, value if sep else None)
    return props
